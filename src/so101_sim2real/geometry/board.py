"""Calibration boards: what a board is (board.yaml), its printable image, and finding it in a picture.

A board is a ChArUco board (a chessboard whose white squares carry ArUco markers: its
corners are found even when part of it is out of the picture, each with its id) or a
plain checkerboard (the whole board must be in view). Object points are in millimetres
in the board's frame: x along the columns, y down the rows, z into the board, the
origin at the board's top-left outer corner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from so101_sim2real.errors import So101Error
from so101_sim2real.files import write_file
from so101_sim2real.records import Fields, read_mapping

BOARD_TYPES = ("charuco", "checkerboard")
MIN_CORNERS = 6  # fewer corners pin a view's pose too loosely to help the fit
MAX_SQUARE_MM = 500.0  # a square of a board one can print and hold flat (7 of them on A0 are 170 mm)
_FIELDS = ("type", "squares", "square_mm", "marker_mm", "dictionary", "legacy")


@dataclass(frozen=True)
class BoardSpec:
    """A board's geometry. ``squares`` is (columns, rows) of squares; sizes are in millimetres.

    ``marker_mm``, ``dictionary`` and ``legacy`` matter only for ChArUco. ``legacy``: boards
    with an even number of rows made by OpenCV before 4.6 start with a white square where
    newer ones start with a black one; set it for such a board or none of its corners match.
    """

    type: str = "charuco"
    squares: tuple[int, int] = (7, 5)
    square_mm: float = 30.0
    marker_mm: float = 22.5
    dictionary: str = "DICT_5X5_100"
    legacy: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "squares", tuple(int(v) for v in self.squares))
        if self.type == "checkerboard":  # no markers: the ChArUco fields keep their defaults (equal boards are ==)
            for name in ("marker_mm", "dictionary", "legacy"):
                object.__setattr__(self, name, BoardSpec.__dataclass_fields__[name].default)
        if problem := self.problem():
            raise So101Error(problem)

    def problem(self) -> str | None:
        """What makes this board impossible, or None."""
        cols, rows = self.squares
        if self.type not in BOARD_TYPES:
            return f"board type {self.type!r}: use {' or '.join(BOARD_TYPES)}"
        if cols < 3 or rows < 3:
            return f"a board of {cols}x{rows} squares is too small: at least 3x3"
        if not self.square_mm > 0:
            return f"square size {self.square_mm} mm: must be positive"
        if self.square_mm > MAX_SQUARE_MM:  # a printable board; 1e308 would overflow its size
            return f"square size {self.square_mm:g} mm: at most {MAX_SQUARE_MM:g} mm"
        if self.type == "checkerboard":
            return None
        if not 0 < self.marker_mm < self.square_mm:
            return f"marker size {self.marker_mm} mm: must be positive and smaller than the square ({self.square_mm})"
        if not hasattr(cv2.aruco, self.dictionary) or not self.dictionary.startswith("DICT_"):
            return f"ArUco dictionary {self.dictionary!r}: not one OpenCV knows (e.g. DICT_5X5_100, DICT_4X4_50)"
        have = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary)).bytesList.shape[0]
        if have < cols * rows // 2:
            return f"{self.dictionary} has {have} markers; a {cols}x{rows} board needs {cols * rows // 2}"
        return None

    @property
    def size_mm(self) -> tuple[float, float]:
        """The board's (width, height) in millimetres, margin excluded."""
        return self.squares[0] * self.square_mm, self.squares[1] * self.square_mm

    def describe(self) -> str:
        cols, rows = self.squares
        if self.type == "checkerboard":
            return f"checkerboard {cols}x{rows} squares of {self.square_mm:g} mm"
        return (f"ChArUco {cols}x{rows} squares of {self.square_mm:g} mm, markers {self.marker_mm:g} mm, "
                f"{self.dictionary}" + (", legacy pattern" if self.legacy else ""))

    def save(self, path: str | Path) -> Path:
        """Write the board as YAML (beside its image: ``board.png`` -> ``board.yaml``)."""
        data = asdict(self)
        data["squares"] = list(self.squares)
        if self.type == "checkerboard":
            for name in ("marker_mm", "dictionary", "legacy"):
                data.pop(name)
        header = ("# A calibration board (so101 calibrate board). Measure a printed square: if it is not\n"
                  "# square_mm, your printer scaled it; write what you measured here.\n")
        return write_file(path, header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))

    @classmethod
    def load(cls, path: str | Path) -> BoardSpec:
        """Read a board YAML; a one-line :class:`So101Error` naming the field that is wrong."""
        f = Fields(read_mapping(path, "board file"), path, _FIELDS)
        kind = f.text("type", "charuco", BOARD_TYPES)
        default = cls()
        try:
            squares = f.positive_ints("squares", 2)
            return cls(type=kind, squares=(squares[0], squares[1]),
                       square_mm=f.number("square_mm", minimum=0),
                       marker_mm=f.number("marker_mm", default.marker_mm if kind == "checkerboard" else ...,
                                          minimum=0),
                       dictionary=f.text("dictionary", default.dictionary),
                       legacy=f.flag("legacy", False))
        except So101Error as exc:
            if str(exc).startswith(str(path)):
                raise
            raise So101Error(f"{path}: {exc}") from None


