"""Sim twin throughput: physics, env steps, and steps with rendered observations.

    python scripts/bench_sim.py [--episodes 3] [--json]

Every row but the first runs the real control loop (``Runner``) on the twin with the
scripted expert, so a "step" is one 20 ms policy tick: controller (IK + clamp) and 10
physics steps, plus what the row adds: the privileged seg + depth observation at the
camera's 640x480 through ``finish_frame``, the RGB image too (what --video and
--record add), and a random-weight policy of the user's shape (a full ``so101 infer``
tick). Rendering is MuJoCo's offscreen EGL (software on machines without a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from so101_sim2real.control.env import sim_env

# so101_sim2real is imported before mujoco: it picks EGL for offscreen rendering
from so101_sim2real.control.pilots import PolicyPilot, ScriptedPilot
from so101_sim2real.control.runner import Runner
from so101_sim2real.policy.runtime import Policy
from so101_sim2real.spec import default_spec


def physics_row(steps: int = 20000) -> dict:
    import mujoco

    rig = sim_env(default_spec(), with_camera=False)
    rig.reset(0)
    m, d = rig.twin.model, rig.twin.data
    t0 = time.perf_counter()
    for _ in range(steps):
        mujoco.mj_step(m, d)
    dt = time.perf_counter() - t0
    rig.close()
    return {"row": "physics (mj_step)", "steps_per_s": steps / dt, "ms_per_step": dt / steps * 1e3, "stages": {}}


def loop_row(name: str, episodes: int, perceive: bool, rgb: bool, policy: bool) -> dict:
    spec = default_spec()
    rig = sim_env(spec, with_camera=perceive or policy)
    if policy:
        from bench_policy import users_policy_shape

        pilot = PolicyPilot(Policy(users_policy_shape()))
    else:
        pilot = ScriptedPilot(rig.twin)
    runner = Runner(rig, pilot, perceive=perceive, with_rgb=rgb, max_steps=40)
    t0 = time.perf_counter()
    summary = runner.run(list(range(episodes)))
    wall = time.perf_counter() - t0
    rig.close()
    ticks = sum(e.steps for e in summary.episodes)
    loop_s = sum(sum(v) for v in runner.timer.samples.values())  # excludes the resets
    return {"row": name, "steps_per_s": ticks / loop_s, "ms_per_step": loop_s / ticks * 1e3, "wall_s": wall,
            "stages": {k: round(v["p50_ms"], 3) for k, v in summary.timing.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=3, help="episodes per row (40 ticks each at most)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for the policy row")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [
        physics_row(),
        loop_row("env step, no rendering", args.episodes, perceive=False, rgb=False, policy=False),
        loop_row("env step + seg/depth obs", args.episodes, perceive=True, rgb=False, policy=False),
        loop_row("env step + obs + RGB", args.episodes, perceive=True, rgb=True, policy=False),
        loop_row("infer tick (obs + policy)", args.episodes, perceive=True, rgb=False, policy=True),
    ]
    import mujoco

    info = {"mujoco": mujoco.__version__, "MUJOCO_GL": os.environ.get("MUJOCO_GL"), "cpu": platform.machine(),
            "cores": os.cpu_count(), "camera": "640x480 -> 84x84"}
    if args.json:
        print(json.dumps({"info": info, "rows": rows}))
        return
    print(f"sim twin throughput  (mujoco {info['mujoco']}, MUJOCO_GL={info['MUJOCO_GL']}, {info['cores']} cores, "
          f"camera {info['camera']})")
    print(f"{'row':<28}{'steps/s':>10}{'ms/step':>10}   p50 ms per stage")
    for r in rows:
        stages = "  ".join(f"{k} {v:.2f}" for k, v in r["stages"].items())
        print(f"{r['row']:<28}{r['steps_per_s']:>10.1f}{r['ms_per_step']:>10.3f}   {stages}")
    print("(a step is one 20 ms policy tick = 10 physics steps, except the physics row)")


if __name__ == "__main__":
    main()
