"""Where the cube is, for a recording that does not say: fitted to its first frames' cube mask.

A real recording knows the arm's joints but not the cube. The training task puts an
upright cube on the table (no yaw), so two numbers, its x and y, place it. They are
found by Newton steps on the cube mask's centroid: the twin renders the cube where
the current guess says, and the 2x2 Jacobian of the centroid against x and y, taken
by rendering 5 mm away along each, turns the pixel offset into metres. A handful of
steps puts the twin's mask on the recorded one; its IoU says how well.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from so101_sim2real.spec import Spec

FIT_TICKS = 10  # the first ticks searched for a visible cube, before a grasp can move it
MIN_CUBE_PX = 20  # fewer recorded cube pixels give no trustworthy centroid
STEP_M = 0.005  # the Jacobian's finite difference
MAX_MOVE_M = 0.03  # the most one Newton step moves the guess
DONE_PX = 0.25  # centroids this close: the fit is done
MAX_STEPS = 8


@dataclass
class CubePlacement:
    """Where the replay put the cube, and why."""

    source: str  # "recorded" (cube_pos), "fitted" (to a cube mask) or "nominal" (no mask to fit)
    position: list[float] | None = None  # the fitted or nominal position, m; None where recorded per tick
    tick: int | None = None  # the tick the fit used
    iou: float | None = None  # the cube's IoU at that tick after the fit
    steps: int = 0
    area_ratio: float | None = None  # the recorded cube's pixels over the twin's there: its size, squared
    converged: bool = False  # the fit's centroids met within DONE_PX


def _mask(frame: np.ndarray, seg: int, cube_id: int) -> np.ndarray:
    return frame[seg] == cube_id


def _centroid(mask: np.ndarray) -> np.ndarray | None:
    if mask.sum() < MIN_CUBE_PX:
        return None
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def fit_cube(render, frames: np.ndarray, spec: Spec, nominal: tuple[float, float, float]) -> CubePlacement:
    """Fit the cube's x, y to the first of ``frames`` (recorded policy frames) that shows it.

    ``render(tick, cube_pos)`` returns the twin's policy frame at that tick's joints with
    the cube at ``cube_pos``.
    """
    seg = list(spec.observation.channels).index("seg")
    cube_id = list(spec.observation.segmentation.classes).index("cube")
    seen = [(t, c) for t, f in enumerate(frames[:FIT_TICKS]) if (c := _centroid(_mask(f, seg, cube_id))) is not None]
    if not seen:
        return CubePlacement("nominal", list(nominal))
    tick, target = seen[0]
    p = np.array(nominal, dtype=np.float64)

    def centroid(at: np.ndarray) -> np.ndarray | None:
        return _centroid(_mask(render(tick, at), seg, cube_id))

    steps, converged = 0, False
    while steps < MAX_STEPS:
        steps += 1
        here = centroid(p)
        if here is None:  # the guess is out of view: nothing to differentiate
            break
        error = target - here
        if np.linalg.norm(error) < DONE_PX:
            converged = True
            break
        jac = np.empty((2, 2))
        for axis in range(2):
            moved = p.copy()
            moved[axis] += STEP_M
            there = centroid(moved)
            if there is None:
                return CubePlacement("nominal", list(nominal))
            jac[:, axis] = (there - here) / STEP_M
        delta = np.linalg.lstsq(jac, error, rcond=None)[0]
        p[:2] += delta * min(1.0, MAX_MOVE_M / max(float(np.linalg.norm(delta)), 1e-12))
    recorded, fitted = _mask(frames[tick], seg, cube_id), _mask(render(tick, p), seg, cube_id)
    union = (recorded | fitted).sum()
    return CubePlacement("fitted", p.tolist(), tick, float((recorded & fitted).sum() / union) if union else None,
                         steps, float(recorded.sum() / fitted.sum()) if fitted.any() else None, converged)
