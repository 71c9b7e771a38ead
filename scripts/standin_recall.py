"""compare-sim held to account: does it name each stand-in gap it is shown, and nothing else?

    python scripts/standin_recall.py --seg-ckpt SEG.ckpt --depth-model DEPTH [--episodes 2] [--out DIR] [--json]

For the stand-in with no gaps (the stand-in's networks alone), each gap alone at the
world's amount, and the whole world: the scripted expert's episodes are recorded through
the stand-in's perception networks (`so101 infer --standin W --perception real --record`),
as a person would record them on the arm, then each episode goes through `so101
compare-sim --json`. A gap counts as named when a finding names it in at least half of the
world's episodes; a finding naming a gap the world lacks is a false name. Where a finding
estimates an amount, its error against the world's is scored with the tolerance in
TOLERANCE. Recordings are kept in --out, keyed by everything that made them (the world,
the seeds, the networks' files), and reused when the key matches.

With --costs (the JSON of `scripts/bench_standin.py --policy P --alone`: what each gap alone
costs a policy), the whole world's findings are ranked as `compare-sim sensitivity --report`
ranks them, and the check is whether the gaps that cost most are the findings on top.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from so101_sim2real.compare.sensitivity import NETWORKS_ROW, GapResult, rank_findings, score_row
from so101_sim2real.machine import describe_cpu
from so101_sim2real.sim.standin import StandIn, load_standin

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT_SEEDS = 5000
# How far an estimated amount may be off the world's and still count as measured, and how to read both.
TOLERANCE = {
    "latency": ("ms", lambda g: g.ms, 20.0, "ms"),
    "max_speed": ("deg_s", lambda g: g.deg_s, 0.25, "share"),
    "backlash": ("deg", lambda g: sum(g.deg) / len(g.deg), 0.35, "share"),
    "compliance": ("stiffness_scale", lambda g: g.stiffness_scale, 0.5, "share"),
    "gripper": ("stiffness_scale", lambda g: g.stiffness_scale, 0.5, "share"),
    "period": ("p50_ms", lambda g: g.ms, 0.1, "share"),
    "cube": ("size_ratio", lambda g: g.size_m / 0.03, 0.1, "share"),
}


def _key(world: StandIn, args: argparse.Namespace) -> str:
    """Everything that makes a world's recording: the world, the seeds, the pilot and the networks."""
    def digest(path: str) -> str:
        p = Path(path)
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        h = hashlib.sha256()
        if not p.exists():  # a hub id: its name is what there is to key
            h.update(path.encode())
        for f in files:
            if f.is_file():
                h.update(f.name.encode())
                h.update(str(f.stat().st_size).encode())
                with f.open("rb") as fh:
                    h.update(fh.read(1 << 20))  # the first MiB: weights differ there
        return h.hexdigest()[:16]

    made = {"world": world.to_dict(), "episodes": args.episodes, "seed": args.seed, "pilot": "scripted",
            "seg": digest(args.seg_ckpt), "depth": digest(args.depth_model)}
    return hashlib.sha256(json.dumps(made, sort_keys=True).encode()).hexdigest()[:16]


def _run(cmd: list[str], log: Path) -> None:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    with log.open("w") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}); see {log}")


def record(name: str, world: StandIn, args: argparse.Namespace) -> Path:
    """The world's recording, made unless one with the same key is there."""
    out = Path(args.out)
    folder, key_file = out / "recordings" / name, out / "recordings" / f"{name}.key"
    key = _key(world, args)
    if (folder / "recording.json").is_file() and key_file.is_file() and key_file.read_text() == key:
        return folder
    (out / "worlds").mkdir(parents=True, exist_ok=True)
    world_file = out / "worlds" / f"{name}.yaml"
    world_file.write_text(yaml.safe_dump(world.to_dict()))
    key_file.unlink(missing_ok=True)  # a recording cut short must never match a key
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    _run(["so101", "infer", "--ckpt", "scripted", "--standin", str(world_file), "--perception", "real",
          "--seg-ckpt", args.seg_ckpt, "--depth-model", args.depth_model, "--record", str(folder),
          "--episodes", str(args.episodes), "--seed", str(args.seed)], out / f"{name}.infer.log")
    key_file.write_text(key)
    return folder


