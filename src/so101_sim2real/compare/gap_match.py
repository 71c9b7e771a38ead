"""The twin's perturbations at the amounts a ``compare-sim`` report measured.

A report says how far a real run is from the twin in its own units (a cube IoU of
0.7, fingers 3 px off, a disparity error of 8 %); the gap budget needs them as
perturbations of the twin. Each is matched on the twin's own frames at a few seeded
reset poses: the noise amount whose IoU (or disparity error) on those frames comes
closest to the measured one, and the camera tilt whose finger shift does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from so101_sim2real.sim.perturb import Perturbation, cube_dropout, seg_edge_noise, seg_erode
from so101_sim2real.spec import Spec

SEEDS = (0, 1, 2, 3)
THIN = ("cube", "static_finger", "moving_finger")
EDGE_FLIPS = tuple(np.round(np.linspace(0.05, 1.0, 20), 2))
ERODE_PX = (1, 2, 3, 4)
DROPOUTS = tuple(np.round(np.linspace(0.05, 0.95, 19), 2))
DISPARITY_STDS = tuple(float(s) for s in range(1, 31))
TILT_PROBE_DEG = 2.0
CLOSE = 0.1  # a noise whose IoU or error lands further than this from the measured one cannot stand for it


@dataclass(frozen=True)
class Match:
    """A perturbation standing for a measured gap, and how close its effect came."""

    name: str
    perturbation: Perturbation
    measured: float
    achieved: float


def reset_frames(spec: Spec, perturbation: Perturbation | None = None) -> list[np.ndarray]:
    """The twin's policy frames at the reset poses of :data:`SEEDS`."""
    from so101_sim2real.control.env import sim_env

    env = sim_env(spec, perturbation=perturbation)
    try:
        frames = []
        for seed in SEEDS:
            env.reset(seed)
            assert env.perception is not None  # the twin always perceives
            frames.append(env.perception.observe().frame.copy())
        return frames
    finally:
        env.close()


def _ious(seg: np.ndarray, ref: np.ndarray, ids: list[int]) -> list[float]:
    out = []
    for k in ids:
        a, b = seg == k, ref == k
        if (union := (a | b).sum()) > 0:
            out.append(float((a & b).sum() / union))
    return out


def _mean_iou(noisy: list[np.ndarray], clean: list[np.ndarray], ids: list[int]) -> float:
    return float(np.mean([v for n, c in zip(noisy, clean, strict=True) for v in _ious(n, c, ids)]))


def _closest(name: str, measured: float, trials: list[tuple[Perturbation, float]]) -> list[Match]:
    """The trial closest to ``measured``, if it is close enough to stand for it."""
    p, achieved = min(trials, key=lambda t: abs(t[1] - measured))
    return [Match(name, p, measured, achieved)] if abs(achieved - measured) <= CLOSE else []


def seg_matches(frames: list[np.ndarray], spec: Spec, iou: dict[str, float | None]) -> list[Match]:
    """Edge flips, erosion and (for the cube) dropout at the measured IoU of the thin classes, those
    that can reach it."""
    classes = list(spec.observation.segmentation.classes)
    seg = [f[list(spec.observation.channels).index("seg")] for f in frames]
    thin = [classes.index(c) for c in THIN if c in classes]
    measured = [v for c in THIN if (v := iou.get(c)) is not None]
    out = []
    if measured:
        target = float(np.mean(measured))
        rng = np.random.default_rng(0)
        flips = [(Perturbation(seg_edge_flip=float(p)),
                  _mean_iou([seg_edge_noise(s, p, rng) for s in seg], seg, thin)) for p in EDGE_FLIPS]
        out += _closest("seg edge flips", target, flips)
        eroded = [(Perturbation(seg_erode_px=k), _mean_iou([seg_erode(s, k, tuple(thin)) for s in seg], seg, thin))
                  for k in ERODE_PX]
        out += _closest("seg erosion", target, eroded)
    if (cube_iou := iou.get("cube")) is not None and "cube" in classes:
        cube, table = classes.index("cube"), classes.index("table")
        rng = np.random.default_rng(0)
        drops = [(Perturbation(cube_dropout=float(p)),
                  _mean_iou([cube_dropout(s, p, cube, table, rng) for s in seg], seg, [cube])) for p in DROPOUTS]
        out += _closest("cube pixels missed", float(cube_iou), drops)
    return out


def disparity_match(frames: list[np.ndarray], spec: Spec, rel_error: float) -> list[Match]:
    """Gaussian disparity noise whose median-scaled relative error matches the measured one."""
    from so101_sim2real.compare.replay import median_scaled_rel_error

    d = [f[list(spec.observation.channels).index("disparity")] for f in frames]
    rng = np.random.default_rng(0)
    trials = []
    for std in DISPARITY_STDS:
        noisy = [np.clip(x + rng.normal(0.0, std, x.shape), 0, 255).round().astype(np.uint8) for x in d]
        trials.append((Perturbation(disparity_noise=std),
                       float(np.mean([median_scaled_rel_error(n, x) for n, x in zip(noisy, d, strict=True)]))))
    return _closest("disparity noise", rel_error, trials)


def _finger_centroids(frames: list[np.ndarray], spec: Spec) -> np.ndarray:
    """(seeds, 2): mean x, y of the finger pixels in each frame."""
    classes = list(spec.observation.segmentation.classes)
    fingers = [classes.index(c) for c in ("static_finger", "moving_finger") if c in classes]
    out = []
    for f in frames:
        ys, xs = np.nonzero(np.isin(f[list(spec.observation.channels).index("seg")], fingers))
        out.append([xs.mean(), ys.mean()] if xs.size else [np.nan, np.nan])
    return np.array(out)


def tilt_match(spec: Spec, nominal: list[np.ndarray], dx_px: float, dy_px: float) -> Match:
    """The camera tilt (about its mount's x and y) that moves the fingers by the measured pixels:
    the shift per degree is measured on the twin, then inverted."""
    base = _finger_centroids(nominal, spec)
    jac = np.empty((2, 2))
    for axis in range(2):
        tilt = [0.0, 0.0, 0.0]
        tilt[axis] = TILT_PROBE_DEG
        moved = _finger_centroids(reset_frames(spec, Perturbation(camera_tilt_deg=(tilt[0], tilt[1], tilt[2]))), spec)
        jac[:, axis] = np.nanmean(moved - base, axis=0) / TILT_PROBE_DEG
    deg = np.linalg.lstsq(jac, np.array([dx_px, dy_px]), rcond=None)[0]
    achieved = float(np.hypot(*(jac @ deg)))
    p = Perturbation(camera_tilt_deg=(float(deg[0]), float(deg[1]), 0.0))
    return Match("camera tilt", p, float(np.hypot(dx_px, dy_px)), achieved)


def measured_gaps(spec: Spec, measured: dict) -> list[Match]:
    """Every perturbation the report's numbers ask for (see ``sensitivity.read_report``)."""
    if not any(k in measured for k in ("iou", "rel_error", "finger_shift")):
        return []
    nominal = reset_frames(spec)
    out = []
    if measured.get("iou"):
        out += seg_matches(nominal, spec, measured["iou"])
    if measured.get("rel_error") is not None and "disparity" in spec.observation.channels:
        out += disparity_match(nominal, spec, measured["rel_error"])
    if measured.get("finger_shift"):
        out.append(tilt_match(spec, nominal, *measured["finger_shift"]))
    return out
