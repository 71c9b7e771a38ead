"""Frames a person labelled: a folder of camera pictures and their class masks.

The layout is the plainest any labelling tool can write::

    FOLDER/
      classes.txt          the class ids, one "id name" a line (written by ``so101 seg frames``)
      images/NAME.png      the camera's picture (RGB; .png or .jpg)
      masks/NAME.png       one channel (grey or palette PNG), same size: each pixel's class id
                           in the network's table (0 = unlabeled: not a target, so a person
                           may leave what they are unsure of at 0)
      guesses/NAME.png     a network's guess, as a mask, for a person to correct into masks/
      frames.json          where each picture came from (recording, episode, tick, twin or arm)

``so101 seg frames`` fills ``images/`` from a recording and, given a network, ``guesses/``;
``so101 seg train --labelled`` learns from the pictures that have a mask. A picture without
a mask is not labelled yet and is skipped. A guess is never read as a label: a network
trained on its own guesses would learn nothing and score itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from so101_sim2real.errors import So101Error
from so101_sim2real.files import write_file

IMAGES = "images"
MASKS = "masks"
GUESSES = "guesses"
CLASSES = "classes.txt"
SOURCES = "frames.json"
PICTURES = (".png", ".jpg", ".jpeg")


@dataclass
class LabelledPictures:
    """Pictures ``rgb`` (N, H, W, 3) uint8 and their class ids ``labels`` (N, H, W) uint8, named ``names``."""

    rgb: np.ndarray
    labels: np.ndarray
    names: list[str]
    twin: list[str] = field(default_factory=list)  # the names of pictures the twin rendered (frames.json)

    def __len__(self) -> int:
        return len(self.rgb)

    def split(self, held_out: float, seed: int = 0) -> tuple[LabelledPictures, LabelledPictures]:
        """(training, held-out), drawn at random, at least one in each (two pictures at least)."""
        order = np.random.default_rng(seed).permutation(len(self))
        cut = min(len(self) - 1, max(1, round(len(self) * held_out)))
        return self._rows(order[cut:]), self._rows(order[:cut])

    def _rows(self, rows: np.ndarray) -> LabelledPictures:
        names = [self.names[i] for i in rows]
        return LabelledPictures(self.rgb[rows], self.labels[rows], names, [n for n in self.twin if n in names])


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
        hint = f"'so101 seg frames RECORDING --out {folder}'"
        raise So101Error(f"{folder}: no {IMAGES}/ folder of labelled pictures ({hint} makes one)")
    pictures = sorted(p for p in images.iterdir() if p.suffix.lower() in PICTURES)
    stems = [p.stem for p in pictures]
    if len(set(stems)) < len(stems):
        twice = next(s for s in stems if stems.count(s) > 1)
        raise So101Error(f"{images}: two pictures named {twice} (one mask, masks/{twice}.png, cannot label both)")
    rgb: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    names: list[str] = []
    for picture in pictures:
        mask_path = masks / f"{picture.stem}.png"
        if not mask_path.is_file():
            continue  # not labelled yet
        image = _read(picture, cv2.IMREAD_COLOR)
        mask = _read_mask(mask_path)
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
    if len(rgb) < 2:
        raise So101Error(f"{folder}: {len(rgb)} of its {len(pictures)} pictures labelled (a mask in {MASKS}/ "
                         f"with a labelled pixel, masks/NAME.png beside images/NAME.png); at least 2: one to "
                         f"learn from, one to score on")
    twin = [n for n in names if _sources(folder).get(n, {}).get("twin")]
    return LabelledPictures(np.stack(rgb), np.stack(labels), names, twin)


def _read_mask(path: Path) -> np.ndarray:
    """Class ids from a grey or palette PNG (a palette PNG's indices are its ids, as labelling tools
    write them), or a 16-bit one whose ids fit 8 bits; anything else refused in one line."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            mode, mask = image.mode, np.array(image)
    except (OSError, UnidentifiedImageError):
        raise So101Error(f"{path}: not a picture that can be read") from None
    if mask.ndim == 2 and mask.dtype != np.uint8 and np.issubdtype(mask.dtype, np.integer) and mask.min() >= 0 \
            and mask.max() < 256:
        mask = mask.astype(np.uint8)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise So101Error(f"{path}: a mask is one channel of class ids (grey or palette PNG), not mode {mode}")
    return mask


def _sources(folder: Path) -> dict:
    path = folder / SOURCES
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise So101Error(f"{path}: not JSON (so101 seg frames writes it; delete it to treat every picture as "
                         f"the arm's)") from None
    return data if isinstance(data, dict) else {}


def _read(path: Path, flags: int) -> np.ndarray:
    data = cv2.imread(str(path), flags)
    if data is None:
        raise So101Error(f"{path}: not a picture OpenCV can read")
    return data


@dataclass(frozen=True)
class Picture:
    """One picture for a person to label: its name, pixels (RGB) and where it came from."""

    name: str
    rgb: np.ndarray
    source: dict  # {"recording", "episode", "tick", "twin"}


def write_pictures(folder: str | Path, pictures: Sequence[Picture], classes: Sequence[str],
                   guess: Callable[[np.ndarray], np.ndarray] | None = None) -> int:
    """Each picture as ``images/NAME.png``, and with ``guess`` (picture -> class ids) its guess as
    ``guesses/NAME.png``; the class table as ``classes.txt`` and the sources in ``frames.json``.
    A picture whose name is already labelled with other pixels is refused, so a person's mask never
    ends up on another picture. Returns how many pictures were written."""
    folder = Path(folder)
    encoded = [(p, _png(cv2.cvtColor(p.rgb, cv2.COLOR_RGB2BGR))) for p in pictures]
    for p, data in encoded:
        image, mask = folder / IMAGES / f"{p.name}.png", folder / MASKS / f"{p.name}.png"
        if mask.exists() and image.is_file() and image.read_bytes() != data:
            raise So101Error(f"{image}: already there, labelled, and another picture; write to another @out "
                             f"(or move {folder / MASKS} aside)")
    sources = {**_sources(folder), **{p.name: p.source for p in pictures}}
    write_file(folder / CLASSES, "".join(f"{i} {name}\n" for i, name in enumerate(classes)).encode())
    write_file(folder / SOURCES, json.dumps(sources, indent=1))
    for p, data in encoded:
        write_file(folder / IMAGES / f"{p.name}.png", data)
        if guess is not None:
            write_file(folder / GUESSES / f"{p.name}.png", _png(guess(p.rgb).astype(np.uint8)))
    return len(pictures)


def _png(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise So101Error("a picture did not encode as PNG")
    return buffer.tobytes()
