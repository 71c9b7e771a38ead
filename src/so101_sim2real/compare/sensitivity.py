"""The gap budget: which sim-to-real gap costs a pilot how much success.

In the twin, one perturbation at a time (a slower control period, the camera moved or
tilted, noisy segmentation edges or disparity, a late action), the pilot runs the same
seeded episodes as on the nominal twin. Each row's cost is the nominal success minus
its own, in percentage points, so the rows rank the gaps worth closing first. Where a
``compare-sim`` report measured an amount (the recorded period), a row uses it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from so101_sim2real.control.pilots import Observation, Pilot
from so101_sim2real.errors import So101Error
from so101_sim2real.sim.perturb import Perturbation
from so101_sim2real.sim.standin import StandIn

if TYPE_CHECKING:
    from so101_sim2real.control.description import RunDescription
    from so101_sim2real.control.infer import InferOptions

NETWORKS_ROW = "stand-in: its networks, no gap"
DEFAULT_PERIODS_S = (0.05, 0.1)
DEFAULT_SHIFTS_MM = (3.0, 8.0)
DEFAULT_TILTS_DEG = (2.0, 4.0)
DEFAULT_FOVY_DEG = (5.0,)
DEFAULT_EDGE_FLIPS = (0.1, 0.3)
DEFAULT_ERODE_PX = (1, 2)
DEFAULT_CUBE_DROPOUTS = (0.3,)
DEFAULT_DISPARITY_STDS = (3.0, 6.0)
DEFAULT_LATENCIES_MS = (40.0, 100.0, 150.0)
DEFAULT_JOINT_OFFSETS_DEG = (2.0, 5.0)  # on the five arm joints, signs alternating


@dataclass(frozen=True)
class Gap:
    """One row: a named perturbation of the twin, plus an optional action latency in ticks, or a
    stand-in world (sim/standin.py), seen through the run's real perception."""

    name: str
    perturbation: Perturbation = field(default_factory=Perturbation)
    latency_ticks: int = 0
    standin: StandIn | None = None


