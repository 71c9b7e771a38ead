"""Fit a camera's intrinsics to views of a board, both lens models, and keep the better one.

Each view is the board's corners found in one picture (image points) with their places on
the board (object points). Both OpenCV models are fitted to the same views: ``pinhole``
(``cv2.calibrateCamera``: fx, fy, cx, cy and k1, k2, p1, p2, k3) and ``fisheye``
(``cv2.fisheye.calibrate``: fx, fy, cx, cy and k1..k4). :class:`Coverage` decides, during a
live capture, when a picture is worth taking as a view.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from so101_sim2real.errors import So101Error
from so101_sim2real.geometry.camera_model import MODELS, CameraModel, now_text

MIN_VIEWS = 6  # below this the five distortion terms and the focal lengths trade off freely
EDGE_BAND = 0.2  # "edge" points: within this fraction of the width or height from a border
TIE = 0.10  # overall RMS values within 10% (+0.01 px) of each other are a tie
OUTLIER_FACTOR = 3.0  # a view whose RMS is this many times the median (and over 1 px) is dropped once
_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-9)


@dataclass(frozen=True)
class View:
    """One picture's worth of the board: image points (N, 2) px and object points (N, 3) mm."""

    image_points: np.ndarray
    object_points: np.ndarray
    name: str = ""


@dataclass
class ModelFit:
    """One lens model fitted to the views: its camera (None if the fit failed, ``problem`` says why),
    overall and edge RMS (px), and each view's RMS."""

    model: str
    camera: CameraModel | None = None
    rms: float = math.inf
    edge_rms: float | None = None
    per_view: list[float] = field(default_factory=list)
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.camera is not None


@dataclass
class FitReport:
    """What the fit did: every model's result, the chosen one and why, and the views used."""

    chosen: str
    reason: str
    fits: list[ModelFit]
    view_names: list[str]  # of the views used, in order (per_view follows it)
    views_found: int
    dropped: list[str] = field(default_factory=list)  # views left out as outliers

    @property
    def views_used(self) -> int:
        return len(self.view_names)

    def fit(self, model: str) -> ModelFit:
        return next(f for f in self.fits if f.model == model)


def fit_camera(views: Sequence[View], size: tuple[int, int], models: Sequence[str] = MODELS,
               min_views: int = MIN_VIEWS, source: str = "") -> tuple[CameraModel, FitReport]:
    """Fit every model in ``models`` to ``views`` of images of ``size`` (H, W) and keep the better.

    The rule: the model with the lower overall reprojection RMS wins, unless the two are within
    10% (+0.01 px) of each other; then the lower edge RMS (points within 20% of the width or
    height of a border, where the lens models differ most) wins; if that ties too, pinhole (the
    model every tool reads). A model whose fit fails is out. Views whose RMS is over 3x the
    median and over 1 px (a misdetection, a blurred frame) are dropped and the fit is run again,
    as long as ``min_views`` remain.
    """
    if len(views) < min_views:
        raise So101Error(f"too few views: {len(views)}, need at least {min_views} (more pictures of the board, "
                         f"tilted and moved about, corners and edges of the image included)")
    views = list(views)
    fits = [fit_model(m, views, size, source) for m in models]
    best, reason = choose(fits)
    keep = _inliers(best.per_view) if best is not None else list(range(len(views)))
    dropped: list[str] = []
    if best is not None and min_views <= len(keep) < len(views):
        dropped = [views[i].name or f"view {i}" for i in range(len(views)) if i not in keep]
        views = [views[i] for i in keep]
        fits = [fit_model(m, views, size, source) for m in models]
        best, reason = choose(fits)
    if best is None:
        problems = "; ".join(f"{f.model}: {f.problem}" for f in fits)
        raise So101Error(f"the calibration failed for every lens model ({problems})")
    camera = best.camera
    assert camera is not None  # choose() picks only fits that worked
    camera.per_view_errors = list(best.per_view)
    names = [v.name or f"view {i}" for i, v in enumerate(views)]
    return camera, FitReport(best.model, reason, fits, names, len(views) + len(dropped), dropped)


