"""Real-perception latency per stage and end to end, for the ``fast`` and ``exact`` profiles.

The ``fast`` profile runs twice: with the disparity normalised over the full frame
(the spec's default, as the policy was trained; the networks see the whole frame)
and normalised over the crop (``--set-spec observation.disparity.normalise_region=crop``:
crop first, less compute, but not the training observation).

    python scripts/bench_perception.py [--seg-ckpt PATH] [--depth-model ID|PATH] [--threads 2] [--json]

Input: 640x480 RGB frames rendered by the sim twin's wrist camera (or ``--images DIR``).
End to end is one observation (segmentation and depth concurrently, the class remap
and ``finish_frame``) plus one policy action of the user's policy shape. Without
weights the networks have random weights of the real sizes (the same compute). Given
both ``--seg-ckpt`` and ``--depth-model``, it also reports how far ``fast`` is from
``exact``: disparity rank correlation and segmentation pixel agreement at 84x84.
Rows for CUDA are added when a GPU is present.

The loop rows run the real loop on the backend ``auto`` picks: a camera delivering twin
renders at 30 fps, perception, the policy, and a command written and read back over the
STS3215 emulator's pseudo-terminal; once with the stages one after the other, once with
perception a frame ahead in its own thread (``control/overlap.py``), and once more with
HIL-SERL's learner updating beside it on ``--learner-threads`` torch threads. They run for
each perception thread budget: ``--threads``, and what ``hilserl train`` gives perception
by default (the cores the learner leaves). Reported: the loop's period, perception's own
time (its p95 should stay within 20% of the solo row with the learner running), the
latency from the camera read to the command, and the learner's updates per second.

Each installed backend (OpenVINO at its default precision and f32, ONNX Runtime) adds a
``fast`` and an ``exact`` row, with its fidelity against torch fp32 in the same profile
on the same frames: seg pixel agreement and disparity Spearman at 84x84, worst frame
(``--backends`` picks them).

Last, what the networks cost: GFLOP per observation in each profile against this CPU's
fp32 matrix-multiply rate on the same threads, the floor no fp32 backend gets far below.
"""

from __future__ import annotations

import argparse
import json
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from so101_sim2real.arm import SERVO_IDS
from so101_sim2real.control.frames import twin_frames
from so101_sim2real.control.timing import p50_p95
from so101_sim2real.interfaces import Frame
from so101_sim2real.perception.backends import TORCH, candidates, parse_backend, use_threads
from so101_sim2real.perception.depth import DepthModel, load_depth, small_config
from so101_sim2real.perception.fidelity import compare_frames, reference_frames
from so101_sim2real.perception.real import PROFILES, RealPerception
from so101_sim2real.perception.segmentation import SegmentationModel, SegmentationNet, load_segmentation
from so101_sim2real.policy.runtime import Policy
from so101_sim2real.spec import default_spec


def folder_frames(folder: str) -> list[np.ndarray]:
    from so101_sim2real.cameras import CameraExhausted, ImageFolderCamera

    camera, frames = ImageFolderCamera(folder), []
    while True:
        try:
            frames.append(camera.read().rgb)
        except CameraExhausted:
            return frames


def models(args: argparse.Namespace, device: str) -> tuple[SegmentationModel, DepthModel]:
    if args.seg_ckpt:
        seg = load_segmentation(args.seg_ckpt, device)
    else:
        seg = SegmentationModel(SegmentationNet().eval().to(device), (480, 640), "random", torch.device(device))
    if args.depth_model:
        depth = load_depth(args.depth_model, device)
    else:
        from transformers import DepthAnythingForDepthEstimation

        net = DepthAnythingForDepthEstimation(small_config()).eval().to(device)
        depth = DepthModel(net, "random", torch.device(device))
    return seg, depth