@dataclass
class GapResult:
    """How a pilot did under one gap, over the run's seeds."""

    name: str
    successes: int
    episodes: int
    cost_points: float = 0.0  # nominal success minus this row's, in percentage points
    stderr_points: float = 0.0  # binomial standard error of that difference

    @property
    def success(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    def to_dict(self) -> dict:
        return {"name": self.name, "success": self.success, "successes": self.successes, "episodes": self.episodes,
                "cost_points": self.cost_points, "stderr_points": self.stderr_points}


@dataclass
class SensitivityReport:
    """The nominal run and every gap, sorted by cost (highest first)."""

    pilot: str
    seeds: list[int]
    nominal: GapResult
    rows: list[GapResult]
    report: str | None = None  # the compare-sim report the measured amounts came from
    findings: list[RankedFinding] = field(default_factory=list)  # the report's, costliest first (stand-in rows)

    @property
    def noise_points(self) -> float:
        """Two binomial standard errors at p = 0.5: a difference below this is noise."""
        return 100.0 / math.sqrt(len(self.seeds)) if self.seeds else 100.0

    def to_dict(self) -> dict:
        return {"pilot": self.pilot, "seeds": self.seeds, "episodes": len(self.seeds), "report": self.report,
                "noise_points": self.noise_points, "nominal": self.nominal.to_dict(),
                "rows": [r.to_dict() for r in self.rows],
                "findings_by_cost": [dataclasses.asdict(f) for f in self.findings]}


@dataclass(frozen=True)
class RankedFinding:
    """A report's finding and what its gap costs: the row at the amount the report measured where it
    measured one, else the gap alone at the world's amount (less what the networks cost alone)."""

    name: str
    gaps: list[str]
    row: str
    cost_points: float


def rank_findings(findings: list[dict], rows: list[GapResult]) -> list[RankedFinding]:
    """The ``findings`` (``{"name", "gaps"}``) that name a stand-in gap, costliest first, each costed by
    its costliest gap's row in ``rows``, less what the stand-in's networks cost with no gap (that row,
    where there is one: a pixel policy's every stand-in row carries it). A finding whose gaps have no
    row is left out; a repeated one is ranked once; ties keep the report's order."""
    by_name = {r.name: r for r in rows}
    networks = by_name.get(NETWORKS_ROW)
    base = networks.cost_points if networks is not None else 0.0
    ranked, seen = [], set()
    for finding in findings:
        key = (finding["name"], tuple(finding.get("gaps") or []))
        costed = [row for gap in key[1] if (row := _row_of(gap, by_name)) is not None]
        if costed and key not in seen:
            seen.add(key)
            worst = max(costed, key=lambda r: r.cost_points)
            ranked.append(RankedFinding(key[0], list(key[1]), worst.name, worst.cost_points - base))
    return sorted(ranked, key=lambda f: -f.cost_points)


def _row_of(gap: str, rows: dict[str, GapResult]) -> GapResult | None:
    measured = next((r for name, r in rows.items() if name.startswith(f"stand-in: {gap} as measured")), None)
    return measured or rows.get(f"stand-in: {gap} alone")


class LatePilot:
    """Acts on the observation from ``ticks`` ticks ago: the latency of a real loop."""

    def __init__(self, inner: Pilot, ticks: int):
        self.inner, self.ticks = inner, ticks
        self.name, self.needs_pixels = inner.name, inner.needs_pixels
        self._seen: deque[Observation] = deque(maxlen=ticks + 1)

    def reset(self, obs: Observation) -> None:
        self._seen.clear()
        self._seen.extend([obs] * (self.ticks + 1))  # before the first tick only the first observation exists
        self.inner.reset(obs)

    def act(self, obs: Observation) -> np.ndarray:
        self._seen.append(obs)
        return self.inner.act(self._seen[0])


# ------------------------------------------------------------------ the rows


def default_gaps(spec_period_s: float, measured: dict | None = None, matches: list | None = None) -> list[Gap]:
    """The default rows. ``measured`` (from :func:`read_report`) adds rows at the recorded period
    and lag and names the recorded finger shift next to the camera rows; ``matches`` (from
    :func:`~so101_sim2real.compare.gap_match.measured_gaps`) add one row per matched perturbation."""
    measured = measured or {}
    gaps = [Gap(f"period {p * 1e3:.0f} ms", Perturbation(period_s=p)) for p in DEFAULT_PERIODS_S]
    if (p := measured.get("period_s")) and all(abs(p - q) > 1e-3 for q in (spec_period_s, *DEFAULT_PERIODS_S)):
        gaps.insert(0, Gap(f"period {p * 1e3:.0f} ms (recorded p50)", Perturbation(period_s=p)))
    seen = f" (recorded fingers moved {measured['finger_shift_px']:.1f} px)" if "finger_shift_px" in measured else ""
    for mm in DEFAULT_SHIFTS_MM:  # the norm split over x, y, z: no axis is favoured
        d = mm / math.sqrt(3.0)
        gaps.append(Gap(f"camera shift {mm:g} mm{seen}", Perturbation(camera_shift_mm=(d, d, d))))
    for deg in DEFAULT_TILTS_DEG:
        gaps.append(Gap(f"camera tilt {deg:g} deg about x{seen}", Perturbation(camera_tilt_deg=(deg, 0.0, 0.0))))
    gaps += [Gap(f"field of view {deg:+g} deg", Perturbation(camera_fovy_deg=deg)) for deg in DEFAULT_FOVY_DEG]
    gaps += [Gap(f"seg edge flips p={p:g}", Perturbation(seg_edge_flip=p)) for p in DEFAULT_EDGE_FLIPS]
    gaps += [Gap(f"seg cube and fingers eroded {k} px", Perturbation(seg_erode_px=k)) for k in DEFAULT_ERODE_PX]
    gaps += [Gap(f"seg cube pixels missed p={p:g}", Perturbation(cube_dropout=p)) for p in DEFAULT_CUBE_DROPOUTS]
    gaps += [Gap(f"disparity noise std {s:g}", Perturbation(disparity_noise=s)) for s in DEFAULT_DISPARITY_STDS]
    gaps.append(Gap("disparity normalised over the crop", Perturbation(disparity_region="crop")))
    for ms in DEFAULT_LATENCIES_MS:
        ticks = max(1, round(ms / 1e3 / spec_period_s))
        gaps.append(Gap(f"action latency {ticks * spec_period_s * 1e3:.0f} ms ({ticks} ticks)", latency_ticks=ticks))
    if (lag := measured.get("lag_ticks")) and lag > 0 and all(
            lag != max(1, round(ms / 1e3 / spec_period_s)) for ms in DEFAULT_LATENCIES_MS):
        gaps.append(Gap(f"action latency {lag} ticks (recorded lag)", latency_ticks=lag))
    for deg in DEFAULT_JOINT_OFFSETS_DEG:
        gaps.append(Gap(f"joint offsets {deg:g} deg", Perturbation(joint_offset_deg=(deg, -deg, deg, -deg, deg, 0.0))))
    for m in matches or []:
        gaps.append(Gap(f"{m.name} as recorded: {m.perturbation.describe().split(': ', 1)[1]} "
                        f"({m.achieved:.2f} on the twin vs {m.measured:.2f} recorded)", m.perturbation))
    return gaps


def standin_gaps(world: StandIn, measured: dict | None = None, networks_alone: bool = True,
                 only: list[str] | None = None) -> list[Gap]:
    """Rows in the stand-in: its networks with no gap (for a policy that sees pixels: what its
    networks alone cost, which every later row's cost against the nominal twin includes), each gap
    of ``world`` alone, every gap at once, and each arm gap at the amount a report measured
    (``measured["arm"]``, from :func:`read_report`). ``only``: just these gaps' rows (alone and as
    measured), not every gap at once."""
    names = [name for name in world.gaps if only is None or name in only]
    rows = [Gap(NETWORKS_ROW, standin=StandIn({}, world.seed))] if networks_alone else []
    rows += [Gap(f"stand-in: {name} alone", standin=world.alone(name)) for name in names]
    if only is None:
        rows.append(Gap("stand-in: every gap", standin=world))
    for name, amount in (measured or {}).get("arm", {}).items():
        if only is not None and name not in only:
            continue
        values = ", ".join(f"{k} {_short(v)}" for k, v in dataclasses.asdict(amount).items())
        rows.append(Gap(f"stand-in: {name} as measured ({values})", standin=StandIn({name: amount}, world.seed)))
    return rows


def _short(value: object) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_short(v) for v in value) + ")"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def read_report(path: str | Path) -> dict:
    """The measured amounts of a ``compare-sim`` report.json, where it has them: ``period_s`` (the
    recorded p50), ``finger_shift_px`` (the largest mean finger shift) and ``finger_shift`` (the mean
    dx, dy), ``iou`` (per class), ``rel_error`` (disparity), ``lag_ticks`` (the recorded joints
    behind the twin's replay of their targets), ``arm`` (gap name -> the stand-in's gap at the
    amount an arm finding measured) and ``findings`` (each finding's name and the stand-in gaps it
    names, where any names one)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise So101Error(f"{path}: cannot read the report ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise So101Error(f"{path}: not JSON; give the report.json of 'so101 compare-sim --out'") from None
    timing = data.get("timing") if isinstance(data, dict) else None
    if not isinstance(timing, dict) or "p50_s" not in timing or not isinstance(data.get("finger_shifts"), list):
        raise So101Error(f"{path}: not a compare-sim report (the report.json of 'so101 compare-sim --out')")
    out: dict = {}
    if (p50 := _amount(path, "timing.p50_s", timing["p50_s"], low=0.0, open_low=True)) is not None:
        out["period_s"] = p50
    shifts = [s for s in [_shift(path, i, raw) for i, raw in enumerate(data["finger_shifts"])] if s is not None]
    if shifts:
        largest = max(shifts, key=lambda s: math.hypot(*s))
        out["finger_shift_px"] = math.hypot(*largest)
        out["finger_shift"] = (float(np.mean([s[0] for s in shifts])), float(np.mean([s[1] for s in shifts])))
    iou = _section(path, data, "segmentation").get("iou")
    if isinstance(iou, dict):
        values = {str(k): _amount(path, f"segmentation.iou.{k}", v, low=0.0, high=1.0) for k, v in iou.items()}
        out["iou"] = {k: v for k, v in values.items() if v is not None}
    if (rel := _amount(path, "disparity.rel_error", _section(path, data, "disparity").get("rel_error"),
                       low=0.0)) is not None:
        out["rel_error"] = rel
    joints = _section(path, data, "dynamics").get("joints")
    if isinstance(joints, list):
        lags = [_amount(path, f"dynamics.joints[{i}].lag_ticks", j.get("lag_ticks"), integer=True)
                for i, j in enumerate(joints) if isinstance(j, dict)]
        if lags := [int(v) for v in lags if v is not None]:
            out["lag_ticks"] = max(lags)
    if arm := _arm_amounts(path, data.get("findings")):
        out["arm"] = arm
    named = [{"name": f["name"], "gaps": [g for g in f["gaps"] if isinstance(g, str)]}
             for f in data.get("findings") or [] if isinstance(f, dict) and isinstance(f.get("name"), str)
             and isinstance(f.get("gaps"), list)]
    if any(f["gaps"] for f in named):
        out["findings"] = named
    return out


def _arm_amounts(path: Path, findings: object) -> dict:
    """The arm gaps a report's findings measured, as the stand-in's gaps at those amounts, checked as
    a stand-in file's are (one line for a damaged report)."""
    from so101_sim2real.sim.standin import KINDS, check_gap

    out = {}
    for i, finding in enumerate(findings if isinstance(findings, list) else []):
        if not isinstance(finding, dict) or not isinstance(finding.get("evidence"), dict):
            continue
        gaps, amounts = finding.get("gaps"), finding["evidence"].get("amounts")
        if amounts is None:
            continue
        if not (isinstance(gaps, list) and len(gaps) == 1 and isinstance(gaps[0], str) and gaps[0] in KINDS["arm"]):
            raise So101Error(f"{path}: findings[{i}] has amounts but names {gaps!r}, not one of the arm's gaps "
                             f"({', '.join(KINDS['arm'])}); write the report again")
        out[gaps[0]] = check_gap(gaps[0], amounts, f"{path}: findings[{i}].evidence.amounts")
    return out


