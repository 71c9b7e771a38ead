"""A calibrated camera: its intrinsics and lens distortion, saved as a readable ``camera.yaml``.

Two lens models, as OpenCV names them: ``pinhole`` (radial-tangential: k1, k2, p1, p2, k3,
for ordinary lenses) and ``fisheye`` (Kannala-Brandt: k1..k4 on the angle from the axis,
for wide lenses). Pixel coordinates follow OpenCV: the centre of the top-left pixel is
(0, 0). Points in the camera frame follow OpenCV too: x right, y down, z forward.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import yaml

from so101_sim2real.errors import So101Error
from so101_sim2real.files import write_file
from so101_sim2real.records import Fields, read_mapping

MODELS = ("pinhole", "fisheye")
PINHOLE_COEFFS = (4, 5, 8, 12, 14)  # the lengths OpenCV accepts
_FIELDS = ("model", "size", "K", "D", "rms", "per_view_errors", "date", "source")


@dataclass
class CameraModel:
    """Intrinsics of one camera at one resolution. ``size`` is (height, width) in pixels."""

    size: tuple[int, int]
    K: np.ndarray
    D: np.ndarray
    model: str = "pinhole"
    rms: float | None = None  # reprojection RMS of the fit, px
    per_view_errors: list[float] = field(default_factory=list)
    date: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        self.size = (int(self.size[0]), int(self.size[1]))
        self.K = np.asarray(self.K, np.float64).reshape(3, 3)
        self.D = np.asarray(self.D, np.float64).reshape(-1)
        if self.model not in MODELS:
            raise So101Error(f"camera model {self.model!r}: use {' or '.join(MODELS)}")
        allowed = (4,) if self.model == "fisheye" else PINHOLE_COEFFS
        if len(self.D) not in allowed:
            raise So101Error(f"a {self.model} camera has {' or '.join(map(str, allowed))} distortion coefficients, "
                             f"not {len(self.D)}")

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    def fovx_deg(self) -> float:
        """Horizontal field of view of the undistorted (pinhole) image, edge to edge, in degrees."""
        width = self.size[1]
        return math.degrees(math.atan((self.cx + 0.5) / self.fx) + math.atan((width - 0.5 - self.cx) / self.fx))

    def fovy_deg(self) -> float:
        """Vertical field of view of the undistorted image, in degrees: MuJoCo's ``fovy`` for a
        camera whose principal point is centred."""
        height = self.size[0]
        return math.degrees(math.atan((self.cy + 0.5) / self.fy) + math.atan((height - 0.5 - self.cy) / self.fy))

    # --- points -------------------------------------------------------------------------------------------

    def distort_points(self, normalized: np.ndarray) -> np.ndarray:
        """Pixels (N, 2) where ideal normalised coordinates (x/z, y/z) land through this lens."""
        xy = np.asarray(normalized, np.float64).reshape(-1, 2)
        if self.model == "fisheye":
            return cv2.fisheye.distortPoints(xy.reshape(-1, 1, 2), self.K, self.D).reshape(-1, 2)
        points = np.column_stack([xy, np.ones(len(xy))])
        return self._project_pinhole(points)

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Pixels (N, 2) of camera-frame points (N, 3); NaN for points at or behind the camera."""
        pts = np.asarray(points_cam, np.float64).reshape(-1, 3)
        out = np.full((len(pts), 2), np.nan)
        ahead = pts[:, 2] > 1e-9
        if ahead.any():
            out[ahead] = self.distort_points(pts[ahead, :2] / pts[ahead, 2:3])
        return out

    def _project_pinhole(self, points: np.ndarray) -> np.ndarray:
        zero = np.zeros(3)
        return cv2.projectPoints(points.reshape(-1, 1, 3), zero, zero, self.K, self.D)[0].reshape(-1, 2)

    def undistort_points(self, pixels: np.ndarray, iterations: int = 100) -> np.ndarray:
        """Ideal normalised coordinates (N, 2) of pixels (N, 2): the inverse of :meth:`distort_points`."""
        src = np.asarray(pixels, np.float64).reshape(-1, 1, 2)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, 1e-12)
        if self.model == "fisheye":
            return cv2.fisheye.undistortPoints(src, self.K, self.D, criteria=criteria).reshape(-1, 2)
        return cv2.undistortPoints(src, self.K, self.D, criteria=criteria).reshape(-1, 2)

    # --- images -------------------------------------------------------------------------------------------

    def undistort_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """cv2.remap maps from this camera's image to the ideal pinhole image with the same K and size
        (what the twin's camera with these intrinsics renders). Make them once for a stream."""
        height, width = self.size
        if self.model == "fisheye":
            return cv2.fisheye.initUndistortRectifyMap(self.K, self.D, np.eye(3), self.K, (width, height),
                                                       cv2.CV_32FC1)
        return cv2.initUndistortRectifyMap(self.K, self.D, None, self.K, (width, height), cv2.CV_32FC1)

    def undistort(self, image: np.ndarray, maps: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """The image as an ideal pinhole camera with the same K would see it (same size)."""
        if tuple(image.shape[:2]) != self.size:
            raise So101Error(f"an image of {image.shape[1]}x{image.shape[0]} through a camera calibrated at "
                             f"{self.size[1]}x{self.size[0]}: use scaled_to() for another resolution")
        map_x, map_y = maps or self.undistort_maps()
        return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    def scaled_to(self, size: tuple[int, int]) -> CameraModel:
        """The same sensor read out at another resolution (H, W) of the same aspect ratio.

        A different aspect ratio is a crop of the sensor whose offset is unknown: refused.
        """
        height, width = size
        sy, sx = height / self.size[0], width / self.size[1]
        if abs(sx / sy - 1) > 0.01:
            raise So101Error(f"calibrated at {self.size[1]}x{self.size[0]}; {width}x{height} has another aspect "
                             f"ratio (a crop of the sensor at an unknown offset): calibrate at that resolution")
        K = self.K.copy()
        K[0, 0], K[1, 1] = self.fx * sx, self.fy * sy
        K[0, 2], K[1, 2] = (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5  # pixel centres scale about 0.5
        return replace(self, size=(height, width), K=K, rms=None if self.rms is None else self.rms * sx,
                       per_view_errors=[e * sx for e in self.per_view_errors],
                       source=f"{self.source} (scaled from {self.size[1]}x{self.size[0]})".strip())

    # --- the file -----------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"model": self.model, "size": list(self.size), "K": [[float(v) for v in row] for row in self.K],
                "D": [float(v) for v in self.D], "rms": None if self.rms is None else float(self.rms),
                "per_view_errors": [round(float(e), 4) for e in self.per_view_errors],
                "date": self.date, "source": self.source}

    def save(self, path: str | Path) -> Path:
        """Write ``camera.yaml``: plain YAML lists, with a header a person can read."""
        height, width = self.size
        header = ("# Camera intrinsics (so101 calibrate camera). size is [height, width] in pixels; K is\n"
                  "# [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] in pixels; D: "
                  + ("k1, k2, k3, k4 (Kannala-Brandt)" if self.model == "fisheye" else "k1, k2, p1, p2, k3")
                  + f".\n# {width}x{height}: fx {self.fx:.1f}, fy {self.fy:.1f}, cx {self.cx:.1f}, cy {self.cy:.1f}; "
                  f"field of view {self.fovx_deg():.1f} x {self.fovy_deg():.1f} deg (undistorted)\n")
        body = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120)
        return write_file(path, header + body)

    @classmethod
    def load(cls, path: str | Path) -> CameraModel:
        """Read ``camera.yaml``; a one-line :class:`So101Error` naming the field that is wrong."""
        return cls.from_mapping(read_mapping(path, "camera file"), path)

    @classmethod
    def from_mapping(cls, data: dict, where: str | Path) -> CameraModel:
        """A camera from ``camera.yaml``'s fields (``where`` names it in errors: a file, or a rig file's part)."""
        f = Fields(data, where, _FIELDS)
        model = f.text("model", choices=MODELS)
        width, height = f.positive_ints("size", 2)
        K = _matrix(f)
        D = f.numbers("D", length=(4,) if model == "fisheye" else PINHOLE_COEFFS)
        return cls(size=(width, height), K=K, D=np.array(D), model=model, rms=f.number("rms", None, minimum=0),
                   per_view_errors=f.numbers("per_view_errors", []), date=_date(f), source=f.text("source", ""))


def _matrix(f: Fields) -> np.ndarray:
    value = f.get("K")
    rows = value if isinstance(value, list) and len(value) == 3 else None
    if rows is None or not all(isinstance(r, list) and len(r) == 3 for r in rows):
        raise f.error("K", "expected 3 rows of 3 numbers: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]")
    try:
        K = np.array(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise f.error("K", "expected numbers only") from None
    if not np.isfinite(K).all() or not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0:
        raise f.error("K", "expected [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise f.error("K", "the focal lengths fx and fy must be positive")
    return K


def _date(f: Fields) -> str:
    value = f.get("date", "")
    if isinstance(value, (dt.date, dt.datetime)):  # YAML reads an unquoted ISO date as a date
        return value.isoformat()
    return f.text("date", "")


def now_text() -> str:
    """The calibration's time stamp: local time, to the second, with its offset."""
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")