def bench_profile(perception: RealPerception, policy: Policy, frames: list[np.ndarray], iters: int,
                  sync=lambda: None) -> dict:
    spec = perception.spec
    state = np.zeros(policy.state_shape, dtype=np.float32) if policy.state_shape[1] else None
    rows: dict[str, list[float]] = {"seg": [], "depth": [], "finish": [], "policy": [], "end_to_end": []}
    for i in range(iters + 1):
        t0 = time.perf_counter()
        obs = perception.perceive(frames[i % len(frames)])
        t1 = time.perf_counter()
        policy.act(np.stack([obs.frame] * spec.frame_stack), state)
        sync()
        t2 = time.perf_counter()
        if i == 0:
            continue  # warm-up
        timing = perception.last_timing
        rows["seg"].append(timing.seg_ms)
        rows["depth"].append(timing.depth_ms)
        rows["finish"].append(timing.finish_ms)
        rows["policy"].append((t2 - t1) * 1e3)
        rows["end_to_end"].append((t2 - t0) * 1e3)
    out = {name: dict(zip(("p50_ms", "p95_ms"), p50_p95(v), strict=True)) for name, v in rows.items()}
    out["hz"] = 1e3 / out["end_to_end"]["p50_ms"]
    return out


def agreement(perception_fast: RealPerception, perception_exact: RealPerception, frames: list[np.ndarray]) -> dict:
    """How close ``fast`` frames are to ``exact`` ones on the same images."""
    seg, rank = [], []
    for rgb in frames:
        a, b = perception_fast.perceive(rgb).frame, perception_exact.perceive(rgb).frame
        seg.append(float(np.mean(a[0] == b[0])))
        ra, rb = (np.argsort(np.argsort(x[1].ravel())).astype(np.float64) for x in (a, b))
        rank.append(float(np.corrcoef(ra, rb)[0, 1]))
    return {"seg_pixel_agreement": float(np.mean(seg)), "disparity_rank_correlation": float(np.mean(rank)),
            "frames": len(frames)}


def backend_rows(args: argparse.Namespace, seg: SegmentationModel, depth: DepthModel, spec,
                 references: dict[str, RealPerception], policy: Policy, frames: list[np.ndarray], sync,
                 device: str) -> list[dict]:
    """Each profile (full-frame normalisation) on each backend, with its fidelity against torch fp32
    in the same profile."""
    chosen = ([parse_backend(b) for b in args.backends.split(",")] if args.backends
              else candidates(gpu=device == "cuda"))
    rows = []
    for profile, reference in references.items():
        iters = args.iters if profile == "fast" else args.exact_iters
        if not iters:
            continue
        expected = reference_frames(reference, frames)  # torch f32's, once for every backend
        for backend in (b for b in chosen if b is not None and b != TORCH):
            perception = RealPerception(None, seg.on_backend(backend), depth.on_backend(backend), spec.observation,
                                        profile, workers=args.workers)
            row = bench_profile(perception, policy, frames, iters, sync)
            fidelity = compare_frames(expected, perception, frames)
            perception.close()
            rows.append({"device": device, "backend": str(backend), "profile": profile,
                         "normalise_region": "full_frame", "iters": iters, **row,
                         "fidelity": {"seg_pixel_agreement": fidelity.seg_agreement,
                                      "disparity_spearman": fidelity.disparity_spearman,
                                      "frames": fidelity.frames, "passed": fidelity.passed}})
    return rows


def compute(seg: SegmentationModel, depth: DepthModel, spec, frame: np.ndarray) -> dict:
    """What the networks ask of the CPU: GFLOP per observation in each profile, and this CPU's
    fp32 matrix-multiply rate on the same threads, so the table shows how near the hardware's
    limit each backend runs (a backend cannot beat GFLOP / rate by much)."""
    from torch.utils.flop_counter import FlopCounterMode

    from so101_sim2real.perception.depth import input_size

    out = {}
    for name in ("fast", "exact"):
        perception = RealPerception(None, seg, depth, spec.observation, name, workers=1)
        seg_image, depth_image, seg_size = perception._plan(frame)
        with torch.inference_mode(), FlopCounterMode(display=False) as seg_flops:
            seg._core(torch.zeros(1, 3, *seg_size))
        with torch.inference_mode(), FlopCounterMode(display=False) as depth_flops:
            depth._core(torch.zeros(1, 3, *input_size(*depth_image.shape[:2], perception.profile.depth_side)))
        out[name] = {"seg_gflop": seg_flops.get_total_flops() / 1e9, "depth_gflop": depth_flops.get_total_flops() / 1e9}
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    times = []
    for _ in range(23):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    out["matmul_gflop_per_s"] = 2 * 1024**3 / float(np.median(times[3:])) / 1e9
    return out


