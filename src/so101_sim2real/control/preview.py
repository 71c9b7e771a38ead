"""``so101 perceive``: what the policy will see, as pictures.

Each input image becomes one picture of four kinds of panel: the camera image with
the crop the policy sees outlined, the segmentation in class colours over the image,
the disparity (bright = near), and the observation channels at the policy's
resolution, scaled up with nearest neighbour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from so101_sim2real.cameras import CameraExhausted
from so101_sim2real.control.timing import p50_p95
from so101_sim2real.control.video import colour_segmentation, panel, policy_panels
from so101_sim2real.errors import So101Error
from so101_sim2real.interfaces import Camera, Perceived
from so101_sim2real.observation import center_crop_box
from so101_sim2real.perception.real import RealPerception, Timing

if TYPE_CHECKING:
    from so101_sim2real.control.description import RunDescription
    from so101_sim2real.geometry.rig_file import RigGeometry
    from so101_sim2real.spec import Spec


def compose_preview(rgb: np.ndarray, seen: Perceived, channels: list[str], crop: str) -> np.ndarray:
    """Camera (crop outlined) | seg over the image | disparity | the policy's channels."""
    camera = rgb.copy()
    height, width = rgb.shape[:2]
    rows, cols = center_crop_box(height, width, crop)
    cv2.rectangle(camera, (cols.start, rows.start), (cols.stop - 1, rows.stop - 1), (255, 255, 0), 3)
    # Only the crop: the seg channel is cropped, and the fast profile segments nothing else.
    region = rgb[rows, cols]
    seg_height, seg_width = seen.seg_ids.shape
    seg_rows, seg_cols = center_crop_box(seg_height, seg_width, crop)
    colours = cv2.resize(colour_segmentation(seen.seg_ids[seg_rows, seg_cols]), (region.shape[1], region.shape[0]),
                         interpolation=cv2.INTER_NEAREST)
    overlay = cv2.addWeighted(region, 0.45, colours, 0.55, 0.0)
    disp = seen.disparity.astype(np.float64)
    lo, hi = float(disp.min()), float(disp.max())
    grey = ((disp - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(disp)).astype(np.uint8)
    heat = cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    panels = [panel(camera, "camera (policy crop)"), panel(overlay, "segmentation (crop)"),
              panel(heat, "disparity (bright = near)")]
    return np.hstack(panels + policy_panels(seen.frame, channels))


@dataclass(frozen=True)
class PreviewResult:
    """One processed image: where its picture went and how long perception took."""

    index: int
    path: Path | None
    timing: Timing
    class_fractions: dict[str, float]


def frames_of(camera: Camera, limit: int | None) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, rgb)`` until the source runs out or ``limit`` frames were read."""
    index = 0
    while limit is None or index < limit:
        try:
            frame = camera.read()
        except CameraExhausted:
            return
        yield index, frame.rgb
        index += 1


def check_out(out_dir: Path | None) -> None:
    """The pictures' folder can be made (a file in its place, an unwritable parent: refused), before the work."""
    from so101_sim2real.files import writable_folder

    if out_dir is not None and (problem := writable_folder(out_dir)):  # a file in its place too
        raise So101Error(f"@out {out_dir}: cannot write there ({problem})")


def run_preview(perception: RealPerception, camera: Camera, out_dir: Path | None, limit: int | None,
                on_frame: Callable[[PreviewResult], None] | None = None) -> list[PreviewResult]:
    """Perceive every frame of ``camera``; write a picture per frame to ``out_dir``."""
    if out_dir is not None:
        check_out(out_dir)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise So101Error(f"@out {out_dir}: cannot create the folder ({exc.strerror})") from None
    spec = perception.spec
    results = []
    for index, rgb in frames_of(camera, limit):
        seen = perception.perceive(rgb, with_rgb=True)
        path = None
        if out_dir is not None:
            path = out_dir / f"perceive_{index:05d}.png"
            assert seen.rgb is not None  # asked for with_rgb
            picture = compose_preview(seen.rgb, seen, spec.channels, spec.crop)
            if not cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
                raise So101Error(f"{path}: could not write the picture")
        seg = seen.frame[spec.channels.index("seg")]
        fractions = {name: float(np.mean(seg == i)) for i, name in enumerate(spec.segmentation.classes)}
        timing = perception.last_timing
        assert timing is not None  # perceive() just measured it
        result = PreviewResult(index, path, timing, fractions)
        results.append(result)
        if on_frame:
            on_frame(result)
    if not results:
        raise So101Error("the source gave no frames")
    return results


def summarise(results: list[PreviewResult]) -> dict[str, dict[str, float]]:
    """p50 and p95 of each perception stage over the frames, in ms."""
    stages = ("seg_ms", "depth_ms", "finish_ms", "total_ms")
    return {stage: dict(zip(("p50", "p95"), p50_p95([getattr(r.timing, stage) for r in results]), strict=True))
            for stage in stages}


