"""HIL-SERL's learner and buffer: updates per second, bytes per transition, and the actor's
tick time with and without the learner running beside it.

    python scripts/bench_learner.py [--batches 256 64] [--updates 6] [--ticks 60] [--json]

The network is the user's (a RoboBase snapshot of the exact shape, random weights, read
through the same loader); the buffer holds twin-like frames. The actor rows run the
real loop on the twin (rendered seg + depth, the policy, IK, physics) for ``--ticks``
ticks, first alone, then with the learner thread updating as fast as it may (batch 64).
CUDA rows are added when a GPU is present.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from so101_sim2real.control.env import sim_env
from so101_sim2real.control.interveners import NoIntervener
from so101_sim2real.hilserl.episode_record import SessionStart
from so101_sim2real.hilserl.learner import Learner, LearnerConfig
from so101_sim2real.hilserl.replay import ReplayBuffer, Step
from so101_sim2real.hilserl.rewards import SuccessReward
from so101_sim2real.hilserl.trainer import TrainConfig, Trainer
from so101_sim2real.policy.checkpoint import Checkpoint, load_checkpoint
from so101_sim2real.policy.runtime import build_agent


def users_snapshot(folder: Path) -> Checkpoint:
    path = folder / "example.pt"
    script = Path(__file__).resolve().parent / "make_example_snapshot.py"
    subprocess.run([sys.executable, str(script), str(path)], check=True, capture_output=True)
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


def updates_per_s(ckpt: Checkpoint, device: str, batch: int, updates: int, buffer: ReplayBuffer) -> dict:
    learner = Learner(build_agent(ckpt), LearnerConfig(batch_size=batch, critic_updates_per_actor=1), device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    learner.update(buffer.sample(batch))  # warm-up
    sample_ms, update_ms = [], []
    for _ in range(updates):
        t0 = time.perf_counter()
        b = buffer.sample(batch)
        t1 = time.perf_counter()
        learner.update(b)
        sync()
        t2 = time.perf_counter()
        sample_ms.append((t1 - t0) * 1e3)
        update_ms.append((t2 - t1) * 1e3)
    total = np.median(sample_ms) + np.median(update_ms)
    return {"device": device, "batch": batch, "sample_ms_p50": float(np.median(sample_ms)),
            "update_ms_p50": float(np.median(update_ms)), "updates_per_s": 1e3 / total}


def actor_ticks(ckpt: Checkpoint, ticks: int, with_learner: bool, threads: int) -> dict:
    """The twin loop's tick time, with or without the learner thread busy beside it."""
    spec = ckpt.spec.replace("episode.max_steps", ticks)
    cfg = TrainConfig(learner=LearnerConfig(batch_size=64), capacity=ticks * 4, warmup_steps=0,
                      utd=1000.0 if with_learner else 0.0, learner_threads=threads)
    rig = sim_env(spec, with_camera=True)
    try:
        # a filled buffer and a run already past its first batch: the learner is busy from the first tick
        trainer = Trainer(rig, ckpt, cfg, NoIntervener(), SuccessReward(), buffer=filled_buffer(),
                          start=SessionStart(env_steps=10_000 if with_learner else 0))
        stages = trainer.run(1).timing
        # the tick's stages (obs, policy, control, sim) summed: p95 summed is an upper bound
        return {"learner": with_learner, "ticks": ticks, "tick_ms_p50": sum(s["p50_ms"] for s in stages.values()),
                "tick_ms_p95": sum(s["p95_ms"] for s in stages.values()), "updates_during": trainer.stats.updates,
                "stages": stages}
    finally:
        rig.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 64])
    parser.add_argument("--updates", type=int, default=6, help="timed updates per row")
    parser.add_argument("--ticks", type=int, default=60, help="actor ticks per actor row")
    parser.add_argument("--learner-threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = users_snapshot(Path(tmp))
    buffer = filled_buffer()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = [updates_per_s(ckpt, d, b, args.updates, buffer) for d in devices for b in args.batches]
    actor = [actor_ticks(ckpt, args.ticks, False, args.learner_threads),
             actor_ticks(ckpt, args.ticks, True, args.learner_threads)]
    result = {"cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
              "bytes_per_transition": buffer.bytes_per_transition, "learner": rows, "actor": actor}
    if args.json:
        print(json.dumps(result))
        return
    print(f"replay buffer: {buffer.bytes_per_transition:,} bytes per transition (2x84x84 frame stored once)")
    print(f"{'device':<7}{'batch':>6}{'sample ms':>11}{'update ms':>11}{'updates/s':>11}")
    for r in rows:
        print(f"{r['device']:<7}{r['batch']:>6}{r['sample_ms_p50']:>11.1f}{r['update_ms_p50']:>11.1f}"
              f"{r['updates_per_s']:>11.2f}")
    print(f"actor tick on the twin ({args.ticks} ticks; learner thread budget {args.learner_threads}):")
    for a in actor:
        label = f"with the learner ({a['updates_during']} updates meanwhile)" if a["learner"] else "alone"
        print(f"  {label:<44} p50 {a['tick_ms_p50']:7.1f} ms   p95 {a['tick_ms_p95']:7.1f} ms")
    alone, busy = actor
    print(f"  p95 with the learner / alone: {busy['tick_ms_p95'] / alone['tick_ms_p95']:.2f}")


if __name__ == "__main__":
    main()
