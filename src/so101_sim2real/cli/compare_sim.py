"""``so101 compare-sim``: a recording replayed through the twin, measured and diagnosed.

Registered on the main app by app.py (this module never imports app.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer.core import TyperCommand

from so101_sim2real.cli import PLAIN
from so101_sim2real.errors import So101Error

if TYPE_CHECKING:
    from typer._click.core import Command, Context  # typer's bundled click, whose classes typer's derive from

    from so101_sim2real.compare.pictures import EpisodeVideo
    from so101_sim2real.compare.replay import ReplayReport
    from so101_sim2real.control.recording import Recording
    from so101_sim2real.geometry.rig_file import RigGeometry
    from so101_sim2real.sim.standin import StandIn


def _open(folder: Path) -> Recording:
    from so101_sim2real.control.recording import Recording

    if not folder.exists():
        raise So101Error(f"{folder}: no such recording folder")
    if not folder.is_dir():
        raise So101Error(f"{folder}: not a folder; give a recording folder (infer --record DIR)")
    if (folder / "episodes" / "recording.json").is_file() and not (folder / "recording.json").exists():
        folder = folder / "episodes"  # a HIL-SERL run folder: its episodes are a recording
    return Recording(folder)


def _geometry(rig: Path | None, rec: Recording) -> tuple[RigGeometry | None, str | None]:
    """The camera the twin sees through: ``--rig``, else a run folder's own copy, else the sim's guess."""
    from so101_sim2real.control.env import load_rig_file

    if rig is None and rec.folder.name == "episodes" and (rec.folder.parent / "rig.yaml").is_file():
        rig = rec.folder.parent / "rig.yaml"
    geometry = load_rig_file(rig)
    return geometry, f"twin camera: {geometry.describe()} ({rig})" if geometry is not None else None


def _headline(report: ReplayReport) -> list[str]:
    def num(v: float | None, fmt: str = ".3f") -> str:
        return "-" if v is None else format(v, fmt)

    seg, disp, t = report.segmentation, report.disparity, report.timing
    lines = [f"{report.recording} episode {report.episode}: {report.ticks} ticks replayed through the twin",
             f"  {'class':<16}{'IoU':>8}"]
    lines += [f"  {name:<16}{num(iou):>8}" for name, iou in seg.iou.items()]
    lines += [f"  {'pixel agreement':<16}{num(seg.agreement):>8}",
              f"  disparity (agreeing pixels): Spearman {num(disp.spearman)}, median-scaled rel. error "
              f"{num(disp.rel_error)}; by depth band " + ", ".join(f"{k} {num(v)}" for k, v in disp.by_band.items()),
              f"  period p50 {num(t.p50_s and t.p50_s * 1e3, '.1f')} ms, p95 {num(t.p95_s and t.p95_s * 1e3, '.1f')} "
              f"ms, jitter {num(t.jitter_s and t.jitter_s * 1e3, '.1f')} ms; spec {t.spec_period_s * 1e3:.1f} ms"]
    if report.cube.source != "recorded":
        c = report.cube
        assert c.position is not None  # fitted or nominal: one position for the episode
        lines.append(f"  cube not recorded: {c.source} at ({', '.join(f'{v:.3f}' for v in c.position)}) m"
                     + (f", IoU {c.iou:.2f} at tick {c.tick}" if c.iou is not None else ""))
    if report.dynamics is not None:
        worst = max(report.dynamics.joints, key=lambda j: j.rms_error_rad)
        lines.append(f"  targets replayed open loop: tracking RMS up to {worst.rms_error_rad:.4f} rad ({worst.name}); "
                     f"{report.dynamics.lag_words()}")
    if not report.findings:
        lines.append("no findings: the recording matches the twin")
    lines += [f"finding: {f.line()}" for f in report.findings]
    return lines


def _plot_iou(report: ReplayReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    per_tick = np.array([[np.nan if v is None else v for v in row] for row in report.segmentation.per_tick_iou],
                        dtype=float).reshape(report.ticks, -1)
    fig, ax = plt.subplots(figsize=(8, 4))
    for k, name in enumerate(report.segmentation.classes):
        if np.isfinite(per_tick[:, k]).any():
            ax.plot(per_tick[:, k], label=name)
    ax.set(xlabel="tick", ylabel="IoU (recorded vs twin)", ylim=(0, 1.02), title=f"episode {report.episode}")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _write(report: ReplayReport, out: Path, channels: list[str]) -> None:
    from so101_sim2real.compare.html import write_page
    from so101_sim2real.files import write_file

    write_file(out / "report.json", json.dumps(report.to_dict(), indent=2))  # the folder too; one-line errors
    _plot_iou(report, out / "iou.png")
    write_page(report, channels, out)


def _video(out: Path, channels: list[str], rec: Recording) -> EpisodeVideo:
    from so101_sim2real.compare.pictures import EpisodeVideo

    period = float(rec.meta.get("period_s") or rec.spec.control.period_s)
    return EpisodeVideo(out, channels, fps=min(1.0 / period, 50.0))


def compare_sim(
    recording: Annotated[Path, typer.Argument(help="A recording folder (so101 infer --record DIR), or a "
                                                   "HIL-SERL run folder (its episodes).")],
    episode: Annotated[int, typer.Option("--episode", help="Which episode (its position, from 0).")] = 0,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write index.html (one page, offline), "
                                                              "compare.mp4, report.json and iou.png here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with every metric.")] = False,
    rig: Annotated[Optional[Path], typer.Option("--rig", help="A rig.yaml or camera.yaml: the twin sees through "
                                                              "this measured camera (a run folder's own rig.yaml "
                                                              "is used without it).")] = None,
) -> None:
    """Replay a recording through the twin and say where they differ.

    Each tick poses the twin at the recorded joints (and the cube: recorded, or
    fitted to the first frames) and compares its observation with the recorded
    one: per-class IoU, disparity rank correlation and error (by depth band), the
    control period, the 18-D state, the recorded targets replayed open loop, and
    commanded against measured end-effector motion; then names the mismatches it
    recognises, each with what to run next.
    'so101 compare-sim sensitivity --help': the gap budget in the twin.
    """
    from tqdm import tqdm

    from so101_sim2real.compare.episode import load_episode
    from so101_sim2real.compare.pictures import check_out
    from so101_sim2real.compare.replay import replay

    if out is not None:
        check_out(out)
    rec = _open(recording)
    arrays = load_episode(rec, episode)
    geometry, rig_note = _geometry(rig, rec)
    channels = list(rec.spec.observation.channels)
    video = _video(out, channels, rec) if out is not None else None  # the inputs are good: now make --out
    bar = tqdm(unit="tick", file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)

    def tick(done: int, total: int) -> None:
        bar.total = total
        bar.update(1)

    done = False
    try:
        report = replay(rec, episode, on_tick=tick, on_frames=video.add if video is not None else None,
                        geometry=geometry, arrays=arrays)
        done = True
    finally:
        bar.close()
        if video is not None:
            video.close(keep=done)
    if out is not None:
        _write(report, out, channels)
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
        return
    if rig_note:
        typer.echo(rig_note)
    for line in _headline(report):
        typer.echo(line)
    if out is not None:
        typer.echo(f"report in {out}/")


def sensitivity(
    ckpt: Annotated[str, typer.Option("--ckpt", help="A checkpoint (as for so101 infer), or 'scripted' for "
                                                     "the scripted expert.")],
    episodes: Annotated[int, typer.Option("--episodes", help="Episodes per row (the same seeds in each).")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first episode.")] = 0,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Cut episodes shorter than the "
                                                                         "spec's limit.")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="A compare-sim report.json: rows at its "
                                                                    "measured amounts too.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write sensitivity.json and sensitivity.png "
                                                              "here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="Allow a pickle to run code while "
                                                                      "loading the checkpoint.")] = False,
    standin: Annotated[Optional[Path], typer.Option("--standin", help="A stand-in world (configs/standin.yaml): "
                                                                      "its rows instead of the twin's, each gap "
                                                                      "alone and every gap, seen through real "
                                                                      "perception.")] = None,
    seg_ckpt: Annotated[Optional[str], typer.Option("--seg-ckpt", help="With --standin, for a policy that sees "
                                                                       "pixels: the segmentation network (so101 "
                                                                       "seg train).")] = None,
    depth_model: Annotated[Optional[str], typer.Option("--depth-model", help="With --standin: the depth network "
                                                                             "(so101 depth fit).")] = None,
    gaps: Annotated[Optional[str], typer.Option("--gaps", help="With --standin: only these gaps' rows, comma-"
                                                               "separated (e.g. the ones a report named: a row "
                                                               "is --episodes episodes).")] = None,
) -> None:
    """The gap budget: which sim-to-real gap costs the policy how much success.

    In the twin, one gap at a time (control period, camera shift, tilt and
    field of view, segmentation edge flips, erosion and missed cube pixels,
    disparity noise and normalisation region, action latency, joint calibration
    offsets), the policy runs the same seeded episodes as on the nominal twin;
    the gaps are ranked by the success they cost, in percentage points. With
    --report, rows are added at the amounts that report measured: the recorded
    period and lag, and segmentation noise, disparity noise and a camera tilt
    matched on the twin's frames to the recorded IoU, error and finger shift.
    With --standin, the rows are the stand-in world's instead: its networks with
    no gap, each gap alone, every gap, and (with --report) each arm gap at the
    amount the report measured, and the report's findings ranked by what their
    gaps cost.
    """
    from tqdm import tqdm

    from so101_sim2real.compare import sensitivity as S
    from so101_sim2real.compare.gap_match import measured_gaps
    from so101_sim2real.control.description import describe
    from so101_sim2real.control.infer import InferOptions
    from so101_sim2real.spec import default_spec

    if episodes < 1:
        raise So101Error("--episodes must be at least 1")
    if standin is None and (seg_ckpt or depth_model or gaps):
        raise So101Error("--seg-ckpt, --depth-model and --gaps are the stand-in's: give --standin too")
    measured = S.read_report(report) if report is not None else None
    spec = default_spec()
    opts = InferOptions(describe(ckpt=ckpt, trust_pickle=trust_pickle), episodes=episodes, seed=seed,
                        max_steps=max_steps)
    standin_where = None
    if standin is not None:
        from so101_sim2real.sim.standin import load_standin

        world = load_standin(standin)
        pixels = ckpt != "scripted"
        if pixels and not (seg_ckpt and depth_model):
            raise So101Error("a policy sees the stand-in through its networks: give --seg-ckpt (so101 seg train) "
                             "and --depth-model (so101 depth fit)")
        standin_where = describe(ckpt=ckpt, trust_pickle=trust_pickle, **(
            {"perception": "real", "seg_ckpt": seg_ckpt, "depth_model": depth_model} if pixels else {}))
        only = _gap_names(gaps, world) if gaps is not None else None
        rows = S.standin_gaps(world, measured, networks_alone=pixels, only=only)
    else:
        matches = measured_gaps(spec, measured) if measured else []
        rows = S.default_gaps(spec.control.period_s, measured, matches)
    bar = tqdm(total=(len(rows) + 1) * episodes, unit="episode", file=sys.stderr, disable=not sys.stderr.isatty(),
               leave=False)

    def episode_done() -> None:
        bar.update(1)

    try:
        rep = S.sensitivity(opts, rows, on_episode=episode_done, report=str(report) if report is not None else None,
                            standin_where=standin_where,
                            findings=(measured or {}).get("findings") if standin is not None else None)
    finally:
        bar.close()
    if out is not None:
        S.write(rep, out)
    if as_json:
        typer.echo(json.dumps(rep.to_dict()))
        return
    for line in S.render_table(rep):
        typer.echo(line)
    if out is not None:
        typer.echo(f"sensitivity.json and sensitivity.png in {out}/")


def _gap_names(text: str, world: StandIn) -> list[str]:
    """--gaps NAME,...: each one of the world's gaps, or one line naming the one that is not."""
    from so101_sim2real.errors import did_you_mean

    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in world.gaps:
            raise So101Error(f"--gaps {name}: not a gap of this world{did_you_mean(name, list(world.gaps))} (its gaps: "
                             f"{', '.join(world.gaps)})")
    if not names:
        raise So101Error("--gaps: name at least one of the world's gaps")
    return names


class _CompareSim(TyperCommand):
    """``compare-sim RECORDING`` and ``compare-sim sensitivity``: a positional argument and a
    subcommand cannot share one click group, so a first argument ``sensitivity`` hands the rest
    of the line to that command (a recording folder of that name: ``./sensitivity``)."""

    commands: dict[str, Command] = {}  # read by help walkers, as a group's

    def make_context(self, info_name: str | None, args: list[str], parent: Context | None = None,
                     **extra: Any) -> Context:
        if args and args[0] == "sensitivity":
            sub = self.commands["sensitivity"]
            return sub.make_context(f"{info_name} sensitivity", list(args[1:]), parent=parent, **extra)
        return super().make_context(info_name, args, parent=parent, **extra)


def register(app: typer.Typer) -> None:
    """Add ``compare-sim`` (and its ``sensitivity``) to the main app."""
    sub = typer.Typer(add_completion=False, **PLAIN)
    sub.command("sensitivity")(sensitivity)
    _CompareSim.commands = {"sensitivity": typer.main.get_command(sub)}
    app.command("compare-sim", cls=_CompareSim)(compare_sim)