@dataclass
class PreviewSource:
    """The source ``so101 perceive`` reads, opened and checked; ``reopen`` opens it again (a file
    source is read from its start for the backend check)."""

    name: str
    camera: Camera
    reopen: Callable[[], Camera]
    limit: int | None  # frames to read: as asked, else all of a file, 100 of a live camera
    geometry: RigGeometry | None

    def frames(self, count: int) -> list[np.ndarray]:
        """``count`` frames spread over the source, to check a backend on (control.frames)."""
        from so101_sim2real.control.frames import source_frames

        return source_frames(self.camera, count, self.reopen)


def open_source(source: str, where: RunDescription, spec: Spec, frames: int | None) -> PreviewSource:
    """``source`` (an image, a folder, a video, a camera) opened for ``where``'s perception: its lens
    undone with @rig's camera, its frame size checked before any network loads."""
    from so101_sim2real.cameras import OpenCVCamera, check_frame_size, open_camera, undistorted
    from so101_sim2real.control.env import load_rig_file
    from so101_sim2real.geometry.rig_file import check_size

    if frames is not None and frames < 1:
        raise So101Error("@frames must be at least 1")
    geometry = load_rig_file(where.camera.rig)
    if geometry is not None and geometry.calibrated:
        check_size(geometry, spec.observation.source_size)

    def opened() -> Camera:
        camera = open_camera(source, spec.observation.source_size)
        return undistorted(camera, geometry.camera) if geometry is not None else camera

    camera = opened()
    try:
        check_frame_size(camera, spec.observation.source_size, source)
    except BaseException:
        camera.close()
        raise
    live = isinstance(getattr(camera, "camera", camera), OpenCVCamera)
    return PreviewSource(source, camera, opened, frames if frames is not None else (100 if live else None), geometry)


def check_source_backends(src: PreviewSource, spec: Spec, where: RunDescription) -> tuple[list[str], list[str]]:
    """``perceive --check``: every installed backend timed against torch on the source's own frames;
    (one line each, warnings). Closes the source."""
    from so101_sim2real.control.frames import check_backends
    from so101_sim2real.perception.examples import example_sources
    from so101_sim2real.perception.fidelity import CHECK_FRAMES

    try:
        warnings = []
        if examples := example_sources(where.perception.seg_ckpt, where.perception.depth_model):
            warnings.append(f"{' and '.join(examples)}: example weights (random): the timings are those of real "
                            f"weights of these sizes, the fidelity numbers say little about real ones")
        lines = list(check_backends(spec, where.models(), lambda: src.frames(CHECK_FRAMES),
                                    f"frames of {src.name}"))
        return lines, warnings
    finally:
        src.camera.close()


def start_perception(src: PreviewSource, spec: Spec, where: RunDescription) -> tuple[RealPerception, list[str],
                                                                                       list[str]]:
    """The real perception on the source (its backend checked on the source's frames); what
    ``perceive`` says as it starts, and its warnings. Closes the source when it fails."""
    from so101_sim2real.perception.fidelity import CHECK_FRAMES
    from so101_sim2real.perception.load import real_perception_factory

    try:
        perception = real_perception_factory(spec.observation, where.models(),
                                             frames=lambda: src.frames(CHECK_FRAMES))(src.camera)
    except BaseException:
        src.camera.close()
        raise
    p = where.perception
    lines = [f"perceiving {src.name} ({p.profile} profile, {perception.workers} worker(s), {where.policy.device})"]
    if perception.backend_line:
        lines.append(perception.backend_line)
    if src.geometry is not None:
        lines.append(f"camera: {src.geometry.describe()}; " + ("frames undistorted before perception"
                                                               if src.geometry.camera.D.any() else
                                                               "no lens distortion"))
    warnings = []
    if perception.example_models:
        warnings.append(f"{' and '.join(perception.example_models)}: example weights (random): the pictures show "
                        f"the workflow, not a segmentation or a depth")
    return perception, lines, warnings


def frame_line(r: PreviewResult) -> str:
    """One frame as ``perceive`` prints it: each stage's time and each class's share."""
    t = r.timing
    shares = ", ".join(f"{k} {v:.1%}" for k, v in r.class_fractions.items() if k != "background")
    return f"frame {r.index}: seg {t.seg_ms:.1f} ms, depth {t.depth_ms:.1f} ms, total {t.total_ms:.1f} ms; {shares}"


def summary_line(results: list[PreviewResult], out: Path | None) -> str:
    s = summarise(results)["total_ms"]
    return (f"{len(results)} frame(s): end to end p50 {s['p50']:.1f} ms ({1e3 / s['p50']:.1f} Hz), p95 "
            f"{s['p95']:.1f} ms" + (f"; pictures in {out}/" if out else ""))
