"""HIL-SERL's learner and buffer: FLOPs per update against this machine's matrix-multiply floor,
updates per second for the full and the frozen-encoder update (fp32, and bf16 where the CPU
multiplies bf16 natively), torch.compile's cost and gain, and the actor's tick time with and
without the learner running beside it.

    python scripts/bench_learner.py [--batches 256 64] [--updates 5] [--threads 2] [--json]
    python scripts/bench_learner.py --actor-only [--runs 2] [--cameras twin real] [--json]

The network is the user's (a RoboBase snapshot of the exact shape, random weights, read
through the same loader); the buffer holds twin-like frames. FLOPs are counted by torch's
FlopCounterMode over one update (forward, backward, target; the actor's turn included, as
every ``critic_updates_per_actor`` = 2 updates: the mean of two). The floor is those FLOPs
at the rate this CPU multiplies 2048x2048 matrices on the same threads: no update can beat
it. The frozen-encoder rows read features from the learner's cache (warm: every row of the
buffer sampled before timing). CUDA rows are added when a GPU is present.

The actor rows (issue 32; docs/actor_period.md) run ``hilserl train``'s actor on the twin
for ``--ticks`` ticks, first alone, then with the learner thread updating as fast as it may,
``--runs`` times, with the threads laid out as a session lays them out (the actor's torch
threads on the cores the learner leaves, the learner in the OS's idle class). Two eyes: the
twin's privileged camera (rendered seg + depth in the loop), and real perception (the example
networks on the backend ``auto`` picks, a frame ahead in its own thread, a camera delivering
twin renders at ``--camera-fps``). Reported per row: the whole tick (policy to the next
observation, the rate keeper's sleep left out) p50/p95/max, the loop thread's own CPU time
and its waits, how late a 1 ms sleeper wakes (a core, then the GIL), the learner's
updates/s, the p95 ratio with/without the learner, the CPU and its flags, the threads in
force (per thread: scheduling class, nice, CPU seconds) and the renderer.
``--actor-threads 2 --learner-priority nice`` is the layout before issue 32, to compare.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from so101_sim2real.control.env import sim_env
from so101_sim2real.control.interveners import NoIntervener
from so101_sim2real.hilserl.episode_record import SessionStart
from so101_sim2real.hilserl.learner import Learner, LearnerConfig
from so101_sim2real.hilserl.options import cores_left
from so101_sim2real.hilserl.replay import ReplayBuffer, Step
from so101_sim2real.hilserl.rewards import SuccessReward
from so101_sim2real.hilserl.trainer import TrainConfig, Trainer
from so101_sim2real.machine import describe_cpu, native_bf16
from so101_sim2real.perception.backends import thread_budget, usable_cores
from so101_sim2real.policy.checkpoint import Checkpoint, load_checkpoint
from so101_sim2real.policy.example_snapshot import robobase_agent_state, robobase_cfg, write_robobase_snapshot
from so101_sim2real.policy.runtime import build_agent
from so101_sim2real.scheduling import background_thread, process_threads


def users_snapshot(folder: Path) -> Checkpoint:
    """The user's RoboBase snapshot layout with random weights, read through the loader."""
    path = folder / "example.pt"
    write_robobase_snapshot(path, robobase_agent_state(), robobase_cfg())
    return load_checkpoint(path)


