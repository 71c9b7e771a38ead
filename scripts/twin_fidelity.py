"""How faithfully the twin reproduces the user's training simulator, as one table.

    python scripts/twin_fidelity.py [--traces FILE.npz ...] [--no-obs] [--json]

Replays every golden sequence of each trace file (default: the two in
``tests/data/golden``) through the twin (reset, controller, IK, physics, scoring,
privileged perception) and prints, per sequence: the largest joint, cube and state
errors over all steps, the first success step of twin and trace, and the
observations' smallest per-class IoU, seg pixel agreement and mean disparity error.
Grasps and observations are judged only against a trace recorded under the MuJoCo
version installed here ("n/j": not judged); ``ok`` applies the tolerances of
``so101_sim2real.compare.golden``. Exit code 1 if anything judged is out of tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from so101_sim2real.compare.golden import (
    GoldenTrace,
    SequenceReport,
    TraceReport,
    TwinReplayer,
    load_trace,
)
from so101_sim2real.errors import So101Error
from so101_sim2real.simulator import installed_mujoco

DEFAULT_TRACES = sorted((Path(__file__).resolve().parent.parent / "tests" / "data" / "golden").glob("*.npz"))


def run(traces: list[GoldenTrace], observe: bool) -> list[TraceReport]:
    replayer = TwinReplayer(observe=observe)
    reports = []
    try:
        with tqdm(total=sum(len(t.sequences) + 1 for t in traces), desc="replaying", unit="seq",
                  file=sys.stderr, disable=None) as bar:
            for trace in traces:
                resets = replayer.resets(trace)
                bar.update()
                sequences = []
                for seq in trace.sequences:
                    sequences.append(replayer.replay(trace, seq))
                    bar.update()
                reports.append(TraceReport(str(trace.path), trace.mujoco, installed_mujoco(), resets, sequences))
    finally:
        replayer.close()
    return reports


def _row(r: SequenceReport) -> str:
    judged = r.same_mujoco or r.kind == "random"
    success = f"{r.success_step or '-'} / {r.trace_success_step or '-'}"
    if r.obs is None:
        obs = f"{'':>8}{'':>10}{'':>8}"
    else:
        obs = f"{min(r.obs.class_iou.values()):>8.4f}{r.obs.seg_agreement:>10.4f}{r.obs.disparity_mae:>8.3f}"
    verdict = ("ok" if r.ok else "FAIL") if judged else "n/j"
    if judged and not r.same_mujoco:
        verdict += "*"
    return (f"  {r.key:<18}{r.max_joint_err:>10.1e}{r.max_cube_err:>10.1e}{r.max_state_err:>10.1e}"
            f"{success:>12}{obs}  {verdict}")


def render(reports: list[TraceReport]) -> str:
    lines = []
    for rep in reports:
        same = rep.trace_mujoco == rep.installed_mujoco
        lines.append(f"{Path(rep.path).name}: recorded under MuJoCo {rep.trace_mujoco}, replayed under "
                     f"{rep.installed_mujoco}" + ("" if same else " (grasps and observations not judged: n/j)"))
        r = rep.resets
        lines.append(f"  resets of {r.seeds} seeds: max joint error {r.max_joint_err:.1e} rad, max cube error "
                     f"{r.max_cube_err:.1e} m  {'ok' if r.ok else 'FAIL'}")
        lines.append(f"  {'sequence':<18}{'joint rad':>10}{'cube m':>10}{'state':>10}{'success':>12}"
                     f"{'min IoU':>8}{'seg agree':>10}{'disp':>8}")
        lines += [_row(s) for s in rep.sequences]
        if not same:
            lines.append("  * contact-free motion judged; observations not (another MuJoCo renders the far floor "
                         "differently)")
    ok = all(rep.ok for rep in reports)
    lines.append("all judged sequences within tolerance" if ok else "OUT OF TOLERANCE: see FAIL rows")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", nargs="+", type=Path, default=DEFAULT_TRACES, help="golden trace files (.npz)")
    parser.add_argument("--no-obs", action="store_true", help="skip the observations (no rendering, ~5x faster)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args()
    try:
        traces = [load_trace(p) for p in args.traces]
    except So101Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    reports = run(traces, observe=not args.no_obs)
    if args.json:
        print(json.dumps({"mujoco": installed_mujoco(), "ok": all(r.ok for r in reports),
                          "traces": [r.to_dict() for r in reports]}))
    else:
        print(render(reports))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