def choose(fits: Sequence[ModelFit]) -> tuple[ModelFit | None, str]:
    """The better of the fits by the rule in :func:`fit_camera`, and the reason in words."""
    ok = sorted((f for f in fits if f.ok), key=lambda f: f.rms)
    if not ok:
        return None, "no model could be fitted"
    if len(ok) == 1:
        failed = [f.model for f in fits if not f.ok]
        return ok[0], "the only model that fitted" + (f" ({', '.join(failed)} failed)" if failed else "")
    first, second = ok[0], ok[1]
    if second.rms - first.rms > TIE * first.rms + 0.01:
        return first, f"lower RMS ({first.rms:.3f} vs {second.rms:.3f} px)"
    edges = [(f.edge_rms, f) for f in (first, second) if f.edge_rms is not None]
    if len(edges) == 2:
        (low_rms, low), (high_rms, _) = sorted(edges, key=lambda e: e[0])
        if high_rms - low_rms > TIE * low_rms + 0.01:
            return low, (f"RMS tie ({first.rms:.3f} vs {second.rms:.3f} px); lower edge RMS "
                         f"({low_rms:.3f} vs {high_rms:.3f} px)")
    pinhole = next((f for f in (first, second) if f.model == "pinhole"), first)
    return pinhole, "RMS and edge RMS tie; pinhole, the model every tool reads"


def fit_model(model: str, views: Sequence[View], size: tuple[int, int], source: str = "") -> ModelFit:
    """One model fitted to ``views``; a failed fit comes back with ``problem`` set, not raised."""
    if model not in MODELS:
        raise So101Error(f"lens model {model!r}: use {' or '.join(MODELS)}")
    try:
        K, D, rvecs, tvecs = (_fit_fisheye if model == "fisheye" else _fit_pinhole)(views, size)
    except cv2.error as exc:
        return ModelFit(model, problem=_cv_problem(exc))
    if not (np.isfinite(K).all() and np.isfinite(D).all()) or K[0, 0] <= 0 or K[1, 1] <= 0:
        return ModelFit(model, problem="the fit diverged (non-finite or negative focal length)")
    camera = CameraModel(size=size, K=K, D=D.reshape(-1), model=model, date=now_text(), source=source)
    residuals = [_residuals(model, camera, v, r, t) for v, r, t in zip(views, rvecs, tvecs, strict=True)]
    all_res = np.concatenate(residuals)
    if not np.isfinite(all_res).all():
        return ModelFit(model, problem="the fitted model does not project every corner")
    per_view = [_rms(r) for r in residuals]
    camera.rms = _rms(all_res)
    edge = np.concatenate([r[_edge_mask(v.image_points, size)] for v, r in zip(views, residuals, strict=True)])
    return ModelFit(model, camera, camera.rms, _rms(edge) if len(edge) else None, per_view)


def _fit_pinhole(views: Sequence[View], size: tuple[int, int]):
    objs = [v.object_points.astype(np.float32).reshape(-1, 1, 3) for v in views]
    imgs = [v.image_points.astype(np.float32).reshape(-1, 1, 2) for v in views]
    _, K, D, rvecs, tvecs = cv2.calibrateCamera(objs, imgs, (size[1], size[0]), None, None, flags=0,
                                                criteria=_CRITERIA)
    return K, D, rvecs, tvecs


def _fit_fisheye(views: Sequence[View], size: tuple[int, int]):
    objs = [v.object_points.astype(np.float64).reshape(1, -1, 3) for v in views]
    imgs = [v.image_points.astype(np.float64).reshape(1, -1, 2) for v in views]
    flags = _fisheye_flag("CALIB_RECOMPUTE_EXTRINSIC") | _fisheye_flag("CALIB_FIX_SKEW")
    # the stubs want K and D as arrays; None (outputs only, no intrinsic guess) is what OpenCV documents
    _, K, D, rvecs, tvecs = cv2.fisheye.calibrate(objs, imgs, (size[1], size[0]), None, None,  # type: ignore[call-overload]
                                                  flags=flags, criteria=_CRITERIA)
    return K, D, rvecs, tvecs


def _fisheye_flag(name: str) -> int:
    """OpenCV 4 names the fisheye flags in cv2.fisheye; OpenCV 5 shares the calibration ones in cv2."""
    return int(getattr(cv2.fisheye, name, None) or getattr(cv2, name))


def _cv_problem(exc: cv2.error) -> str:
    """OpenCV's message, one line: the part after its 'error: (-N:...)' prefix."""
    text = " ".join(str(exc).split())
    return text.split(") ", 1)[-1][:200] if ") " in text else text[:200]


