"""``finish_frame``: the one function that turns (seg ids, disparity) into a policy frame.

Sim (MuJoCo segmentation + depth) and real (EfficientViT + Depth Anything) both end
here, so the crop, the class table, the disparity normalisation region and the
interpolations are the spec's and cannot drift apart (docs/reference.md section 7, item 9).
"""

from __future__ import annotations

import cv2
import numpy as np

from so101_sim2real.errors import ObservationError
from so101_sim2real.spec import ObservationSpec

_INTERPOLATION = {"nearest": cv2.INTER_NEAREST, "area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR,
                  "cubic": cv2.INTER_CUBIC}


def center_crop_box(height: int, width: int, mode: str) -> tuple[slice, slice]:
    """Rows and columns kept by the spec's crop (``center_square`` keeps min(H, W))."""
    if mode == "none":
        return slice(0, height), slice(0, width)
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return slice(top, top + side), slice(left, left + side)


def _floating(a: np.ndarray) -> np.ndarray:
    """Keep float32 maps in float32, the dtype the training wrapper computed in (and no
    float64 copy of a 640x480 map per frame); anything else becomes float64."""
    a = np.asarray(a)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)


def depth_to_disparity(depth_m: np.ndarray, epsilon_m: float) -> np.ndarray:
    """Metric depth -> inverse depth (bigger = nearer), as the sim computed it."""
    depth = _floating(depth_m)
    return 1.0 / (depth + depth.dtype.type(epsilon_m))


def real_to_sim_ids(real_ids: np.ndarray, table: list[int]) -> np.ndarray:
    """Map a real segmentation model's class ids to the sim ids the policy knows."""
    lut = np.asarray(table, dtype=np.uint8)
    real_ids = np.asarray(real_ids)
    if real_ids.size and (real_ids.min() < 0 or real_ids.max() >= len(lut)):
        raise ObservationError(f"real segmentation ids span {real_ids.min()}..{real_ids.max()}, "
                               f"the spec's table covers 0..{len(lut) - 1}")
    return lut[real_ids]


def _minmax_uint8(disparity: np.ndarray) -> np.ndarray:
    lo, hi = disparity.min(), disparity.max()
    # A flat map is all "near", as the training pipeline had it.
    scaled = (disparity - lo) / (hi - lo) if hi - lo > 1e-6 else np.ones_like(disparity)
    return (scaled * 255).astype(np.uint8)  # truncation, as both of the user's pipelines did


def finish_frame(spec: ObservationSpec, seg_ids: np.ndarray, disparity: np.ndarray) -> np.ndarray:
    """Source-resolution sim class ids and disparity -> ``(channels, H, W)`` uint8.

    ``seg_ids`` are sim ids (map real ids with :func:`real_to_sim_ids` first);
    ``disparity`` is any inverse-depth map, near = bigger, at the same resolution.
    """
    seg_ids, disparity = np.asarray(seg_ids), _floating(disparity)
    if seg_ids.shape != disparity.shape or seg_ids.ndim != 2:
        raise ObservationError(f"seg {seg_ids.shape} and disparity {disparity.shape} must be the same (H, W)")
    n_classes = len(spec.segmentation.classes)
    if seg_ids.size and (seg_ids.min() < 0 or seg_ids.max() >= n_classes):
        raise ObservationError(f"seg ids span {seg_ids.min()}..{seg_ids.max()}, sim ids are 0..{n_classes - 1}")
    height, width = seg_ids.shape
    rows, cols = center_crop_box(height, width, spec.crop)
    disp = spec.disparity
    if disp.normalise_region == "full_frame":  # as the training observations were made
        disp_u8 = _minmax_uint8(disparity)[rows, cols]
    else:
        disp_u8 = _minmax_uint8(disparity[rows, cols])
    size = (spec.image_size[1], spec.image_size[0])  # cv2 takes (W, H)
    channels = {
        "seg": cv2.resize(seg_ids[rows, cols].astype(np.uint8), size,
                          interpolation=_INTERPOLATION[spec.segmentation.interpolation]),
        "disparity": cv2.resize(disp_u8, size, interpolation=_INTERPOLATION[disp.interpolation]),
    }
    missing = [c for c in spec.channels if c not in channels]
    if missing:
        raise ObservationError(f"finish_frame builds seg and disparity channels; the spec asks for {missing}")
    return np.stack([channels[c] for c in spec.channels])
