"""Where the scripted expert stands in each world: the nominal twin, the perturbed twin, the
stand-in with every gap, and each of its gaps alone.

    python scripts/bench_standin.py [--episodes 20] [--world configs/standin.yaml] [--json]

Success of the scripted expert (privileged: it reads the cube's position from the sim and
sees no pixels, so the picture's gaps cannot reach it; the arm's, the cube's and the
period's can) on held-out seeds (5000 on, as the transfer benchmark's), the mean episode
length, and the wall time. A policy's rows need perception networks on the stand-in's
picture (issue 28, part 2) and are not here yet.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from so101_sim2real.control.env import sim_env
from so101_sim2real.control.pilots import ScriptedPilot
from so101_sim2real.control.runner import Runner
from so101_sim2real.machine import describe_cpu
from so101_sim2real.sim.perturb import Perturbation, load_perturbation
from so101_sim2real.sim.standin import StandIn, load_standin
from so101_sim2real.spec import default_spec

HELD_OUT_SEEDS = 5000
ROOT = Path(__file__).resolve().parents[1]


def expert_row(label: str, episodes: int, perturbation: Perturbation | None = None,
               standin: StandIn | None = None) -> dict:
    env = sim_env(default_spec(), with_camera=False, perturbation=perturbation, standin=standin)
    started = time.perf_counter()
    try:
        summary = Runner(env, ScriptedPilot(env.twin)).run([HELD_OUT_SEEDS + i for i in range(episodes)])
    finally:
        env.close()
    done = summary.episodes
    return {"world": label, "episodes": len(done), "success": sum(bool(e.success) for e in done),
            "mean_steps": sum(e.steps for e in done) / max(1, len(done)), "period_ms": env.period_s * 1e3,
            "wall_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--world", default=str(ROOT / "configs" / "standin.yaml"), help="the stand-in world")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    world = load_standin(args.world)
    rows = [expert_row("nominal twin", args.episodes),
            expert_row("perturbed twin", args.episodes,
                       perturbation=load_perturbation(ROOT / "configs" / "perturbed_twin.yaml")),
            expert_row("stand-in, every gap", args.episodes, standin=world)]
    rows += [expert_row(f"  {name} alone", args.episodes, standin=world.alone(name)) for name in world.gaps]
    result = {"cpu": describe_cpu(), "seeds_from": HELD_OUT_SEEDS, "rows": rows}
    if args.json:
        print(json.dumps(result))
        return
    print(f"the scripted expert, {args.episodes} held-out seeds from {HELD_OUT_SEEDS} ({describe_cpu()})")
    print(f"  {'world':<28}{'success':>10}{'mean steps':>12}{'period ms':>11}{'wall s':>8}")
    for r in rows:
        print(f"  {r['world']:<28}{r['success']:>5}/{r['episodes']:<4}{r['mean_steps']:>12.1f}{r['period_ms']:>11.0f}"
              f"{r['wall_s']:>8.1f}")


if __name__ == "__main__":
    main()