def _section(path: Path, data: dict, name: str) -> dict:
    """A part of the report, {} where it is absent or null (a report of a recording without it)."""
    part = data.get(name)
    if part is None:
        return {}
    if not isinstance(part, dict):
        raise So101Error(f"{path}: {name} is {part!r}, not the section 'so101 compare-sim --out' writes")
    return part


def _shift(path: Path, i: int, shift: object) -> tuple[float, float] | None:
    """One finger's mean (dx, dy), or None where the report has no shift for it."""
    if not isinstance(shift, dict):
        raise So101Error(f"{path}: finger_shifts[{i}] is {shift!r}, not a finger's shift")
    dx = _amount(path, f"finger_shifts[{i}].mean_dx", shift.get("mean_dx"))
    dy = _amount(path, f"finger_shifts[{i}].mean_dy", shift.get("mean_dy"))
    return None if dx is None or dy is None else (dx, dy)


def _amount(path: Path, name: str, value: object, low: float | None = None, high: float | None = None,
            open_low: bool = False, integer: bool = False) -> float | None:
    """A measured amount of the report: None where it was not measured (null), else a finite number
    in range; anything else is a damaged report, named rather than silently left out."""
    if value is None:
        return None
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
            or (low is not None and (value <= low if open_low else value < low))
            or (high is not None and value > high) or (integer and not float(value).is_integer())):
        raise So101Error(f"{path}: {name} is {value!r}, not a measured amount 'so101 compare-sim --out' writes "
                         f"(a finite number{_range(low, high, open_low, integer)}); write the report again")
    return float(value)