def board_yaml_path(image_path: str | Path) -> Path:
    """Where a board image's description lives: ``board.png`` -> ``board.yaml``."""
    return Path(image_path).with_suffix(".yaml")


def aruco_board(spec: BoardSpec) -> cv2.aruco.CharucoBoard:
    """OpenCV's board object for a ChArUco spec (square and marker lengths in mm)."""
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, spec.dictionary))
    board = cv2.aruco.CharucoBoard(spec.squares, spec.square_mm, spec.marker_mm, dictionary)
    board.setLegacyPattern(spec.legacy)
    return board


def object_points(spec: BoardSpec) -> np.ndarray:
    """Every inner corner of the board, (N, 3) float32 in mm; a detection's ids index these rows."""
    if spec.type == "charuco":
        return np.asarray(aruco_board(spec).getChessboardCorners(), np.float32).reshape(-1, 3)
    cols, rows = spec.squares
    grid = np.mgrid[1:cols, 1:rows].T.reshape(-1, 2) * spec.square_mm  # row by row, as the detector orders them
    return np.column_stack([grid, np.zeros(len(grid))]).astype(np.float32)


# --- the printable image -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BoardLayout:
    """Where the board sits in its printable image (pixels), and the image's physical scale."""

    image_px: tuple[int, int]  # (width, height) of the whole image
    board_px: tuple[int, int]  # (width, height) of the board itself
    origin_px: tuple[int, int]  # the board's top-left outer corner in the image
    dpi: int

    @property
    def mm_per_px(self) -> float:
        return 25.4 / self.dpi


def board_layout(spec: BoardSpec, dpi: int) -> BoardLayout:
    """The layout :func:`render_board` draws: a white margin all round, a caption in the bottom one."""
    if not 50 <= dpi <= 1200:
        raise So101Error(f"dpi {dpi}: use a printer resolution between 50 and 1200")
    px = dpi / 25.4
    board = (round(spec.size_mm[0] * px), round(spec.size_mm[1] * px))
    margin = round(max(10.0, spec.square_mm / 2) * px)  # the detectors need a white quiet zone round the board
    caption = round(8.0 * px)
    return BoardLayout((board[0] + 2 * margin, board[1] + 2 * margin + caption), board, (margin, margin), dpi)


def caption(spec: BoardSpec, dpi: int) -> str:
    width, height = spec.size_mm
    return (f"{spec.describe()}  |  board {width:g} x {height:g} mm  |  print at 100% ({dpi} dpi), no fit-to-page: "
            f"a square must measure {spec.square_mm:g} mm")


def render_board(spec: BoardSpec, dpi: int = 300) -> np.ndarray:
    """The printable board: grayscale uint8 (H, W) at ``dpi``, with a margin and a caption line
    giving its size and how to print it."""
    layout = board_layout(spec, dpi)
    image = np.full(layout.image_px[::-1], 255, np.uint8)
    (x0, y0), (w, h) = layout.origin_px, layout.board_px
    image[y0:y0 + h, x0:x0 + w] = _draw_board(spec, (w, h))
    _put_caption(image, caption(spec, dpi), y0 + h, layout)
    return image


def _draw_board(spec: BoardSpec, size: tuple[int, int]) -> np.ndarray:
    if spec.type == "charuco":
        return aruco_board(spec).generateImage(size, marginSize=0, borderBits=1)
    cols, rows = spec.squares
    xs = np.round(np.linspace(0, size[0], cols + 1)).astype(int)
    ys = np.round(np.linspace(0, size[1], rows + 1)).astype(int)
    col_of = np.searchsorted(xs, np.arange(size[0]), side="right") - 1
    row_of = np.searchsorted(ys, np.arange(size[1]), side="right") - 1
    black = (row_of[:, None] + col_of[None, :]) % 2 == 0  # black top-left, as OpenCV's ChArUco boards
    return np.where(black, 0, 255).astype(np.uint8)