def filled_buffer(rows: int = 600) -> ReplayBuffer:
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer(rows, (2, 84, 84), 18, 4, seed=0)
    for _ in range(rows // 100):
        buffer.begin_episode()
        for i in range(100):
            frame = np.stack([rng.integers(0, 5, (84, 84)), rng.integers(0, 256, (84, 84))]).astype(np.uint8)
            buffer.add(Step(frame, rng.normal(size=18).astype(np.float32), rng.uniform(-1, 1, 4).astype(np.float32),
                            0.0, i == 99, is_intervention=20 <= i < 40))
    return buffer


def matmul_gflops(dtype: torch.dtype, device: str = "cpu", n: int = 2048, repeats: int = 5) -> float:
    """The best rate of an n x n x n matrix product on this device and thread count."""
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def update_flops(learner: Learner, buffer: ReplayBuffer, batch: int) -> float:
    """FLOPs of one update, the mean over two (the actor moves on every second)."""
    counter = FlopCounterMode(display=False)
    with counter:
        for _ in range(2):
            learner.update(buffer.sample(batch))
    return counter.get_total_flops() / 2


def learner_row(ckpt: Checkpoint, buffer: ReplayBuffer, cfg: LearnerConfig, device: str, updates: int,
                label: str) -> dict:
    """Seconds per update (median of ``updates``), with the sampling beside it, FLOPs and compile time."""
    assert cfg.batch_size is not None
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    started = time.perf_counter()
    learner = Learner(build_agent(ckpt), cfg, device)
    learner.update(buffer.sample(cfg.batch_size))  # the first: compiles, allocates
    sync()
    first_s = time.perf_counter() - started
    if learner.cache is not None:  # every row's features in the cache, as in a session's steady state
        for _ in range(4 * len(buffer) // cfg.batch_size + 1):
            learner.update(buffer.sample(cfg.batch_size))
    flops = update_flops(learner, buffer, cfg.batch_size)
    sample_s, update_s = [], []
    for _ in range(updates):
        t0 = time.perf_counter()
        b = buffer.sample(cfg.batch_size)
        t1 = time.perf_counter()
        learner.update(b)
        sync()
        sample_s.append(t1 - t0)
        update_s.append(time.perf_counter() - t1)
    update = float(np.median(update_s))
    return {"label": label, "device": device, "batch": cfg.batch_size, "precision": cfg.precision,
            "frozen": cfg.freeze_encoder, "compiled": cfg.compile, "gflop": flops / 1e9,
            "sample_ms": float(np.median(sample_s)) * 1e3, "update_ms": update * 1e3,
            "update_ms_spread": [min(update_s) * 1e3, max(update_s) * 1e3],
            "updates_per_s": 1.0 / (update + float(np.median(sample_s))), "first_update_s": first_s}


def learner_rows(ckpt: Checkpoint, buffer: ReplayBuffer, batches: list[int], updates: int, compile_: bool) -> list:
    base = LearnerConfig(critic_updates_per_actor=2)
    precisions = ["fp32"] + (["bf16"] if native_bf16() else [])
    rows = []
    for frozen in (False, True):
        for precision in precisions:
            for batch in batches:
                cfg = dataclasses.replace(base, batch_size=batch, freeze_encoder=frozen, precision=precision)
                label = f"{'frozen' if frozen else 'full'} {precision}"
                rows.append(learner_row(ckpt, buffer, cfg, "cpu", updates, label))
    if compile_:
        cfg = dataclasses.replace(base, batch_size=max(batches), compile=True)
        rows.append(learner_row(ckpt, buffer, cfg, "cpu", updates, "full fp32 compiled"))
    if torch.cuda.is_available():
        for precision, compiled in (("fp32", False), ("bf16", False), ("fp16", False), ("fp32", True)):
            for frozen in (False, True):
                cfg = dataclasses.replace(base, batch_size=256, precision=precision, compile=compiled,
                                          freeze_encoder=frozen)
                label = f"{'frozen' if frozen else 'full'} {precision}{' compiled' if compiled else ''}"
                rows.append(learner_row(ckpt, buffer, cfg, "cuda", updates, label))
    return rows


def learning_curve(ckpt: Checkpoint, buffer: ReplayBuffer, cfg: LearnerConfig, updates: int, seed: int = 0
                   ) -> list[float]:
    """The critic loss of each of ``updates`` updates on a fixed sequence of batches from ``buffer``."""
    assert cfg.batch_size is not None
    torch.manual_seed(seed)
    buffer.reseed(seed)
    learner = Learner(build_agent(ckpt), cfg, seed=seed)
    losses = []
    for _ in range(updates):
        loss = learner.update(buffer.sample(cfg.batch_size)).critic_loss
        assert loss is not None
        losses.append(loss)
    return losses


def curves(ckpt: Checkpoint, buffer: ReplayBuffer, updates: int, batch: int) -> dict:
    """Does a faster number format learn the same? The critic loss over ``updates`` updates on the
    same batches, fp32 against bf16 (where native), in tenths of the run, and their largest gap."""
    base = LearnerConfig(batch_size=batch)
    runs = {"fp32": learning_curve(ckpt, buffer, base, updates)}
    if native_bf16():
        runs["bf16"] = learning_curve(ckpt, buffer, dataclasses.replace(base, precision="bf16"), updates)
    tenths = {name: [float(np.mean(chunk)) for chunk in np.array_split(np.array(losses), 10)]
              for name, losses in runs.items()}
    out: dict = {"updates": updates, "batch": batch, "tenths": tenths}
    if "bf16" in tenths:
        out["max_relative_gap"] = max(abs(b - f) / abs(f) for f, b in zip(tenths["fp32"], tenths["bf16"], strict=True))
    return out


class WakeProbe:
    """A thread that sleeps 1 ms at a time and records how late it wakes: the time a Python
    thread waits for a core and then for the GIL, sampled beside the actor."""

    def __init__(self) -> None:
        self.late_s: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wake-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            time.sleep(0.001)
            self.late_s.append(time.perf_counter() - t0 - 0.001)

    def close(self) -> dict:
        self._stop.set()
        self._thread.join()
        late = np.asarray(self.late_s) * 1e3
        return {"p50_ms": float(np.percentile(late, 50)), "p95_ms": float(np.percentile(late, 95)),
                "max_ms": float(late.max())}


def gil_rows(ckpt: Checkpoint, buffer: ReplayBuffer, seconds: float = 10.0) -> list[dict]:
    """Does the learner hold the GIL? A 1 ms sleeper's lateness beside the learner alone in the
    process (its thread in the idle class, so a core is never what the sleeper waits for): none
    of it but the GIL's. Full and frozen, batch 64 and 256, and no learner."""
    rows = []
    for batch, frozen in ((64, False), (256, False), (64, True), (256, True), (0, False)):
        stop, updates = threading.Event(), [0]
        learner = Learner(build_agent(ckpt), LearnerConfig(batch_size=batch or 64, freeze_encoder=frozen))

        def learn(learner: Learner = learner, batch: int = batch, stop: threading.Event = stop,
                  updates: list = updates) -> None:
            torch.set_num_threads(1)
            background_thread()
            while batch and not stop.is_set():
                learner.update(buffer.sample(batch))
                updates[0] += 1
                time.sleep(0)

        thread = threading.Thread(target=learn, daemon=True)
        thread.start()
        time.sleep(1.0)  # past the first update's allocations
        probe = WakeProbe()
        time.sleep(seconds)
        late = probe.close()
        stop.set()
        thread.join()
        rows.append({"batch": batch, "frozen": frozen, "updates": updates[0], "wake_late": late})
    return rows


def real_perception(spec, frames: list[np.ndarray], threads: int, folder: Path, fps: float,  # noqa: ANN001, ANN201
                    backend: str = "auto"):
    """The factory ``hilserl train`` builds for real perception on an arm: the example networks
    (``so101 models example``) on ``backend`` (``auto``: its pick for ``threads``), a frame ahead
    in its own thread, reading a camera that delivers twin renders at ``fps``."""
    from bench_perception import PacedCamera

    from so101_sim2real.control.overlap import OverlappedPerception
    from so101_sim2real.perception.examples import write_example_models
    from so101_sim2real.perception.load import real_perception_factory
    from so101_sim2real.perception.real import RealModels

    examples = write_example_models(folder / "example-models")
    models = RealModels(seg_ckpt=str(examples.seg_ckpt), depth_model=str(examples.depth_model), threads=threads,
                        backend=backend)
    make = real_perception_factory(spec.observation, models, frames=lambda: frames[:3])
    return lambda _twin_camera: OverlappedPerception(make(PacedCamera(frames, fps)))


def actor_row(ckpt: Checkpoint, ticks: int, with_learner: bool, learner_threads: int, actor_threads: int,
              make_perception, lower: Callable[[], str]) -> dict:  # noqa: ANN001
    """The actor's loop on the twin on ``actor_threads`` torch threads (``hilserl train`` gives it
    the cores the learner leaves) beside the learner on ``learner_threads`` in the OS's idle class,
    with or without the learner updating as fast as it may."""
    spec = ckpt.spec.replace("episode.max_steps", ticks)
    cfg = TrainConfig(learner=LearnerConfig(batch_size=64), capacity=ticks * 4, warmup_steps=0,
                      utd=1000.0 if with_learner else 0.0, min_utd=0.0, learner_threads=learner_threads)
    rig = sim_env(spec, with_camera=True, make_perception=make_perception)
    try:
        # a filled buffer and a run already past its first batch: the learner is busy from the first tick
        trainer = Trainer(rig, ckpt, cfg, NoIntervener(), SuccessReward(), buffer=filled_buffer(),
                          start=SessionStart(env_steps=10_000 if with_learner else 0), lower=lower)
        before = {t.tid: t.cpu_s for t in process_threads()}
        threads: list[dict] = []

        def seen(_record: object) -> None:  # at the episode's end, while the learner still runs
            names = {t.native_id: t.name for t in threading.enumerate()}
            threads.extend({"name": names.get(t.tid, t.name), "policy": t.policy, "nice": t.nice,
                            "cpu_s": t.cpu_s - before.get(t.tid, 0.0)} for t in process_threads())

        probe, started = WakeProbe(), time.perf_counter()
        with thread_budget(actor_threads):
            summary = trainer.run(1, on_episode=seen)
        elapsed, wake = time.perf_counter() - started, probe.close()
        return {"learner": with_learner, "ticks": ticks, "tick": summary.tick, "stages": summary.timing,
                "updates": trainer.stats.updates,
                "updates_per_s": trainer.stats.updates / elapsed, "learner_priority": trainer.stats.priority,
                "wake_late": wake, "backend": getattr(rig.perception, "backend_line", None),
                "threads": [t for t in threads if t["cpu_s"] > 0.05]}
    finally:
        rig.close()


def actor_runs(ckpt: Checkpoint, ticks: int, learner_threads: int, actor_threads: int, runs: int,
               cameras: list[str], fps: float, backend: str, lower: Callable[[], str]) -> list[dict]:
    """For each camera (the twin's privileged one, real perception a frame ahead), ``runs`` times:
    the actor alone, then with the learner; each pair's p95 ratio."""
    from so101_sim2real.control.frames import twin_frames

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for camera in cameras:
            make = None
            if camera == "real":
                make = real_perception(ckpt.spec, twin_frames(4, ckpt.spec), actor_threads, Path(tmp), fps,
                                       backend)
            for run in range(1, runs + 1):
                alone, busy = (actor_row(ckpt, ticks, learner, learner_threads, actor_threads, make, lower)
                               for learner in (False, True))
                out.append({"camera": camera, "run": run, "alone": alone, "with_learner": busy,
                            "p95_ratio": busy["tick"]["p95_ms"] / alone["tick"]["p95_ms"]})
    return out


def gap_rows(ckpt: Checkpoint, threads: int, fps: float, backend: str, seconds: float = 10.0) -> list[dict]:
    """Between episodes nothing asks perception for frames: the learner's updates/s (1 thread, the
    idle class) over a ``seconds`` gap after 5 s of requests, with perception a frame ahead
    resting as shipped, and never resting (as before issue 32)."""
    from bench_perception import LearnerThread

    from so101_sim2real.control.frames import twin_frames
    from so101_sim2real.control.overlap import IDLE_AFTER_S

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        make = real_perception(ckpt.spec, twin_frames(4, ckpt.spec), threads, Path(tmp), fps, backend)
        for idle_after_s in (None, IDLE_AFTER_S):  # None: never rests
            ahead = make(None)
            ahead.idle_after_s = float("inf") if idle_after_s is None else idle_after_s
            learner = LearnerThread(1)
            try:
                started = time.monotonic()
                while time.monotonic() - started < 5.0:  # an episode: a request every tick
                    ahead.observe()
                updates, started = learner.updates, time.monotonic()
                time.sleep(seconds)
                rate = (learner.updates - updates) / (time.monotonic() - started)
            finally:
                learner.close()
                ahead.close()
            rows.append({"idle_after_s": idle_after_s, "rests": ahead.rests, "learner_updates_per_s": rate,
                         "backend": ahead.backend_line})
    return rows


def renderer() -> dict:
    """The twin's renderer as in force: MUJOCO_GL, the GL renderer string, llvmpipe's threads."""
    import mujoco

    from so101_sim2real.sim.camera import close_renderer, offscreen_renderer

    model = mujoco.MjModel.from_xml_string("<mujoco><worldbody/></mujoco>")
    made = offscreen_renderer(model, 8, 8)
    try:
        made.render()  # its context is current in this thread now
        from OpenGL import GL

        name = GL.glGetString(GL.GL_RENDERER).decode()
    except Exception as exc:  # noqa: BLE001 - the name is for the table; rendering itself worked above
        name = f"unknown ({type(exc).__name__})"
    finally:
        close_renderer(made)
    return {"MUJOCO_GL": os.environ.get("MUJOCO_GL", ""), "gl_renderer": name,
            "LP_NUM_THREADS": os.environ.get("LP_NUM_THREADS", f"unset (llvmpipe: one per core, {usable_cores()})")}


def floors(rows: list[dict], rates: dict[str, float]) -> None:
    """Each row's floor (its FLOPs at the matmul rate of its number format) and its distance from it."""
    for r in rows:
        if r["device"] != "cpu":
            continue
        rate = rates["bf16" if r["precision"] == "bf16" else "fp32"]
        r["floor_ms"] = r["gflop"] / rate * 1e3
        r["ratio_to_floor"] = r["update_ms"] / r["floor_ms"]
        r["achieved_gflops"] = r["gflop"] / (r["update_ms"] / 1e3)


def print_table(result: dict) -> None:
    rates = result["matmul_gflops"]
    print(f"CPU: {result['cpu']}; torch {result['torch']}, {result['threads']} threads")
    print("matmul floor (2048^3): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items()))
    print(f"replay buffer: {result['bytes_per_transition']:,} bytes per transition (2x84x84 frame stored once)")
    head = f"{'update':<20}{'dev':>5}{'batch':>6}{'GFLOP':>7}{'sample ms':>10}{'update ms':>10}{'spread':>13}"
    print(head + f"{'floor ms':>9}{'x floor':>8}{'GFLOP/s':>8}{'upd/s':>7}")
    for r in result["learner"]:
        lo, hi = r["update_ms_spread"]
        floor = (f"{r['floor_ms']:>9.0f}{r['ratio_to_floor']:>8.2f}{r['achieved_gflops']:>8.0f}" if "floor_ms" in r
                 else f"{'':>25}")
        print(f"{r['label']:<20}{r['device']:>5}{r['batch']:>6}{r['gflop']:>7.1f}{r['sample_ms']:>10.1f}"
              f"{r['update_ms']:>10.1f}{f'{lo:.0f}-{hi:.0f}':>13}{floor}{r['updates_per_s']:>7.2f}")
        if r["compiled"]:
            eager = next((e for e in result["learner"] if e["label"] == "full fp32" and e["batch"] == r["batch"]
                          and e["device"] == r["device"]), None)
            saved = eager["update_ms"] - r["update_ms"] if eager else 0.0
            pays = f"pays back after {r['first_update_s'] * 1e3 / saved:.0f} updates" if saved > 0 else "never pays"
            print(f"{'':<20}compile + first update {r['first_update_s']:.1f} s; {pays}")
    if result["curve"]:
        c = result["curve"]
        print(f"critic loss over {c['updates']} updates at batch {c['batch']} on the same batches (tenths of the run):")
        for name, tenths in c["tenths"].items():
            print(f"  {name:<5}" + "".join(f"{v:8.4f}" for v in tenths))
        if "max_relative_gap" in c:
            print(f"  largest gap bf16 / fp32: {c['max_relative_gap']:.1%}")
    if result["actor"]:
        print_actor(result)
    for g in result["gap"]:
        rest = "never rests" if g["idle_after_s"] is None else f"rests after {g['idle_after_s']:g} s"
        print(f"  a 10 s gap between episodes, perception {rest}: the learner {g['learner_updates_per_s']:.2f} "
              f"updates/s")
    if result["gil"]:
        print("a 1 ms sleeper's lateness beside the learner alone in the process (what the GIL costs others):")
        for g in result["gil"]:
            what = f"batch {g['batch']} {'frozen' if g['frozen'] else 'full'}" if g["batch"] else "no learner"
            w = g["wake_late"]
            print(f"  {what:<18} p50 {w['p50_ms']:.2f}  p95 {w['p95_ms']:.2f}  max {w['max_ms']:.1f} ms")


def print_actor(result: dict) -> None:
    r, layout = result["renderer"], result["actor_layout"]
    print(f"the actor's whole tick on the twin, {result['ticks']} ticks a row; CPU: {result['cpu']}")
    print(f"  threads: actor {layout['actor_threads']} (policy, perception), learner {layout['learner_threads']} "
          f"({layout['learner_priority']}), {layout['cores']} usable cores; renderer: MUJOCO_GL={r['MUJOCO_GL']}, "
          f"{r['gl_renderer']}, LP_NUM_THREADS {r['LP_NUM_THREADS']}")
    print(f"  {'camera':<8}{'run':>4}  {'learner':<8}{'tick p50':>9}{'p95':>8}{'max':>8}{'own CPU p50':>12}"
          f"{'waits p95':>11}{'wake late p95/max':>19}{'updates/s':>11}{'p95 ratio':>11}")
    for a in result["actor"]:
        for key in ("alone", "with_learner"):
            row, tick, wake = a[key], a[key]["tick"], a[key]["wake_late"]
            ratio = f"{a['p95_ratio']:.2f}" if key == "with_learner" else ""
            print(f"  {a['camera']:<8}{a['run']:>4}  {'with' if row['learner'] else 'alone':<8}{tick['p50_ms']:>9.1f}"
                  f"{tick['p95_ms']:>8.1f}{tick['max_ms']:>8.1f}{tick['cpu_p50_ms']:>12.1f}{tick['wait_p95_ms']:>11.1f}"
                  f"{wake['p95_ms']:>11.2f} /{wake['max_ms']:>6.1f}{row['updates_per_s']:>11.2f}{ratio:>11}")
    backends = {a["with_learner"]["backend"] for a in result["actor"] if a["with_learner"]["backend"]}
    if backends:
        print(f"  real perception at a {result['camera_fps']:.0f} fps camera: " + "; ".join(sorted(backends)))
    busy = result["actor"][-1]["with_learner"]["threads"]
    print("  threads with the learner (last row), CPU seconds in the row: " + ", ".join(
        f"{t['name']} {t['policy']}/nice {t['nice']} {t['cpu_s']:.1f}" for t in busy))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 64])
    parser.add_argument("--updates", type=int, default=5, help="timed updates per row")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads of the learner")
    parser.add_argument("--ticks", type=int, default=150, help="actor ticks per actor row (0: no actor rows)")
    parser.add_argument("--learner-threads", type=int, default=1, help="the learner thread's budget beside the actor")
    parser.add_argument("--runs", type=int, default=2, help="alone/with-learner pairs per camera")
    parser.add_argument("--cameras", nargs="+", default=["twin", "real"], choices=["twin", "real"],
                        help="the actor's eyes: the twin's privileged camera, real perception a frame ahead")
    parser.add_argument("--camera-fps", type=float, default=30.0,
                        help="the real-perception rows' camera rate (a high one: perception, not the camera, "
                             "paces the loop)")
    parser.add_argument("--backend", default="auto", help="the real-perception rows' backend (torch, openvino, ...)")
    parser.add_argument("--gap", action="store_true",
                        help="also: the learner's updates/s in a gap between episodes, perception resting or not")
    parser.add_argument("--gil", action="store_true", help="also: does the learner hold the GIL (~1 min)")
    parser.add_argument("--actor-only", action="store_true", help="only the actor rows (no learner table)")
    parser.add_argument("--actor-threads", type=int, default=None,
                        help="the actor's torch threads (default: what hilserl train gives it, the cores the "
                             "learner leaves)")
    parser.add_argument("--learner-priority", choices=["idle", "nice"], default="idle",
                        help="the learner thread in the OS's idle class (hilserl train), or at nice 19 only (as "
                             "before issue 32, for comparison)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row (~20 s to compile)")
    parser.add_argument("--curve", type=int, default=0, metavar="UPDATES",
                        help="also the critic loss over this many updates at batch 64, fp32 against bf16")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = users_snapshot(Path(tmp))
    buffer = filled_buffer()
    rates = {"fp32": matmul_gflops(torch.float32)}
    if native_bf16():
        rates["bf16"] = matmul_gflops(torch.bfloat16)
    rows = [] if args.actor_only else learner_rows(ckpt, buffer, args.batches, args.updates, not args.no_compile)
    floors(rows, rates)
    actor_threads = args.actor_threads or cores_left(args.learner_threads)
    lower = functools.partial(background_thread, idle=args.learner_priority == "idle")  # nice: before issue 32
    actor = [] if args.ticks == 0 else actor_runs(ckpt, args.ticks, args.learner_threads, actor_threads, args.runs,
                                                  args.cameras, args.camera_fps, args.backend, lower)
    priority = next((a["with_learner"]["learner_priority"] for a in actor), "")
    result = {"cpu": describe_cpu(), "native_bf16": native_bf16(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "matmul_gflops": rates,
              "bytes_per_transition": buffer.bytes_per_transition, "learner": rows, "actor": actor,
              "ticks": args.ticks, "learner_threads": args.learner_threads, "renderer": renderer(),
              "camera_fps": args.camera_fps, "gil": gil_rows(ckpt, buffer) if args.gil else [],
              "gap": gap_rows(ckpt, actor_threads, args.camera_fps, args.backend) if args.gap else [],
              "actor_layout": {"actor_threads": actor_threads, "learner_threads":
                               args.learner_threads, "learner_priority": priority, "cores": usable_cores()},
              "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
              "curve": curves(ckpt, buffer, args.curve, 64) if args.curve else None}
    if args.json:
        print(json.dumps(result))
        return
    print_table(result)


if __name__ == "__main__":
    main()