def _range(low: float | None, high: float | None, open_low: bool, integer: bool) -> str:
    if integer:
        return ", whole"
    if low is not None and high is not None:
        return f" from {low:g} to {high:g}"
    if low is not None:
        return f" {'above' if open_low else 'at least'} {low:g}"
    return ""


# ------------------------------------------------------------------ the runs


def _run_row(opts: InferOptions, gap: Gap, on_episode: Callable[[], None] | None,
             standin_where: RunDescription | None = None) -> int:
    """Successes of one row's episodes, built exactly as ``so101 infer`` builds its run."""
    from so101_sim2real.control.infer import build
    from so101_sim2real.control.runner import Runner

    if gap.standin is not None:  # the stand-in is seen through real perception, where the policy sees pixels
        row_opts = replace(opts, where=replace(standin_where or opts.where, standin=gap.standin))
    else:
        row_opts = replace(opts, where=replace(opts.where, world=replace(gap.perturbation, seed=opts.seed)))
    env, pilot, _, _ = build(row_opts)
    try:
        if gap.latency_ticks:
            pilot = LatePilot(pilot, gap.latency_ticks)
        counted = (lambda _: on_episode()) if on_episode else None
        runner = Runner(env, pilot, max_steps=opts.max_steps, on_episode=counted)
        summary = runner.run([opts.seed + i for i in range(opts.episodes)])
    finally:
        env.close()
    if summary.interrupted:
        raise KeyboardInterrupt
    return sum(bool(e.success) for e in summary.episodes)