def _residuals(model: str, camera: CameraModel, view: View, rvec, tvec) -> np.ndarray:
    obj = view.object_points.astype(np.float64).reshape(-1, 1, 3)
    rvec, tvec = np.asarray(rvec, np.float64).reshape(3, 1), np.asarray(tvec, np.float64).reshape(3, 1)
    if model == "fisheye":
        projected = cv2.fisheye.projectPoints(obj, rvec, tvec, camera.K, camera.D)[0]
    else:
        projected = cv2.projectPoints(obj, rvec, tvec, camera.K, camera.D)[0]
    return projected.reshape(-1, 2) - view.image_points.reshape(-1, 2)


def _rms(residuals: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(np.square(residuals), axis=1)))) if len(residuals) else math.nan


def _edge_mask(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    u, v = points[:, 0], points[:, 1]
    return ((u < EDGE_BAND * width) | (u > (1 - EDGE_BAND) * width)
            | (v < EDGE_BAND * height) | (v > (1 - EDGE_BAND) * height))


def _inliers(per_view: Sequence[float]) -> list[int]:
    limit = max(OUTLIER_FACTOR * float(np.median(per_view)), 1.0)
    return [i for i, e in enumerate(per_view) if e <= limit]


# --- coverage ------------------------------------------------------------------------------------------------

class Coverage:
    """Which cells of a grid over the image, and which board tilts, the views so far cover.

    A new view adds coverage when it touches at least ``min_new_cells`` cells no view touched
    (a cell is touched when the board's outline covers its centre, or a corner lies in it), or
    when it shows the board at a tilt no view had: near-flat, or tilted 15-30 or over 30
    degrees to one of four sides. The tilt comes from the board's pose under a rough guess of
    the intrinsics (focal = image width), enough to tell these apart.
    """

    def __init__(self, size: tuple[int, int], grid: tuple[int, int] = (8, 6), min_new_cells: int = 2):
        self.size, self.grid, self.min_new_cells = size, grid, min_new_cells
        self.touched = np.zeros((grid[1], grid[0]), bool)
        self.tilts: set[str] = set()
        height, width = size
        cols, rows = grid
        xs, ys = (np.arange(cols) + 0.5) * width / cols, (np.arange(rows) + 0.5) * height / rows
        self._centres = np.stack(np.meshgrid(xs, ys), axis=-1)  # (rows, cols, 2)

    @property
    def fraction(self) -> float:
        """The share of the image's cells touched so far (0..1)."""
        return float(self.touched.mean())

    def cells(self, image_points: np.ndarray) -> np.ndarray:
        """The grid cells (rows, cols) bool that a view with these corners touches."""
        pts = np.asarray(image_points, np.float32).reshape(-1, 2)
        hull = cv2.convexHull(pts)
        inside = np.array([[cv2.pointPolygonTest(hull, (float(x), float(y)), False) >= 0 for x, y in row]
                           for row in self._centres])
        cols, rows = self.grid
        height, width = self.size
        c = np.clip((pts[:, 0] * cols / width).astype(int), 0, cols - 1)
        r = np.clip((pts[:, 1] * rows / height).astype(int), 0, rows - 1)
        inside[r, c] = True
        return inside

    def tilt(self, image_points: np.ndarray, object_points: np.ndarray) -> str:
        """The view's tilt class: 'flat', or '<side> <15-30|30+>'."""
        height, width = self.size
        K = np.array([[width, 0, (width - 1) / 2], [0, width, (height - 1) / 2], [0, 0, 1]], np.float64)
        ok, rvec, _ = cv2.solvePnP(object_points.astype(np.float64).reshape(-1, 1, 3),
                                   image_points.astype(np.float64).reshape(-1, 1, 2), K, None,
                                   flags=cv2.SOLVEPNP_IPPE)
        if not ok:
            return "unknown"
        normal = cv2.Rodrigues(rvec)[0][:, 2]
        angle = math.degrees(math.acos(min(1.0, abs(normal[2]))))
        if angle < 15:
            return "flat"
        side = ("right", "down", "left", "up")[int(((math.degrees(math.atan2(normal[1], normal[0])) + 45) % 360)
                                                   // 90)]
        return f"{side} {'15-30' if angle < 30 else '30+'}"

    def adds(self, image_points: np.ndarray, object_points: np.ndarray) -> bool:
        """Whether a view with these points would add coverage."""
        new = self.cells(image_points) & ~self.touched
        return int(new.sum()) >= self.min_new_cells or self.tilt(image_points, object_points) not in self.tilts

    def add(self, image_points: np.ndarray, object_points: np.ndarray) -> bool:
        """Record the view if it adds coverage; whether it did."""
        if not self.adds(image_points, object_points):
            return False
        self.touched |= self.cells(image_points)
        self.tilts.add(self.tilt(image_points, object_points))
        return True
