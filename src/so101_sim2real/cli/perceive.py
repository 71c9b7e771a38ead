"""``so101 perceive``: the real perception on images, a video or a camera, as the policy will see it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from so101_sim2real.cli.options import (
    BackendOpt,
    DepthOpt,
    ProfileOpt,
    SegOpt,
    ThreadsOpt,
    TrustOpt,
    _given,
    run_description,
)
from so101_sim2real.cli.progress import _Progress
from so101_sim2real.errors import So101Error
from so101_sim2real.perception import DEFAULT_DEPTH_MODEL


def perceive(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="An image, a folder of images, a video, or a live camera: an index "
                                               "such as 0, or a device such as /dev/video2.")],
    seg_ckpt: SegOpt = None,
    depth_model: DepthOpt = DEFAULT_DEPTH_MODEL,
    profile: ProfileOpt = "fast",
    backend: BackendOpt = "auto",
    perception_threads: ThreadsOpt = None,
    check: Annotated[bool, typer.Option("--check", help="Time every installed backend against torch fp32 on "
                                                        "three frames of SOURCE, print its fidelity numbers, and "
                                                        "stop.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for one side-by-side picture per frame: "
                                                              "camera | segmentation | disparity | the policy's "
                                                              "channels.")] = Path("perceive_out"),
    frames: Annotated[Optional[int], typer.Option("--frames", help="Stop after this many frames (default: all of "
                                                                   "a file or folder, 100 of a camera).")] = None,
    device: Annotated[str, typer.Option("--device", help="Torch device for the networks.")] = "cpu",
    trust_pickle: TrustOpt = False,
    spec: Annotated[Optional[Path], typer.Option("--spec", help="Spec YAML (default: the packaged lift-cube "
                                                               "spec: crop, class table, normalisation).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of timings.")] = False,
    rig: Annotated[Optional[Path], typer.Option("--rig", help="A rig.yaml or camera.yaml: frames are undistorted "
                                                              "with its lens before perception.")] = None,
) -> None:
    """Show what the policy will see: run the real perception on images, a video or a camera.

    Writes one picture per frame to --out and prints per-stage timings (segmentation,
    depth, finish_frame) and the share of each class in the 84x84 observation.
    """
    from so101_sim2real.control.preview import (
        check_out,
        check_source_backends,
        frame_line,
        open_source,
        run_preview,
        start_perception,
        summarise,
        summary_line,
    )
    from so101_sim2real.perception.backends import check_threads
    from so101_sim2real.perception.fidelity import CHECK_FRAMES
    from so101_sim2real.spec import default_spec, load_spec

    if check and (idle := _given(ctx, "out", "backend", "frames", "as_json")):
        raise So101Error(f"{', '.join(idle)}: not with --check (it times every installed backend on "
                         f"{CHECK_FRAMES} frames of SOURCE, prints one line each and writes nothing)")
    where = run_description(ctx, perception="real")
    check_threads(where.perception.threads)
    full_spec = load_spec(spec) if spec else default_spec()
    check_out(out if not check else None)  # cheap, so before the camera and the networks
    src = open_source(source, where, full_spec, frames)
    if check:
        lines, warnings = check_source_backends(src, full_spec, where)
        _say(lines, warnings)
        return
    perception, lines, warnings = start_perception(src, full_spec, where)
    _say(lines, warnings)
    known = getattr(src.camera, "frame_count", None)
    progress = _Progress(min(filter(None, (src.limit, known)), default=None), "frame")
    try:
        results = run_preview(perception, src.camera, out, src.limit,
                              on_frame=lambda r: progress.advance(frame_line(r)))
    finally:
        progress.close()
        perception.close()
    typer.echo(summary_line(results, out))
    if as_json:
        typer.echo(json.dumps({"frames": len(results), "profile": profile, **summarise(results)}))


def _say(lines: list[str], warnings: list[str]) -> None:
    for line in lines:
        typer.echo(line)
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
