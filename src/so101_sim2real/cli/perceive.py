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
    _rig_geometry,
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
    from so101_sim2real.cameras import OpenCVCamera, check_frame_size, open_camera, undistorted
    from so101_sim2real.control.frames import check_backends, source_frames
    from so101_sim2real.control.preview import check_out, run_preview, summarise
    from so101_sim2real.geometry.rig_file import check_size
    from so101_sim2real.interfaces import Camera
    from so101_sim2real.perception.backends import check_threads
    from so101_sim2real.perception.examples import example_sources
    from so101_sim2real.perception.fidelity import CHECK_FRAMES
    from so101_sim2real.perception.real import real_perception_factory
    from so101_sim2real.spec import default_spec, load_spec

    if check and (idle := _given(ctx, "out", "backend", "frames", "as_json")):
        raise So101Error(f"{', '.join(idle)}: not with --check (it times every installed backend on "
                         f"{CHECK_FRAMES} frames of SOURCE, prints one line each and writes nothing)")
    check_threads(perception_threads)
    full_spec = load_spec(spec) if spec else default_spec()
    obs_spec = full_spec.observation
    if frames is not None and frames < 1:
        raise So101Error("--frames must be at least 1")
    geometry = _rig_geometry(rig) if rig else None
    if geometry is not None and geometry.calibrated:
        check_size(geometry, obs_spec.source_size)
    models = run_description(ctx, perception="real").models()

    check_out(out if not check else None)  # cheap, so before the camera and the networks

    def opened() -> Camera:
        camera = open_camera(source, obs_spec.source_size)
        return undistorted(camera, geometry.camera) if geometry is not None else camera

    camera = opened()
    try:  # a camera of the wrong size is refused before any network loads
        check_frame_size(camera, obs_spec.source_size, source)
    except BaseException:
        camera.close()
        raise
    limit = frames if frames is not None else (100 if isinstance(getattr(camera, "camera", camera), OpenCVCamera)
                                               else None)
    try:  # backends are checked on the source's own frames
        if check:
            if examples := example_sources(seg_ckpt, depth_model):
                typer.echo(f"warning: {' and '.join(examples)}: example weights (random): the timings are those "
                           f"of real weights of these sizes, the fidelity numbers say little about real ones",
                           err=True)
            own = lambda: source_frames(camera, CHECK_FRAMES, opened)  # noqa: E731 - read once the models load
            for line in check_backends(full_spec, models, own, f"frames of {source}"):
                typer.echo(line)
            camera.close()
            return
        make = real_perception_factory(obs_spec, models,
                                       frames=lambda: source_frames(camera, CHECK_FRAMES, opened))
    except BaseException:
        camera.close()
        raise
    perception = make(camera)
    typer.echo(f"perceiving {source} ({profile} profile, {perception.workers} worker(s), {device})")
    typer.echo(perception.backend_line)
    if geometry is not None:
        typer.echo(f"camera: {geometry.describe()}; " + ("frames undistorted before perception"
                                                         if geometry.camera.D.any() else "no lens distortion"))
    if perception.example_models:
        typer.echo(f"warning: {' and '.join(perception.example_models)}: example weights (random): the pictures "
                   f"show the workflow, not a segmentation or a depth", err=True)

    known = getattr(camera, "frame_count", None)
    progress = _Progress(min(filter(None, (limit, known)), default=None), "frame")

    def show(r) -> None:
        t = r.timing
        shares = ", ".join(f"{k} {v:.1%}" for k, v in r.class_fractions.items() if k != "background")
        progress.advance(f"frame {r.index}: seg {t.seg_ms:.1f} ms, depth {t.depth_ms:.1f} ms, total "
                         f"{t.total_ms:.1f} ms; {shares}")

    try:
        results = run_preview(perception, camera, out, limit, on_frame=show)
    finally:
        progress.close()
        perception.close()
    summary = summarise(results)
    typer.echo(f"{len(results)} frame(s): end to end p50 {summary['total_ms']['p50']:.1f} ms "
               f"({1e3 / summary['total_ms']['p50']:.1f} Hz), p95 {summary['total_ms']['p95']:.1f} ms"
               + (f"; pictures in {out}/" if out else ""))
    if as_json:
        typer.echo(json.dumps({"frames": len(results), "profile": profile, **summary}))
