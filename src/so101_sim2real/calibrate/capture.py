"""Gathering views of the board: from a folder of pictures, or live from a camera."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from so101_sim2real.calibrate.camera_fit import Coverage, View
from so101_sim2real.cameras import IMAGE_SUFFIXES, CameraExhausted
from so101_sim2real.errors import So101Error
from so101_sim2real.geometry.board import BoardSpec, detector
from so101_sim2real.interfaces import Camera


@dataclass
class Gathered:
    """Views of the board and where they came from."""

    views: list[View]
    size: tuple[int, int]  # (H, W) of every picture
    pictures: int  # pictures looked at
    sample: np.ndarray | None = None  # the picture where the board spans most of the image, for the report
    skipped: list[str] = field(default_factory=list)  # unreadable files
    interrupted: bool = False


def image_files(folder: str | Path) -> list[Path]:
    """The pictures of a folder, in name order; a one-line error for a missing or empty folder."""
    folder = Path(folder)
    if not folder.exists():
        raise So101Error(f"{folder}: no such folder")
    if not folder.is_dir():
        raise So101Error(f"{folder}: not a folder (give the folder that holds the pictures)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise So101Error(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
    return files


def views_from_images(files: list[Path], board: BoardSpec,
                      on_image: Callable[[Path, bool], None] | None = None) -> Gathered:
    """Find the board in each picture. Every picture must have the same size: the first that
    differs is named in the error."""
    find = detector(board)
    views: list[View] = []
    size, first_name, sample, skipped, widest = None, "", None, [], 0.0
    for path in files:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            skipped.append(path.name)
            continue
        if size is None:
            size, first_name = gray.shape[:2], path.name
        elif gray.shape[:2] != size:
            raise So101Error(f"{path.name}: {gray.shape[1]}x{gray.shape[0]}, but {first_name} is {size[1]}x{size[0]}: "
                             f"calibrate one resolution at a time")
        found = find(gray)
        if found is not None:
            views.append(View(found.image_points, found.object_points, path.name))
            if (area := _spread(found.image_points)) > widest:
                sample, widest = gray, area
        if on_image:
            on_image(path, found is not None)
    if size is None:
        raise So101Error(f"none of the {len(files)} image(s) could be read ({files[0].parent})")
    return Gathered(views, size, len(files) - len(skipped), sample, skipped)


def views_from_camera(camera: Camera, board: BoardSpec, wanted: int,
                      on_view: Callable[[int, Coverage], None] | None = None,
                      max_pictures: int | None = None) -> Gathered:
    """Watch ``camera`` and take a view whenever the board is in sight and adds coverage (a part of
    the image or a tilt no view had), until ``wanted`` views, the camera runs out, or Ctrl-C."""
    find = detector(board)
    views: list[View] = []
    coverage, size, sample, pictures, interrupted, widest = None, None, None, 0, False, 0.0
    try:
        while len(views) < wanted and (max_pictures is None or pictures < max_pictures):
            try:
                rgb = camera.read().rgb
            except CameraExhausted:
                break
            pictures += 1
            if coverage is None:  # the first picture: its size is the calibration's
                size, coverage = rgb.shape[:2], Coverage(rgb.shape[:2])
            found = find(rgb)
            if found is None or not coverage.add(found.image_points, found.object_points):
                continue
            views.append(View(found.image_points, found.object_points, f"view {len(views) + 1}"))
            if (area := _spread(found.image_points)) > widest:
                sample, widest = rgb, area
            if on_view:
                on_view(len(views), coverage)
    except KeyboardInterrupt:
        interrupted = True  # fit what was taken so far
    if size is None:
        raise So101Error("the camera gave no picture")
    return Gathered(views, size, pictures, sample, interrupted=interrupted)


def _spread(points: np.ndarray) -> float:
    """The area of the corners' outline: the widest view shows the lens best in the report."""
    return float(cv2.contourArea(cv2.convexHull(points.astype(np.float32))))