def compare(folder: Path, episodes: int, out: Path, name: str) -> list[dict]:
    """compare-sim's report of each episode."""
    reports = []
    for episode in range(episodes):
        log = out / f"{name}.compare{episode}.json"
        _run(["so101", "compare-sim", str(folder), "--episode", str(episode), "--json"], log)
        reports.append(json.loads(log.read_text().strip().splitlines()[-1]))
    return reports


def _estimate(gap: str, finding: dict) -> float | None:
    if gap not in TOLERANCE:
        return None
    key = TOLERANCE[gap][0]
    value = finding["evidence"].get(key)
    return float(value) if isinstance(value, (int, float)) else None


def score(name: str, world: StandIn, reports: list[dict]) -> dict:
    """Which gaps the findings named in at least half the episodes, the false names, amount errors."""
    counts: dict[str, int] = {}
    estimates: dict[str, list[float]] = {}
    present = list(world.gaps)
    for report in reports:
        named = set()
        for finding in report["findings"]:
            gaps = finding.get("gaps") or []
            if not gaps:  # a finding of no stand-in gap (ids renamed, an axis swap) is a false name anywhere
                named.add(f"other: {finding['name']}")
                continue
            # a finding that names candidates ("the mount or the intrinsics") is credited with one of them
            for gap in ([g for g in gaps if g in present] or gaps)[:1]:
                named.add(gap)
                if (value := _estimate(gap, finding)) is not None:
                    estimates.setdefault(gap, []).append(value)
        for gap in named:
            counts[gap] = counts.get(gap, 0) + 1
    named = sorted(g for g, c in counts.items() if 2 * c >= len(reports))
    amounts = {}
    for gap in present:
        if gap in estimates and gap in TOLERANCE:
            _, truth_of, tol, kind = TOLERANCE[gap]
            truth, est = truth_of(world.get(gap)), sum(estimates[gap]) / len(estimates[gap])
            error = abs(est - truth) / truth if kind == "share" else abs(est - truth)
            amounts[gap] = {"estimate": est, "truth": truth, "error": error, "tolerance": tol, "unit": kind,
                            "within": error <= tol}
    return {"world": name, "gaps": present, "named": named, "found": [g for g in present if g in named],
            "false": [g for g in named if g not in present], "amounts": amounts,
            "findings": [[f["name"] for f in r["findings"]] for r in reports]}


def policy_rows(bench: dict, path: str) -> list[dict]:
    """A policy's rows of a ``bench_standin.py --policy P --alone`` result (its ``--json`` output, or
    docs/standin_policy.json), with the stand-in's no-gap row and each gap alone."""
    rows = bench.get("policy_rows", bench.get("rows") if "policy" in bench else None)
    names = {r.get("world", "").strip() for r in rows or [] if isinstance(r, dict)}
    if not rows or "stand-in, its networks, no gap" not in names or not any(n.endswith(" alone") for n in names):
        sys.exit(f"--costs {path}: no policy rows with each gap alone (bench_standin.py --policy P --alone --json)")
    return rows


def gap_costs(rows: list[dict]) -> list[GapResult]:
    """Each gap alone's row, costed against the stand-in's networks with no gap (what the gap costs,
    not what the networks cost with it), as ``compare-sim sensitivity --standin`` ranks findings."""
    by_name = {r["world"].strip(): r for r in rows}
    base = by_name["stand-in, its networks, no gap"]
    networks = GapResult(NETWORKS_ROW, base["success"], base["episodes"])
    return [score_row(networks, GapResult(f"stand-in: {name}", r["success"], r["episodes"]))
            for name, r in by_name.items() if name.endswith(" alone")]


