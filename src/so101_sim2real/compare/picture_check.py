"""The recorded camera picture against the twin's render at the same pose: what the camera and
the room do that the twin does not.

The policy never sees the RGB, but its perception networks do, and a network trained on
one look errs on another. Each measure compares a recorded frame with the twin's render
of the same pose, on the pixels the twin labels (eroded, so a misplaced edge does not
count), at a few ticks of the episode:

- **colour gain** on the arm's own fingers, whose material no room changes: the camera's
  exposure, gain and white balance;
- **class hue** of the table and the cube against the fingers': other materials (a light
  dims a class more than another, a material changes its hue);
- **shading**: how much the recorded/twin brightness ratio varies across the fingers once
  blurred (the light comes from elsewhere: shading a gain cannot make);
- **noise**: the fine-scale residual of flat regions, recorded against the twin's;
- **blockiness**: steps at the 8x8 block edges of a JPEG, recorded against the twin's;
- **blur**: the sharpness lost on the ticks the camera turns fastest;
- **a foreign object**: the largest blob on the twin's table whose colour the gains cannot
  explain;
- **where things sit**: the optical flow from the twin's render to the recorded frame, fitted
  with a shift, a scale and a radial (lens) term, on the fingers and on the scene apart: the
  fingers ride with the camera, so a scene that moves while they stay is the joints'
  calibration, and a radial term the lens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

TICKS = 8  # frames compared per episode (a twin RGB render with shadows costs ~0.5 s)
ERODE_PX = 6
MIN_PX = 400  # fewer pixels of a class give no trustworthy colour
CLIPPED = 250
SMOOTH_LEVELS = 1.0  # the twin's fine residual below this (grey levels, averaged nearby): smooth table
MIN_SPIN_SPREAD = 0.05  # rad/s between the slowest and fastest tick: below, blur has nothing to compare
DEFAULT_FOCAL_PX = 339.6  # the spec camera's at 640x480
EDGE = 8.0  # grey levels per pixel: an edge the flow can follow
FLOW_POINTS = 4000  # edge pixels per frame and region
MIN_FLOW_POINTS = 200
MAX_FLOW_PX = 30.0
FOREIGN_CHROMA = 0.06  # a table pixel this far from the table's hue (r, g share of the sum) is something else


@dataclass
class FramePair:
    """One tick: the recorded and the twin's RGB ``(H, W, 3)`` uint8, the twin's sim class ids
    ``(H, W)`` and the camera's angular speed then (rad/s)."""

    tick: int
    recorded: np.ndarray
    twin: np.ndarray
    labels: np.ndarray
    spin: float


@dataclass
class PictureMetrics:
    """The picture measures over an episode's sampled ticks (see the module's docstring)."""

    ticks: list[int]
    gain: list[float] | None  # R, G, B: recorded / twin on the fingers (median)
    class_colour: dict[str, list[float] | None] = field(default_factory=dict)  # per class: its hue against the fingers'
    shading: float | None = None  # std of the blurred log brightness ratio on the fingers
    noise: float | None = None  # recorded median fine residual less the twin's on the table, grey levels
    blockiness: float | None = None  # recorded 8x8 edge steps less the twin's, grey levels
    blur: float | None = None  # sharpness of the fastest-turning third / the slowest third (recorded / twin)
    foreign_px: float | None = None  # the largest unexplained blob on the table, in two ticks at least
    flow: dict[str, Registration] = field(default_factory=dict)  # "fingers", "scene": recorded against twin


@dataclass
class Registration:
    """The image motion from the twin's render to the recorded frame, fitted on a region's edges:
    a shift (px), a scale about the centre, a radial term (k1, as OpenCV's lens model) and the share
    of the motion the fit explains."""

    dx_px: float
    dy_px: float
    scale: float
    k1: float
    explained: float
    points: int

    @property
    def shift_px(self) -> float:
        return float(np.hypot(self.dx_px, self.dy_px))


def _mask(labels: np.ndarray, ids: list[int]) -> np.ndarray:
    m = np.isin(labels, ids).astype(np.uint8)
    return cv2.erode(m, np.ones((2 * ERODE_PX + 1,) * 2, np.uint8)).astype(bool)


def _ratio(rec: np.ndarray, twin: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    if mask.sum() < MIN_PX:
        return None
    r, t = rec[mask].astype(np.float64) + 1.0, twin[mask].astype(np.float64) + 1.0
    return np.exp(np.median(np.log(r / t), axis=0))


def _luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)


def _fine(gray: np.ndarray) -> np.ndarray:
    return gray - cv2.GaussianBlur(gray, (0, 0), 1.5)


def _blockiness(gray: np.ndarray) -> float:
    """Mean step across 8x8 block edges less the mean step inside blocks, grey levels (0: no blocks;
    a difference, not a ratio: a flat table has no steps inside to divide by)."""
    dx = np.abs(np.diff(gray, axis=1))
    cols = np.arange(dx.shape[1])
    return float(dx[:, cols % 8 == 7].mean() - dx[:, cols % 8 != 7].mean())


