"""Where policies stand in each world: the nominal twin, the perturbed twin, the stand-in with
every gap, and each of its gaps alone.

    python scripts/bench_standin.py [--episodes 20] [--world configs/standin.yaml] [--json]
    python scripts/bench_standin.py --policy CKPT --seg-ckpt SEG --depth-model DEPTH [--alone] [--work DIR]

Success of the scripted expert (privileged: it reads the cube's position from the sim and
sees no pixels, so the picture's gaps cannot reach it; the arm's, the cube's and the
period's can) on held-out seeds (5000 on, as the transfer benchmark's), the mean episode
length, and the wall time.

With ``--policy`` (the transfer benchmark's BC start policy, say), the policy's rows too:
in the twins through their privileged perception, in the stand-in through its networks
on its rendered picture (about 0.45 s a tick here, so a failing episode of 100 steps
takes 45 s). Each policy row is kept in ``--work`` under a key of everything that made it
(the world, the seeds, the policy's and the networks' files), so an interrupted run goes on
where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
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


def _digest(path: str) -> str:
    p = Path(path)
    h = hashlib.sha256()
    for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
        if f.is_file():
            h.update(f"{f.name}:{f.stat().st_size}".encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


def policy_row(label: str, args: argparse.Namespace, perturbation: Perturbation | None = None,
               standin: StandIn | None = None) -> dict:
    """The policy's autonomous success in one world, through ``so101 infer``'s own build; kept in
    ``--work`` under the key of everything that made it."""
    from so101_sim2real.control.description import describe
    from so101_sim2real.control.infer import InferOptions, run_infer

    made = {"label": label, "episodes": args.episodes, "seed": HELD_OUT_SEEDS, "max_steps": args.max_steps,
            "policy": _digest(args.policy), "perturbation": None if perturbation is None else perturbation.describe(),
            "standin": None if standin is None else standin.to_dict(),
            "networks": [_digest(args.seg_ckpt), _digest(args.depth_model)] if standin is not None else None}
    key = hashlib.sha256(json.dumps(made, sort_keys=True).encode()).hexdigest()[:16]
    cache = Path(args.work) / f"{key}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    options = {"ckpt": args.policy, "perturb": perturbation, "standin": standin}
    if standin is not None:
        options.update(perception="real", seg_ckpt=args.seg_ckpt, depth_model=args.depth_model)
    started = time.perf_counter()
    summary = run_infer(InferOptions(describe(**options), episodes=args.episodes, seed=HELD_OUT_SEEDS,
                                     max_steps=args.max_steps))
    if summary.interrupted:
        sys.exit("interrupted")
    done = summary.episodes
    row = {"world": label, "episodes": len(done), "success": sum(bool(e.success) for e in done),
           "mean_steps": sum(e.steps for e in done) / max(1, len(done)), "period_ms": summary.period_s * 1e3,
           "wall_s": time.perf_counter() - started}
    Path(args.work).mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(row))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--world", default=str(ROOT / "configs" / "standin.yaml"), help="the stand-in world")
    parser.add_argument("--policy", help="a checkpoint: its rows beside the expert's")
    parser.add_argument("--seg-ckpt", help="the stand-in's segmentation network (so101 seg train)")
    parser.add_argument("--depth-model", help="the stand-in's depth network (so101 depth fit)")
    parser.add_argument("--alone", action="store_true", help="the policy in each gap alone too (hours here)")
    parser.add_argument("--max-steps", type=int, default=100, help="the policy's episodes (the transfer benchmark's)")
    parser.add_argument("--work", default="bench-standin", help="the policy rows, kept by key")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.policy and not (args.seg_ckpt and args.depth_model):
        sys.exit("--policy sees the stand-in through its networks: give --seg-ckpt and --depth-model")
    world = load_standin(args.world)
    rows = [expert_row("nominal twin", args.episodes),
            expert_row("perturbed twin", args.episodes,
                       perturbation=load_perturbation(ROOT / "configs" / "perturbed_twin.yaml")),
            expert_row("stand-in, every gap", args.episodes, standin=world)]
    rows += [expert_row(f"  {name} alone", args.episodes, standin=world.alone(name)) for name in world.gaps]
    result = {"cpu": describe_cpu(), "seeds_from": HELD_OUT_SEEDS, "rows": rows}
    if args.policy:
        perturbed = load_perturbation(ROOT / "configs" / "perturbed_twin.yaml")
        worlds = [("nominal twin", None, None), ("perturbed twin", perturbed, None),
                  ("stand-in, its networks, no gap", None, StandIn({}, world.seed)),
                  ("stand-in, every gap", None, world)]
        if args.alone:
            worlds += [(f"  {name} alone", None, world.alone(name)) for name in world.gaps]
        result["policy"] = args.policy
        result["policy_rows"] = []
        for label, perturbation, standin in worlds:
            result["policy_rows"].append(policy_row(label, args, perturbation, standin))
            print(f"policy: {label}: {result['policy_rows'][-1]['success']}/{args.episodes}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
        return
    print(f"the scripted expert, {args.episodes} held-out seeds from {HELD_OUT_SEEDS} ({describe_cpu()})")
    print(f"  {'world':<28}{'success':>10}{'mean steps':>12}{'period ms':>11}{'wall s':>8}")
    for r in rows:
        print(f"  {r['world']:<28}{r['success']:>5}/{r['episodes']:<4}{r['mean_steps']:>12.1f}{r['period_ms']:>11.0f}"
              f"{r['wall_s']:>8.1f}")
    if args.policy:
        print(f"the policy {args.policy}, {args.episodes} held-out seeds, at most {args.max_steps} steps")
        for r in result["policy_rows"]:
            print(f"  {r['world']:<32}{r['success']:>5}/{r['episodes']:<4}{r['mean_steps']:>12.1f}{r['wall_s']:>8.0f}")


if __name__ == "__main__":
    main()
