"""Camera-like images without a camera: the sim twin's wrist camera at seeded resets.

The real perception checks an exported backend against torch on these (what the arm's
camera sees is the twin's scene, rendered), and ``scripts/bench_perception.py`` times
on them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from so101_sim2real.errors import So101Error
from so101_sim2real.spec import Spec, default_spec

if TYPE_CHECKING:
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


def check_backends(spec: Spec, models: RealModels) -> list[str]:
    """'so101 perceive --check': every installed backend timed and checked against torch fp32 on twin
    renders, one line each."""
    from so101_sim2real.perception.depth import load_depth
    from so101_sim2real.perception.fidelity import CHECK_FRAMES, Thresholds, try_backends
    from so101_sim2real.perception.real import get_profile
    from so101_sim2real.perception.segmentation import load_segmentation

    if not models.seg_ckpt:
        raise So101Error("the check needs @seg_ckpt PATH: the EfficientViT segmentation checkpoint to run")
    seg = load_segmentation(models.seg_ckpt, models.device, trust_pickle=models.trust_pickle)
    depth = load_depth(models.depth_model, models.device)
    images = twin_frames(CHECK_FRAMES, spec)
    trials = try_backends(seg, depth, spec.observation, get_profile(models.profile), images)
    t = Thresholds()
    return [f"{models.profile} profile, {len(images)} twin frames; a backend passes with seg agreement >= "
            f"{t.seg_agreement} and disparity Spearman >= {t.disparity_spearman} on its worst frame"] + [
        trial.line() for trial in trials]