def ranking(full: dict, reports: list[dict], costs: list[GapResult], noise_points: float) -> dict:
    """The whole world's findings (those of the gaps it named) ranked by what their gap costs, and
    whether the costliest gaps (a cost above the noise) are the top findings."""
    findings: dict[tuple, dict] = {}
    for report in reports:
        for f in report["findings"]:
            if set(f.get("gaps") or []) & set(full["found"]):
                findings.setdefault((f["name"], tuple(f["gaps"])), {"name": f["name"], "gaps": f["gaps"]})
    ranked = rank_findings(list(findings.values()), costs)
    by_cost = sorted(costs, key=lambda r: -r.cost_points)
    costly = [r.name.removeprefix("stand-in: ").removesuffix(" alone") for r in by_cost
              if r.cost_points > noise_points]
    # the ranking puts a costly gap's finding above every cheaper one, so the costliest gaps are the top
    # findings exactly when each has a finding of its own (costed by its row)
    costed = {f.row.removeprefix("stand-in: ").removesuffix(" alone") for f in ranked}
    return {"costs": {r.name.removeprefix("stand-in: ").removesuffix(" alone"): r.cost_points for r in by_cost},
            "noise_points": noise_points, "costliest": costly,
            "costliest_named": [g for g in costly if g in full["found"]],
            "costliest_on_top": all(g in costed for g in costly) if costly else None,
            "findings_by_cost": [{"name": f.name, "gaps": f.gaps, "cost_points": f.cost_points} for f in ranked]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seg-ckpt", required=True, help="the stand-in's segmentation network (so101 seg train)")
    parser.add_argument("--depth-model", required=True, help="the stand-in's depth network (so101 depth fit)")
    parser.add_argument("--world", default=str(ROOT / "configs" / "standin.yaml"))
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEEDS)
    parser.add_argument("--out", default="standin-recall", help="recordings and reports, reused when keyed alike")
    parser.add_argument("--gaps", nargs="*", help="only these gaps alone (default: every gap of the world)")
    parser.add_argument("--costs", help="bench_standin.py --policy P --alone --json's result: rank the whole "
                                        "world's findings by what their gaps cost that policy")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.costs and args.gaps:
        sys.exit("--costs ranks the whole world's findings: not with --gaps")
    if args.costs:
        try:
            bench = json.loads(Path(args.costs).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            sys.exit(f"--costs {args.costs}: cannot read it ({exc})")
    world = load_standin(args.world)
    worlds = [("none", StandIn({}, world.seed))]
    worlds += [(g, world.alone(g)) for g in (args.gaps or list(world.gaps))]
    if not args.gaps:
        worlds.append(("every gap", world))
    out = Path(args.out)
    rows, reports = [], []
    for name, w in worlds:
        started = time.perf_counter()
        folder = record(name.replace(" ", "_"), w, args)
        reports = compare(folder, args.episodes, out, name.replace(" ", "_"))
        row = score(name, w, reports)
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
        print(f"{name:<16} found {row['found']} false {row['false']} ({row['seconds']:.0f} s)", file=sys.stderr)
    alone = [r for r in rows if len(r["gaps"]) == 1]
    result = {"cpu": describe_cpu(), "episodes": args.episodes, "seeds_from": args.seed,
              "named_alone": sum(bool(r["found"]) for r in alone), "gaps_alone": len(alone),
              "false_names": sum(len(r["false"]) for r in rows), "rows": rows}
    if args.costs:
        costs = gap_costs(policy_rows(bench, args.costs))
        # two binomial standard errors at p = 0.5, as the sensitivity table states its noise
        result["ranking"] = ranking(rows[-1], reports, costs, 100.0 / costs[0].episodes ** 0.5)
    (out / "recall.json").write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result))
        return
    print(f"compare-sim on the stand-in: {result['named_alone']}/{len(alone)} gaps named alone, "
          f"{result['false_names']} false names ({args.episodes} episodes per world, {describe_cpu()})")
    print(f"  {'world':<16}{'named':<8}{'false names':<24}amount (estimate / truth, within tolerance)")
    for r in rows:
        status = "-" if not r["gaps"] or len(r["gaps"]) > 1 else ("yes" if r["found"] else "no")
        amounts = "; ".join(f"{g} {a['estimate']:.3g}/{a['truth']:.3g} {'ok' if a['within'] else 'off'}"
                            for g, a in r["amounts"].items())
        print(f"  {r['world']:<16}{status:<8}{','.join(r['false']) or '-':<24}{amounts}")
    full = rows[-1] if not args.gaps else None
    if full is not None:
        print(f"  every gap: named {len(full['found'])}/{len(full['gaps'])}: {', '.join(full['found'])}")
    if "ranking" in result:
        rank = result["ranking"]
        print(f"  what each gap alone costs the policy (points; noise ~{rank['noise_points']:.0f}): "
              + ", ".join(f"{g} {c:+.0f}" for g, c in rank["costs"].items() if c))
        verdict = {True: "yes", False: "no", None: "n/a (none costs above the noise)"}[rank["costliest_on_top"]]
        print(f"  the costliest {rank['costliest']}: named on the whole world {rank['costliest_named']}, "
              f"the top findings: {verdict}")
        for f in rank["findings_by_cost"]:
            print(f"    {f['cost_points']:+4.0f}  {f['name']} ({', '.join(f['gaps'])})")


if __name__ == "__main__":
    main()