def _sharpness(gray: np.ndarray, mask: np.ndarray) -> float:
    gy, gx = np.gradient(cv2.GaussianBlur(gray, (0, 0), 0.8))
    return float(np.hypot(gx, gy)[mask].mean()) if mask.any() else float("nan")


def picture_metrics(pairs: list[FramePair], classes: list[str], cube_ticks: set[int] | None = None,
                    cube_rgb: tuple[float, ...] | None = None, focal_px: float = DEFAULT_FOCAL_PX) -> PictureMetrics:
    """The measures of :class:`PictureMetrics` over ``pairs`` (``classes``: the sim's, by id). The
    cube's colour is measured on ``cube_ticks`` only (where the recorded cube is where the twin's
    is: a grasp may have moved it, or the twin placed it elsewhere); None: every tick. ``cube_rgb``:
    the twin's cube colour (0-1), whose hue is never a stranger on the table."""
    ids = {name: classes.index(name) for name in classes}
    fingers = [ids[c] for c in ("static_finger", "moving_finger") if c in ids]
    gains = [g for p in pairs if (g := _ratio(p.recorded, p.twin, _mask(p.labels, fingers))) is not None]
    gain = np.median(gains, axis=0) if gains else None
    out = PictureMetrics([p.tick for p in pairs], None if gain is None else gain.tolist())
    for name in ("table", "cube"):
        if name not in ids or gain is None:
            continue
        used = [p for p in pairs if name != "cube" or cube_ticks is None or p.tick in cube_ticks]
        found = [g for p in used if (g := _ratio(p.recorded, p.twin, _mask(p.labels, [ids[name]]))) is not None]
        if found:  # the hue of the class's gain against the fingers': a light dims, a material recolours
            hue = np.median(found, axis=0) / gain
            out.class_colour[name] = (hue / hue.mean()).tolist()
    table = ids.get("table")
    cube_hues = _cube_hues(pairs, ids.get("cube"), cube_ticks)
    if cube_rgb is not None:
        cube_hues.append(_chroma(np.array(cube_rgb) * 255.0))
    shading, noise, blocks, foreign = [], [], [], []
    for p in pairs:
        rec, twin = _luma(p.recorded), _luma(p.twin)
        flat = _mask(p.labels, [table] if table is not None else [])
        own = _mask(p.labels, fingers)
        if own.sum() >= MIN_PX:  # the fingers' plastic is the same in every room: only the light shades it anew
            ratio = np.log(cv2.GaussianBlur(rec, (0, 0), 6) + 1.0) - np.log(cv2.GaussianBlur(twin, (0, 0), 6) + 1.0)
            shading.append(float(ratio[own].std()))
        if flat.sum() >= MIN_PX:
            # the median, not the spread: texture edges are few and large, noise is everywhere and small
            # where the twin's table is smooth: texture, and JPEG's ringing around it, are not noise
            smooth = flat & (cv2.GaussianBlur(np.abs(_fine(twin)), (0, 0), 3) < SMOOTH_LEVELS)
            if smooth.sum() >= MIN_PX:
                level = float(np.mean(gain)) if gain is not None else 1.0  # a brighter camera shows more texture
                noise.append(float(np.median(np.abs(_fine(rec)[smooth]))
                                   - level * np.median(np.abs(_fine(twin)[smooth]))))
            foreign.append(_foreign_px(p, flat, cube_hues, gain))
        blocks.append(_blockiness(rec) - _blockiness(twin))
    out.shading = float(np.median(shading)) if shading else None
    out.noise = float(np.median(noise)) if noise else None
    out.blockiness = float(np.median(blocks)) if blocks else None
    # seen in two ticks at least: an object comes into view and goes, a one-tick blob is a glint. Not
    # judged where the recorded cube is never where the twin's is: a red blob could be the cube.
    if len(foreign) >= 2 and (cube_ticks is None or cube_ticks):
        out.foreign_px = float(sorted(foreign)[-2])
    out.blur = _blur(pairs)
    fingers_ids, scene_ids = fingers, [ids[c] for c in ("background", "table", "cube") if c in ids]
    for name, region in (("fingers", fingers_ids), ("scene", scene_ids)):
        if (fit := register(pairs, region, focal_px)) is not None:
            out.flow[name] = fit
    return out


