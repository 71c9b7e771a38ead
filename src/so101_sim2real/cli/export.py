"""``so101 export``: recordings and runs in the formats other tools read."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Optional

import typer

from so101_sim2real.cli import PLAIN

export_app = typer.Typer(help="Recordings and HIL-SERL runs in the formats other tools read (LeRobotDataset v3).",
                         no_args_is_help=True, **PLAIN)


def _bar(episodes: Iterable[int]) -> Iterable[int]:
    from tqdm import tqdm

    return tqdm(episodes, unit="episode", file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)


@export_app.command("lerobot")
def export_lerobot(
    source: Annotated[Path, typer.Argument(help="A recording folder (so101 infer --record DIR) or a HIL-SERL run "
                                                "folder (its episodes).")],
    out: Annotated[Path, typer.Option("--out", help="The dataset folder to write (LeRobotDataset v3).")],
    task: Annotated[Optional[str], typer.Option("--task", help="The task's words for every episode (default: the "
                                                               "spec's episode.task).")] = None,
    calibration: Annotated[Optional[str], typer.Option(
        "--calibration", help="The follower's calibration for observation.joints in LeRobot's units: an id from "
                              "'so101 calibrate joints', a .json, or 'twin' (default: the one the run used; "
                              "'twin' for the sim).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of what was written.")] = False,
) -> None:
    """Write a recording or a run as a LeRobotDataset v3 folder, as LeRobot 0.6 reads it.

    Each control tick is a frame at the fps of the period that ran: the 18-D state, the joints in
    LeRobot's follower units, the policy's 4-D action, the wrist camera as video where it was
    recorded, the seg and disparity channels as lossless images, the reward, done, truncated and
    success, and who was in control (complementary_info.is_intervention). Browse it with LeRobot's
    dataset visualiser, push it with huggingface-cli, or feed it back with 'so101 hilserl train
    --demos DIR'. Layout and features: docs/lerobot.md.
    """
    from so101_sim2real.datasets.export import export_lerobot as write
    from so101_sim2real.datasets.export import open_source, recorded_calibration
    from so101_sim2real.files import check_out_folder

    src = open_source(source)
    check_out_folder(out, force)
    summary = write(src, out, recorded_calibration(src.recording, calibration), task, force, _bar)
    typer.echo(f"wrote {summary.episodes} episodes, {summary.frames} frames at {summary.fps} fps "
               f"(period {summary.period_s * 1000:.0f} ms) of {src.kind} {source} to {summary.out}")
    typer.echo(f"features: {', '.join(summary.features)}")
    if as_json:
        typer.echo(json.dumps({"out": str(summary.out), "kind": summary.kind, "episodes": summary.episodes,
                               "frames": summary.frames, "fps": summary.fps, "features": summary.features,
                               "successes": summary.successes, "interventions": summary.interventions}))