class PacedCamera:
    """Twin renders delivered at a camera's rate: ``read`` blocks until the next frame is due, as a
    USB camera at 30 fps does."""

    def __init__(self, frames: list[np.ndarray], fps: float = 30.0):
        self.frames, self.period = frames, 1.0 / fps
        self._next, self._i = time.monotonic(), 0

    def read(self) -> Frame:
        now = time.monotonic()
        if now < self._next:
            time.sleep(self._next - now)
        self._next = max(self._next + self.period, time.monotonic())
        self._i += 1
        return Frame(self.frames[self._i % len(self.frames)], time.monotonic())

    def close(self) -> None:
        pass


class EmulatedArm:
    """The follower's driver on the STS3215 emulator (the twin's physics behind it): real bus I/O."""

    def __init__(self, spec):
        from so101_sim2real.control.twin_bus import attach_twin
        from so101_sim2real.hardware.bus import MotorBus
        from so101_sim2real.hardware.emulator import BusEmulator
        from so101_sim2real.hardware.so101 import SO101Follower

        self.emulator = BusEmulator(list(SERVO_IDS.values()))
        bridge = attach_twin(self.emulator, spec)
        self.emulator.start()
        self.robot = SO101Follower(MotorBus(self.emulator.path, bridge.calibration.ids), bridge.calibration)
        self.robot.on_close.append(self.emulator.stop)
        self.robot.connect()

    def close(self) -> None:
        self.robot.close()


class LearnerThread:
    """HIL-SERL's learner updating on a filled buffer as fast as it may, on its own thread budget."""

    def __init__(self, threads: int):
        import tempfile

        from bench_learner import filled_buffer, users_snapshot

        from so101_sim2real.hilserl.learner import Learner, LearnerConfig
        from so101_sim2real.policy.runtime import build_agent

        with tempfile.TemporaryDirectory() as tmp:
            ckpt = users_snapshot(Path(tmp))
        self.learner = Learner(build_agent(ckpt), LearnerConfig(batch_size=64))
        self.buffer, self.threads, self.updates = filled_buffer(), threads, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from so101_sim2real.scheduling import background_thread

        torch.set_num_threads(self.threads)
        background_thread()  # as hilserl train's learner
        while not self._stop.is_set():
            self.learner.update(self.buffer.sample(64))
            self.updates += 1
            time.sleep(0)

    def close(self) -> int:
        """Stop; the updates it made."""
        self._stop.set()
        self._thread.join()
        return self.updates


def loop_row(make: Callable[[], RealPerception], arm: EmulatedArm, policy: Policy, ticks: int, overlap: bool,
             learner_threads: int = 0) -> dict:
    """The real loop's period: camera -> perception -> policy -> command on the bus, ``ticks`` times;
    with ``overlap`` perception runs a frame ahead in its own thread; ``learner_threads`` > 0 runs
    HIL-SERL's learner beside it on that many torch threads."""
    from so101_sim2real.control.overlap import OverlappedPerception

    perception = make()
    use_threads(perception.threads)  # the loop's own thread (the policy) on the same budget
    state = np.zeros(policy.state_shape, dtype=np.float32) if policy.state_shape[1] else None
    source = OverlappedPerception(perception) if overlap else perception
    learner = LearnerThread(learner_threads) if learner_threads else None
    periods, latency, perceive = [], [], []
    started = time.monotonic()
    try:
        last = time.monotonic()
        for i in range(ticks + 2):
            seen = source.observe()
            policy.act(np.stack([seen.frame] * perception.spec.frame_stack), state)
            joints = arm.robot.read()
            arm.robot.write(joints.position)  # hold still: the bus round trip of a real command
            now = time.monotonic()
            if i >= 2:  # the first two warm up
                periods.append((now - last) * 1e3)
                latency.append((now - (seen.captured_at or seen.timestamp)) * 1e3)
                perceive.append(perception.last_timing.total_ms)
            last = now
    finally:
        updates = learner.close() if learner else 0
        source.close()
    elapsed = time.monotonic() - started
    period, stage, lag = p50_p95(periods), p50_p95(perceive), p50_p95(latency)
    return {"perception_threads": perception.threads, "overlap": overlap, "learner_threads": learner_threads,
            "ticks": ticks, "period_p50_ms": period[0], "period_p95_ms": period[1], "hz": 1e3 / period[0],
            "perception_p50_ms": stage[0], "perception_p95_ms": stage[1], "photon_to_command_p50_ms": lag[0],
            "learner_updates": updates, "learner_updates_per_s": updates / elapsed}