def score_row(nominal: GapResult, row: GapResult) -> GapResult:
    """``row`` with its cost against ``nominal`` in percentage points and that cost's standard error."""
    p0, p = nominal.success, row.success
    se = math.sqrt(p0 * (1 - p0) / nominal.episodes + p * (1 - p) / row.episodes)
    return replace(row, cost_points=100.0 * (p0 - p), stderr_points=100.0 * se)


def sensitivity(opts: InferOptions, gaps: list[Gap], on_episode: Callable[[], None] | None = None,
                report: str | None = None, standin_where: RunDescription | None = None,
                findings: list[dict] | None = None) -> SensitivityReport:
    """Run the nominal twin and each gap over ``opts``'s seeds (an :class:`InferOptions` on the
    twin) and rank the gaps by the success they cost. ``standin_where``: the run the stand-in's
    rows take (its perception); ``opts``'s where not given. ``findings``: a report's (see
    :func:`read_report`), ranked by what their gaps' rows cost."""
    if opts.where.robot.kind != "sim":
        raise So101Error("the gap budget runs in the twin: @robot sim")
    n = opts.episodes
    nominal = GapResult("nominal twin", _run_row(opts, Gap("nominal twin"), on_episode), n)
    rows = [score_row(nominal, GapResult(g.name, _run_row(opts, g, on_episode, standin_where), n)) for g in gaps]
    rows.sort(key=lambda r: -r.cost_points)  # stable: equal costs keep the default order
    ckpt = opts.where.policy.ckpt
    assert ckpt is not None  # every row above ran it (build loads it)
    pilot = ckpt if opts.where.scripted else Path(ckpt).name
    ranked = rank_findings(findings or [], rows)
    return SensitivityReport(pilot, [opts.seed + i for i in range(n)], nominal, rows, report, ranked)


# ------------------------------------------------------------------ the output


def render_table(rep: SensitivityReport) -> list[str]:
    """The rows as a table sorted by cost, with the noise floor stated."""
    width = max(len(r.name) for r in [rep.nominal, *rep.rows])
    nom = rep.nominal
    lines = [f"{rep.pilot}: success under one gap at a time, {len(rep.seeds)} episodes each "
             f"(seeds {rep.seeds[0]}-{rep.seeds[-1]})",
             f"  {'gap':<{width}}  {'success':>8}  {'cost pts':>9}  {'+-se':>6}  {'episodes':>8}",
             f"  {nom.name:<{width}}  {nom.success:>8.0%}  {'-':>9}  {'-':>6}  {nom.episodes:>8}"]
    lines += [f"  {r.name:<{width}}  {r.success:>8.0%}  {r.cost_points:>+9.0f}  {r.stderr_points:>6.0f}  "
              f"{r.episodes:>8}" for r in rep.rows]
    lines.append(f"with {len(rep.seeds)} episodes a cost under ~{rep.noise_points:.0f} points is noise")
    if rep.findings:
        lines.append("the report's findings, costliest first (what their gap costs here):")
        lines += [f"  {f.cost_points:>+4.0f} pts  {f.name} ({f.row})" for f in rep.findings]
    return lines


def plot(rep: SensitivityReport, path: Path) -> None:
    """A horizontal bar per gap, its cost in points, the most costly on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = rep.rows[::-1]  # barh draws bottom-up
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.5))
    ax.barh([r.name for r in rows], [r.cost_points for r in rows], xerr=[r.stderr_points for r in rows],
            color=["tab:red" if r.cost_points > 0 else "tab:gray" for r in rows])
    ax.axvline(rep.noise_points, ls="--", color="k", lw=0.8, label=f"noise (~{rep.noise_points:.0f} pts)")
    ax.set(xlabel="success cost vs nominal twin (percentage points)",
           title=f"{rep.pilot}: nominal success {rep.nominal.success:.0%}, {len(rep.seeds)} episodes")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(rep: SensitivityReport, out: Path) -> None:
    """``sensitivity.json`` and ``sensitivity.png`` in ``out``."""
    from so101_sim2real.files import write_file

    write_file(out / "sensitivity.json", json.dumps(rep.to_dict(), indent=2))  # the folder too; one-line errors
    plot(rep, out / "sensitivity.png")

