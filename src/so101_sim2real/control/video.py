"""``--video``: the camera image beside the two channels the policy sees.

Each video frame is three panels of the same height: the wrist camera's RGB, the
newest seg channel in class colours and the newest disparity channel in grey, both
scaled up with nearest neighbour so the 84x84 pixels stay visible.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from so101_sim2real.errors import So101Error

PANEL = 240  # panel height in pixels
# RGB per sim class: background, table, cube, static finger, moving finger
PALETTE = np.array([[40, 40, 40], [150, 140, 110], [220, 40, 40], [60, 110, 230], [60, 200, 90]], dtype=np.uint8)
_LUT = np.vstack([PALETTE, np.full((256 - len(PALETTE), 3), 255, dtype=np.uint8)])  # built once, not per frame
_FOURCC = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}


def colour_segmentation(ids: np.ndarray) -> np.ndarray:
    """Sim class ids -> RGB; ids past the palette are drawn white."""
    return _LUT[np.asarray(ids, dtype=np.uint8)]


def label(img: np.ndarray, text: str, first_row: int = 0) -> np.ndarray:
    """White text on a darkened strip (readable on any background), one line per ``\n``."""
    for row, line in enumerate(text.splitlines(), start=first_row):
        (w, h), _ = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        top, bottom = 4 + 18 * row, 4 + 18 * row + h + 8
        img[top:bottom, 2:10 + w] //= 3
        cv2.putText(img, line, (6, bottom - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def compose(rgb: np.ndarray | None, frame: np.ndarray, channels: list[str], caption: str = "") -> np.ndarray:
    """One RGB video frame: camera | seg | disparity, the caption on the first panel."""
    panels = [panel(rgb, caption or "wrist camera")] if rgb is not None else []
    panels += policy_panels(frame, channels)
    if rgb is None and caption:
        label(panels[0], caption, first_row=1)  # under the panel's own label
    return np.hstack(panels)


def panel(rgb: np.ndarray, caption: str, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """An RGB image scaled to the panel height, captioned."""
    w = round(rgb.shape[1] * PANEL / rgb.shape[0])
    return label(np.ascontiguousarray(cv2.resize(rgb, (w, PANEL), interpolation=interpolation)), caption)


def policy_panels(frame: np.ndarray, channels: list[str]) -> list[np.ndarray]:
    """One panel per policy channel, pixels kept visible: seg in class colours, disparity in grey."""
    panels = []
    for name, channel in zip(channels, frame, strict=True):
        img = colour_segmentation(channel) if name == "seg" else np.repeat(channel[..., None], 3, axis=2)
        panels.append(panel(img, f"policy: {name}", cv2.INTER_NEAREST))
    return panels


class VideoWriter:
    """Writes composed frames to ``.mp4`` (mp4v) or ``.avi`` (MJPG) with OpenCV."""

    def __init__(self, path: str | Path, fps: float):
        self.path = Path(path)
        fourcc = _FOURCC.get(self.path.suffix.lower())
        if fourcc is None:
            raise So101Error(f"{self.path}: video must end in .mp4, .mkv or .avi")
        if not self.path.parent.exists():
            raise So101Error(f"{self.path.parent}: no such folder for the video")
        self.fourcc, self.fps = cv2.VideoWriter.fourcc(*fourcc), fps
        self._writer: cv2.VideoWriter | None = None
        self.frames = 0

    def add(self, image: np.ndarray) -> None:
        if self._writer is None:
            h, w = image.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), self.fourcc, self.fps, (w, h))
            if not self._writer.isOpened():
                raise So101Error(f"{self.path}: OpenCV could not open a video writer for this file")
        self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
