"""Real perception, loaded: both networks from local files or the cache, their backend chosen
(and checked against torch, :mod:`~so101_sim2real.perception.fidelity`), bound to a camera as a
:class:`~so101_sim2real.perception.real.RealPerception`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from so101_sim2real.devices import check_device
from so101_sim2real.errors import So101Error
from so101_sim2real.interfaces import Camera
from so101_sim2real.perception.backends import TORCH, check_threads, parse_backend
from so101_sim2real.perception.depth import load_depth
from so101_sim2real.perception.examples import refuse_on_an_arm
from so101_sim2real.perception.fidelity import camera_frames, choose_backend, confirm_on_camera
from so101_sim2real.perception.real import RealModels, RealPerception, _check_classes, get_profile
from so101_sim2real.perception.segmentation import load_segmentation
from so101_sim2real.spec import ObservationSpec


def real_perception_factory(spec: ObservationSpec, models: RealModels, allow_examples: bool = True,
                            frames: Callable[[], Sequence[np.ndarray]] | None = None,
                            cache: Path | None = None,
                            camera_check: bool = False) -> Callable[[Camera | None], RealPerception]:
    """Load both networks now, from local files or the cache only, so that a bad path fails
    before anything moves; the returned function binds them to a camera. ``allow_examples``
    False (a real arm) refuses the random example weights.

    ``models.backend`` picks where the networks run; any backend but torch is first checked
    against torch on ``frames()`` (the twin's renders; without them ``auto`` stays on torch).
    ``cache``: the exported graphs' folder (default: beside the model cache). ``camera_check``:
    when bound to a camera, check the chosen backend again on a few of its frames (a real
    scene, where ``frames()`` are the twin's renders).
    """
    profile = get_profile(models.profile)
    parse_backend(models.backend)  # a typo or a missing package fails before any network loads
    check_threads(models.threads)
    check_device(models.device)
    if not models.seg_ckpt:
        raise So101Error("real perception needs @seg_ckpt PATH: the EfficientViT segmentation checkpoint your "
                         "Lightning training wrote (e.g. outputs/efficientvit_seg/best.ckpt)")
    seg = load_segmentation(models.seg_ckpt, models.device, trust_pickle=models.trust_pickle)
    _check_classes(seg, spec)
    depth = load_depth(models.depth_model, models.device)
    if not allow_examples:
        refuse_on_an_arm([m.source for m in (seg, depth) if m.example])
    choice = choose_backend(seg, depth, spec, profile, models.backend, frames, cache=cache, threads=models.threads)

    def bind(camera: Camera | None) -> RealPerception:
        chosen = choice
        if camera_check and camera is not None and choice.backend != TORCH:
            chosen = confirm_on_camera(choice, camera_frames(camera), spec, profile, models.backend)
        seg_model, depth_model = chosen.trial.seg, chosen.trial.depth
        assert seg_model is not None and depth_model is not None  # a chosen trial carries its models
        return RealPerception(camera, seg_model, depth_model, spec, profile,
                              backend_line=chosen.line(), threads=models.threads)

    return bind