def _put_caption(image: np.ndarray, text: str, board_bottom: int, layout: BoardLayout) -> None:
    font, px = cv2.FONT_HERSHEY_SIMPLEX, layout.dpi / 25.4
    thickness = max(1, round(0.25 * px))
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, thickness)
    scale = min(3.0 * px / th, (layout.image_px[0] - 2 * layout.origin_px[0]) / tw)  # ~3 mm tall, within the board
    (_, th), _ = cv2.getTextSize(text, font, scale, thickness)
    baseline_y = board_bottom + layout.origin_px[1] // 2 + th
    cv2.putText(image, text, (layout.origin_px[0], baseline_y), font, scale, 0, thickness, cv2.LINE_AA)


def write_pdf(image: np.ndarray, dpi: int, path: str | Path) -> Path:
    """The board image as a one-page PDF of its physical size (print at 100%)."""
    import io

    from matplotlib.figure import Figure

    height, width = image.shape[:2]
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    fig.figimage(image, cmap="gray", vmin=0, vmax=255, resize=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="pdf", dpi=dpi)
    return write_file(path, buffer.getvalue())


# --- finding the board ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Detection:
    """A board found in one picture: matched image points (N, 2), object points (N, 3) in mm, corner ids (N,)."""

    image_points: np.ndarray
    object_points: np.ndarray
    ids: np.ndarray

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.image_points, self.object_points, self.ids


def detector(spec: BoardSpec) -> Callable[[np.ndarray], Detection | None]:
    """A board finder for a stream of pictures (grayscale, or RGB): the detector is built once."""
    if spec.type == "checkerboard":
        return lambda image: _find_checkerboard(spec, _gray(image))
    board = aruco_board(spec)
    charuco = cv2.aruco.CharucoDetector(board)
    return lambda image: _find_charuco(board, charuco, _gray(image))


def detect(spec: BoardSpec, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The board in one picture: (image points (N, 2), object points (N, 3), ids (N,)), or None when
    fewer than :data:`MIN_CORNERS` corners (or only collinear ones) are found."""
    found = detector(spec)(gray)
    return None if found is None else found.as_tuple()


def _gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return image


def _find_charuco(board, charuco, gray: np.ndarray) -> Detection | None:
    corners, ids, _, _ = charuco.detectBoard(gray)
    if ids is None or len(ids) < MIN_CORNERS or board.checkCharucoCornersCollinear(ids):
        return None
    obj, img = board.matchImagePoints(corners, ids)
    return Detection(img.reshape(-1, 2).astype(np.float32), obj.reshape(-1, 3).astype(np.float32),
                     ids.reshape(-1).astype(np.int32))


def _find_checkerboard(spec: BoardSpec, gray: np.ndarray) -> Detection | None:
    corners = _checkerboard_corners(gray, (spec.squares[0] - 1, spec.squares[1] - 1))
    if corners is None:
        return None
    ids = np.arange(len(corners), dtype=np.int32)
    return Detection(corners.reshape(-1, 2).astype(np.float32), object_points(spec), ids)


_SB_TRIES = (cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_ACCURACY, 0,
             cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_EXHAUSTIVE)
_LARGE = 1600  # long side (px) above which corners are looked for on a smaller copy, then refined here


def _checkerboard_corners(gray: np.ndarray, inner: tuple[int, int]) -> np.ndarray | None:
    """findChessboardCornersSB is the accurate one but misses boards now and then (very sharp edges,
    large squares): the classic detector, refined to sub-pixel, is the fallback."""
    scale = min(1.0, _LARGE / max(gray.shape))
    small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    for flags in _SB_TRIES:
        found, corners = cv2.findChessboardCornersSB(small, inner, flags=flags)
        if found:
            break
    else:
        found, corners = cv2.findChessboardCorners(small, inner,
                                                   flags=cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE)
        if not found:
            return None
        corners = _refine(small, corners)
    if scale == 1.0:
        return corners
    return _refine(gray, (corners + 0.5) / scale - 0.5)


def _refine(gray: np.ndarray, corners: np.ndarray) -> np.ndarray:
    pts = corners.reshape(-1, 2)
    spacing = float(np.min(np.linalg.norm(np.diff(pts, axis=0), axis=1)))  # neighbours along a row
    half = int(np.clip(spacing / 4, 2, 15))  # the window stays inside one square
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 0.001)
    return cv2.cornerSubPix(gray, pts.reshape(-1, 1, 2).astype(np.float32), (half, half), (-1, -1), criteria)