def loop_rows(args: argparse.Namespace, seg: SegmentationModel, depth: DepthModel, spec, policy: Policy,
              frames: list[np.ndarray]) -> list[dict]:
    """The loop on the backend 'auto' picks, for each perception thread budget (every thread, and
    what HIL-SERL gives it by default: the cores its learner leaves): overlap off and on, then on
    with the learner beside it."""
    from so101_sim2real.hilserl.options import cores_left
    from so101_sim2real.perception.fidelity import choose_backend

    rows = []
    arm = EmulatedArm(spec)
    try:
        for threads in sorted({args.threads, cores_left(args.learner_threads)}, reverse=True):
            choice = choose_backend(seg, depth, spec.observation, "fast", "auto", lambda: frames[:3],
                                    threads=threads)

            def make(threads: int = threads, chosen=choice.trial) -> RealPerception:  # noqa: ANN001
                return RealPerception(PacedCamera(frames), chosen.seg, chosen.depth, spec.observation, "fast",
                                      workers=args.workers, threads=threads)

            budget = [loop_row(make, arm, policy, args.loop_ticks, overlap) for overlap in (False, True)]
            budget.append(loop_row(make, arm, policy, args.loop_ticks, True, args.learner_threads))
            for r in budget:
                r["backend"] = str(choice.backend)
            rows += budget
    finally:
        arm.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seg-ckpt", help="the user's EfficientViT Lightning checkpoint (default: random weights)")
    parser.add_argument("--depth-model", help="Depth Anything folder or cached hub id (default: random weights)")
    parser.add_argument("--images", help="a folder of 640x480 images instead of twin renders")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None,
                        help="2: seg and depth concurrently, 1: one after the other (default: what infer picks)")
    parser.add_argument("--iters", type=int, default=40, help="timed observations for the fast profile")
    parser.add_argument("--exact-iters", type=int, default=6, help="timed observations for the exact profile "
                                                                    "(0: no exact rows on the exported backends)")
    parser.add_argument("--backends", help="comma-separated, e.g. openvino:bf16,onnxruntime (default: every "
                                           "installed one)")
    parser.add_argument("--loop-ticks", type=int, default=60, help="ticks per loop row (0: no loop rows)")
    parser.add_argument("--learner-threads", type=int, default=1, help="torch threads of the learner beside the loop")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames = folder_frames(args.images) if args.images else twin_frames(4)
    spec = default_spec()
    from bench_policy import users_policy_shape

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = []
    cpu_models = models(args, "cpu")  # the loop and the compute count run on the CPU whatever else is here
    for device in devices:
        seg, depth = cpu_models if device == "cpu" else models(args, device)
        policy = Policy(users_policy_shape(), device)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        built = {}
        for name, region in (("fast", "full_frame"), ("fast", "crop"), ("exact", "full_frame")):
            obs_spec = spec.replace("observation.disparity.normalise_region", region).observation
            built[name, region] = RealPerception(None, seg, depth, obs_spec, name, workers=args.workers)
            iters = args.iters if name == "fast" or device == "cuda" else args.exact_iters
            row = bench_profile(built[name, region], policy, frames, iters, sync)
            results.append({"device": device, "backend": str(TORCH), "profile": name, "normalise_region": region,
                            "iters": iters, **row})
        references = {"fast": built["fast", "full_frame"], "exact": built["exact", "full_frame"]}
        results += backend_rows(args, seg, depth, spec, references, policy, frames, sync, device)
        if args.seg_ckpt and args.depth_model:
            results[-1]["fast_vs_exact"] = agreement(built["fast", "full_frame"], built["exact", "full_frame"],
                                                     frames)
        for p in built.values():
            p.close()
    workers = built["fast", "full_frame"].workers
    loops = loop_rows(args, *cpu_models, spec, Policy(users_policy_shape(), "cpu"), frames) if args.loop_ticks else []
    torch.set_num_threads(args.threads)
    cost = compute(*cpu_models, spec, frames[0])
    if args.json:
        print(json.dumps({"threads": args.threads, "workers": workers, "cpu": platform.processor(),
                          "results": results, "loop": loops, "compute": cost}))
        return
    print(f"real perception, 640x480 input, {args.threads} CPU threads, {workers} worker(s), "
          f"{'given' if args.seg_ckpt else 'random'} seg / {'given' if args.depth_model else 'random'} depth weights")
    stages = ("seg", "depth", "finish", "policy", "end_to_end")
    print(f"{'device':<7}{'backend':<17}{'profile':<8}{'normalised':<12}"
          + "".join(f"{s + ' p50/p95 ms':>24}" for s in stages) + f"{'Hz':>7}  fidelity vs torch f32 (seg, disparity)")
    for r in results:
        cells = "".join(f"{r[s]['p50_ms']:>13.1f} /{r[s]['p95_ms']:>8.1f}" for s in stages)
        f = r.get("fidelity")
        shown = (f"  {f['seg_pixel_agreement']:.4f}, {f['disparity_spearman']:.4f} "
                 f"{'pass' if f['passed'] else 'FAIL'}") if f else ""
        print(f"{r['device']:<7}{r['backend']:<17}{r['profile']:<8}{r['normalise_region']:<12}{cells}{r['hz']:>7.1f}"
              f"{shown}")
        if "fast_vs_exact" in r:
            a = r["fast_vs_exact"]
            print(f"  fast vs exact on {a['frames']} frames: seg pixel agreement {a['seg_pixel_agreement']:.3f}, "
                  f"disparity rank correlation {a['disparity_rank_correlation']:.3f}")
    if loops:
        print(f"the loop (camera at 30 fps -> perception on {loops[0]['backend']} -> policy -> command on the "
              f"emulated bus), {args.loop_ticks} ticks; 'p95 vs solo': perception's p95 with the learner over "
              f"its p95 with overlap alone, on the same threads:")
        print(f"  {'threads':<8}{'overlap':<8}{'learner':>8}{'period p50/p95 ms':>20}{'Hz':>7}"
              f"{'perception p50/p95 ms':>24}{'p95 vs solo':>12}{'photon->command p50 ms':>25}{'updates/s':>11}")
        for r in loops:
            solo = next(o for o in loops if o["perception_threads"] == r["perception_threads"] and o["overlap"]
                        and not o["learner_threads"])
            ratio = f"{r['perception_p95_ms'] / solo['perception_p95_ms'] - 1:+.0%}" if r["learner_threads"] else "-"
            print(f"  {r['perception_threads']:<8}{'on' if r['overlap'] else 'off':<8}{r['learner_threads'] or '-':>8}"
                  f"{r['period_p50_ms']:>11.1f} /{r['period_p95_ms']:>7.1f}{r['hz']:>7.1f}"
                  f"{r['perception_p50_ms']:>15.1f} /{r['perception_p95_ms']:>7.1f}{ratio:>12}"
                  f"{r['photon_to_command_p50_ms']:>25.1f}{r['learner_updates_per_s']:>11.2f}")
    rate = cost["matmul_gflop_per_s"]
    print(f"compute per observation, against this CPU's fp32 matrix multiply ({rate:.0f} GFLOP/s on "
          f"{args.threads} threads):")
    for name in ("fast", "exact"):
        c = cost[name]
        total = c["seg_gflop"] + c["depth_gflop"]
        print(f"  {name:<6} seg {c['seg_gflop']:.2f} + depth {c['depth_gflop']:.2f} = {total:.2f} GFLOP: "
              f"{1e3 * total / rate:.0f} ms at the matmul rate")
    print("profiles: " + "; ".join(f"{p.name}: crop first {p.crop_first} (only when normalised over the crop), "
                                   f"seg side {p.seg_side or 'trained'}, depth side {p.depth_side}"
                                   for p in PROFILES.values()))


if __name__ == "__main__":
    main()
