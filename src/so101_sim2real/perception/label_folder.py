"""Frames a person labelled: a folder of camera pictures and their class masks.

The layout is the plainest any labelling tool can write::

    FOLDER/
      classes.txt          the class ids, one "id name" a line (written by ``so101 seg frames``)
      images/NAME.png      the camera's picture (RGB; .png or .jpg)
      masks/NAME.png       one channel, 8 bit, same size: each pixel's class id in the
                           network's table (0 = unlabeled: not a target, so a person may
                           leave what they are unsure of at 0)

``so101 seg frames`` fills ``images/`` from a recording and, given a network, ``masks/``
with its guesses for a person to correct; ``so101 seg train --labelled`` learns from the
pictures that have a mask. A picture without a mask is not labelled yet and is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from so101_sim2real.errors import So101Error
from so101_sim2real.files import write_file

IMAGES = "images"
MASKS = "masks"
CLASSES = "classes.txt"
PICTURES = (".png", ".jpg", ".jpeg")


@dataclass
class LabelledPictures:
    """Pictures ``rgb`` (N, H, W, 3) uint8 and their class ids ``labels`` (N, H, W) uint8, named ``names``."""

    rgb: np.ndarray
    labels: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return len(self.rgb)

    def split(self, held_out: float, seed: int = 0) -> tuple[LabelledPictures, LabelledPictures]:
        """(training, held-out), drawn at random; with one picture, it is both."""
        if len(self) == 1:
            return self, self
        order = np.random.default_rng(seed).permutation(len(self))
        cut = min(len(self) - 1, max(1, round(len(self) * held_out)))
        return self._rows(order[cut:]), self._rows(order[:cut])

    def _rows(self, rows: np.ndarray) -> LabelledPictures:
        return LabelledPictures(self.rgb[rows], self.labels[rows], [self.names[i] for i in rows])


def resized(rgb: np.ndarray, labels: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pictures (N, H, W, 3) and masks (N, H, W) at ``size`` (height, width): pictures bilinear, masks
    nearest (a class id is never blended)."""
    if rgb.shape[1:3] == tuple(size):
        return rgb, labels
    wh = (size[1], size[0])
    return (np.stack([cv2.resize(x, wh, interpolation=cv2.INTER_LINEAR) for x in rgb]),
            np.stack([cv2.resize(y, wh, interpolation=cv2.INTER_NEAREST) for y in labels]))


def read_labelled(folder: str | Path, classes: Sequence[str]) -> LabelledPictures:
    """The pictures of ``folder`` that have a mask, checked against the class table ``classes``
    (index = id); a mismatch is refused in one line naming the file."""
    folder = Path(folder)
    images, masks = folder / IMAGES, folder / MASKS
    if not images.is_dir():
        raise So101Error(f"{folder}: no {IMAGES}/ folder of labelled pictures (so101 seg frames RECORDING --out "
                         f"{folder} makes one)")
    pictures = sorted(p for p in images.iterdir() if p.suffix.lower() in PICTURES)
    rgb: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    names: list[str] = []
    for picture in pictures:
        mask_path = masks / f"{picture.stem}.png"
        if not mask_path.is_file():
            continue  # not labelled yet
        image = _read(picture, cv2.IMREAD_COLOR)
        mask = _read(mask_path, cv2.IMREAD_UNCHANGED)
        if mask.ndim != 2 or mask.dtype != np.uint8:
            raise So101Error(f"{mask_path}: a mask is one 8-bit channel of class ids, not "
                             f"{mask.shape[-1] if mask.ndim == 3 else 1} channel(s) of {mask.dtype}")
        if mask.shape != image.shape[:2]:
            raise So101Error(f"{mask_path}: {mask.shape[1]}x{mask.shape[0]}, its picture is "
                             f"{image.shape[1]}x{image.shape[0]}")
        if int(mask.max()) >= len(classes):
            raise So101Error(f"{mask_path}: class id {int(mask.max())}; the network's table has ids 0-"
                             f"{len(classes) - 1} ({', '.join(classes)}; see {CLASSES})")
        if not mask.any():
            continue  # every pixel unlabeled: nothing to learn
        if rgb and image.shape != rgb[0].shape:
            raise So101Error(f"{picture}: {image.shape[1]}x{image.shape[0]}, the folder's first picture is "
                             f"{rgb[0].shape[1]}x{rgb[0].shape[0]}: one camera's pictures, one size")
        rgb.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        labels.append(mask)
        names.append(picture.stem)
    if not rgb:
        raise So101Error(f"{folder}: none of its {len(pictures)} pictures has a mask in {MASKS}/ with a labelled "
                         f"pixel (a mask is masks/NAME.png beside images/NAME.png)")
    return LabelledPictures(np.stack(rgb), np.stack(labels), names)


def _read(path: Path, flags: int) -> np.ndarray:
    data = cv2.imread(str(path), flags)
    if data is None:
        raise So101Error(f"{path}: not a picture OpenCV can read")
    return data


def write_pictures(folder: str | Path, frames: Sequence[tuple[str, np.ndarray]], classes: Sequence[str],
                   guess: Callable[[np.ndarray], np.ndarray] | None = None) -> int:
    """Each ``(name, rgb)`` as ``images/NAME.png``; with ``guess`` (picture -> class ids), its mask as
    ``masks/NAME.png`` for a person to correct; the class table as ``classes.txt``. A mask already there
    (a person's work) is never overwritten. Returns how many pictures were written."""
    folder = Path(folder)
    write_file(folder / CLASSES, "".join(f"{i} {name}\n" for i, name in enumerate(classes)).encode())
    for name, rgb in frames:
        write_file(folder / IMAGES / f"{name}.png", _png(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)))
        mask = folder / MASKS / f"{name}.png"
        if guess is not None and not mask.exists():
            write_file(mask, _png(guess(rgb).astype(np.uint8)))
    return len(frames)


def _png(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise So101Error("a picture did not encode as PNG")
    return buffer.tobytes()
