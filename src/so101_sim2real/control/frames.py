"""Images to check a perception backend on: the sim twin's wrist camera at seeded resets,
or a few frames of the source ``so101 perceive`` runs on.

The real perception checks an exported backend against torch on these, and
``scripts/bench_perception.py`` times on the twin's. On a real arm the twin's renders
stand in for the camera (the backend is chosen before the arm connects);
``so101 perceive`` checks on the user's own frames.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import numpy as np

from so101_sim2real.errors import So101Error
from so101_sim2real.spec import Spec, default_spec

if TYPE_CHECKING:
    from so101_sim2real.cameras import SeekableCamera
    from so101_sim2real.interfaces import Camera
    from so101_sim2real.perception.real import RealModels


def twin_frames(count: int, spec: Spec | None = None) -> list[np.ndarray]:
    """RGB renders of the twin's wrist camera at the first ``count`` seeded resets."""
    from so101_sim2real.sim.camera import SimCamera
    from so101_sim2real.sim.task import LiftCubeTask

    spec = spec or default_spec()
    task = LiftCubeTask(spec)
    camera = SimCamera(task.model, task.data, spec.observation)
    try:
        frames = []
        for seed in range(count):
            task.reset(seed)
            frames.append(camera.read().rgb)
        return frames
    finally:
        camera.close()


def source_frames(camera: Camera, count: int, reopen: Callable[[], Camera]) -> list[np.ndarray]:
    """``count`` frames of what perception will see, read by a second reader (``reopen()``) so that
    ``camera`` still starts at its first frame: spread over a file or folder, or, where the file
    does not say how long it is, its first frames ``LIVE_GAP`` apart; a live camera's next frames."""
    from so101_sim2real.cameras import CameraExhausted
    from so101_sim2real.perception.fidelity import camera_frames

    if not hasattr(camera, "seek"):  # live: what it shows now
        return camera_frames(camera, count)
    total = cast("SeekableCamera", camera).frame_count  # a file or a folder, as is its second reader
    reader, frames = cast("SeekableCamera", reopen()), []
    try:
        if total is None:
            return camera_frames(reader, count, partial=True)
        n = min(count, total)
        for index in sorted({round(i * (total - 1) / max(1, n - 1)) for i in range(n)}):
            reader.seek(index)  # straight to the frame, nothing decoded on the way
            frames.append(reader.read().rgb)
    except CameraExhausted:  # a header that promised more frames than the file holds: those before
        pass
    finally:
        reader.close()
    return frames


def check_backends(spec: Spec, models: RealModels, images: Callable[[], list[np.ndarray]],
                   shown: str) -> list[str]:
    """'so101 perceive --check': every installed backend timed and checked against torch fp32 on
    ``images()`` (read once the models are known to load), one line each; ``shown`` names them."""
    from so101_sim2real.perception.backends import candidates, check_threads
    from so101_sim2real.perception.depth import load_depth
    from so101_sim2real.perception.fidelity import Thresholds, try_backends
    from so101_sim2real.perception.real import get_profile
    from so101_sim2real.perception.segmentation import load_segmentation

    check_threads(models.threads)
    if not models.seg_ckpt:
        raise So101Error("the check needs @seg_ckpt PATH: the EfficientViT segmentation checkpoint to run")
    seg = load_segmentation(models.seg_ckpt, models.device, trust_pickle=models.trust_pickle)
    depth = load_depth(models.depth_model, models.device)
    frames = images()
    if not frames:
        raise So101Error(f"{shown}: no frames to check the backends on")
    gpu = seg.device.type == "cuda"
    trials = try_backends(seg, depth, spec.observation, get_profile(models.profile), frames,
                          candidates(models.threads, gpu), threads=models.threads)
    t = Thresholds()
    threads = f"{models.threads} thread(s)" if models.threads else "torch's thread count"
    return [f"{models.profile} profile, {len(frames)} {shown}, {threads}; a backend passes with seg agreement >= "
            f"{t.seg_agreement} and disparity Spearman >= {t.disparity_spearman} on its worst frame"] + [
        trial.line() for trial in trials]