def _flow_points(p: FramePair, region: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edge pixels of ``region`` (x, y) and the dense optical flow there (u, v), twin -> recorded.
    Both pictures are histogram-equalised first: a brighter camera moves nothing."""
    twin = cv2.equalizeHist(cv2.cvtColor(p.twin, cv2.COLOR_RGB2GRAY))
    rec = cv2.equalizeHist(cv2.cvtColor(p.recorded, cv2.COLOR_RGB2GRAY))
    flow = cv2.calcOpticalFlowFarneback(twin, rec, None, 0.5, 4, 21, 3, 5, 1.1, 0)
    gy, gx = np.gradient(cv2.GaussianBlur(twin.astype(np.float64), (0, 0), 1.5))
    near = cv2.dilate(np.isin(p.labels, region).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    ys, xs = np.nonzero((np.hypot(gx, gy) > EDGE) & near)
    keep = np.random.default_rng(p.tick).permutation(len(xs))[:FLOW_POINTS]
    xs, ys = xs[keep], ys[keep]
    u, v = flow[ys, xs, 0], flow[ys, xs, 1]
    sane = np.hypot(u, v) < MAX_FLOW_PX  # beyond this the flow has lost its match
    return xs[sane], ys[sane], u[sane], v[sane]


def register(pairs: list[FramePair], region: list[int], focal_px: float) -> Registration | None:
    """The shift, scale and radial term that best carry the twin's render of ``region`` onto the
    recorded frames (least squares over the pairs' edge pixels)."""
    rows, motion = [], []
    for p in pairs:
        xs, ys, u, v = _flow_points(p, region)
        h, w = p.labels.shape
        x, y = (xs - (w - 1) / 2) / focal_px, (ys - (h - 1) / 2) / focal_px
        r2 = x * x + y * y
        for axis, c, value in ((0, x, u), (1, y, v)):
            rows.append(np.stack([np.full_like(c, axis == 0), np.full_like(c, axis == 1), c * focal_px,
                                  c * r2 * focal_px], axis=1))
            motion.append(value)
    if not rows or sum(len(m) for m in motion) < 2 * MIN_FLOW_POINTS:
        return None
    a, b = np.concatenate(rows), np.concatenate(motion)
    solution = np.linalg.lstsq(a, b, rcond=None)[0]
    total = float(np.sum(b * b))
    explained = 1.0 - float(np.sum((b - a @ solution) ** 2)) / total if total > 0 else 0.0
    dx, dy, scale, k1 = (float(v) for v in solution)
    return Registration(dx, dy, scale, k1, explained, len(b) // 2)


def _chroma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 2): the red and green shares of each pixel's sum: its hue, not its brightness."""
    x = rgb.astype(np.float64) + 1.0
    return x[..., :2] / x.sum(axis=-1, keepdims=True)


def _cube_hues(pairs: list[FramePair], cube: int | None, cube_ticks: set[int] | None) -> list[np.ndarray]:
    """The recorded cube's hue where the twin's cube is (before a grasp moves it): the cube, lifted
    later, is no stranger."""
    if cube is None:
        return []
    masks = [(p, m) for p in pairs if (m := _mask(p.labels, [cube])).sum() >= MIN_PX // 4]
    placed = [(p, m) for p, m in masks if cube_ticks is None or p.tick in cube_ticks]
    return [np.median(np.concatenate([_chroma(p.recorded)[m] for p, m in placed]), axis=0)] if placed else []


def _foreign_px(p: FramePair, table: np.ndarray, cube_hues: list[np.ndarray], gain: np.ndarray | None) -> float:
    """The largest blob on the twin's table whose recorded hue is far from the table's own, from
    the twin's there (through the camera's colour ``gain``) and from the cube's (a lifted cube
    leaves the twin's). Hue, not colour: a shadow keeps the table's hue; the twin's own lines and
    reflections are in its render too."""
    rec = _chroma(p.recorded)
    off = np.minimum(np.abs(rec - np.median(rec[table], axis=0)).max(axis=2),
                     np.abs(rec - _chroma(p.twin * (1.0 if gain is None else gain))).max(axis=2))
    for hue in cube_hues:
        off = np.minimum(off, np.abs(rec - hue).max(axis=2))
    # where the camera's gain saturates the twin's colour, the hue is lost: no judging it there
    clipped = (p.twin * (1.0 if gain is None else gain)).max(axis=2) >= CLIPPED
    far = (off > FOREIGN_CHROMA) & table & ~clipped
    far = cv2.morphologyEx(far.astype(np.uint8), cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(far, connectivity=8)
    return float(stats[1:, cv2.CC_STAT_AREA].max()) if count > 1 else 0.0


def _blur(pairs: list[FramePair]) -> float | None:
    """Sharpness (recorded / twin) on the fastest-turning third of the ticks over the slowest third's."""
    if len(pairs) < 3 or np.ptp([p.spin for p in pairs]) < MIN_SPIN_SPREAD:
        return None  # no turning to compare (or no joint velocities recorded)
    order = sorted(pairs, key=lambda p: p.spin)
    third = max(1, len(order) // 3)

    def sharp(group: list[FramePair]) -> float:
        values = []
        for p in group:
            mask = np.ones(p.labels.shape, bool)
            values.append(_sharpness(_luma(p.recorded), mask) / max(_sharpness(_luma(p.twin), mask), 1e-6))
        return float(np.median(values))

    return sharp(order[-third:]) / max(sharp(order[:third]), 1e-6)
