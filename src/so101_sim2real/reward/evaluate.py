"""Scoring a reward classifier, and the pictures a person checks it (and labels) by.

Kept apart from the model: the pictures need only a frame's channels, so they belong
neither with training nor with the judge in the loop; the metrics themselves are in
:mod:`~so101_sim2real.reward.metrics`, which training uses too. Imports
:mod:`~so101_sim2real.reward.classifier` (never the other way).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from so101_sim2real.control.recording import Recording
from so101_sim2real.control.video import colour_segmentation
from so101_sim2real.errors import So101Error
from so101_sim2real.reward.classifier import (
    Classifier,
    ClassifierConfig,
    Dataset,
    Frames,
    RewardNet,
    _episode_frames,
    _input_config,
    load_frames,
)
from so101_sim2real.reward.labels import _episode_positions, _span, labels_path, load_labels
from so101_sim2real.reward.metrics import Metrics, score

# ================================================================================ evaluation


def evaluate(classifier: Classifier, datasets: Sequence[Dataset | str | Path], threshold: float | None = None,
             target_precision: float = 0.95, mistakes_png: str | Path | None = None, worst: int = 8) -> Metrics:
    """Score ``classifier`` on labelled recordings; optionally draw its ``worst`` false positives
    and false negatives into ``mistakes_png``."""
    frames, _ = load_frames(datasets, config=classifier.config)
    probs = classifier.probabilities(frames.images)
    threshold = classifier.config.threshold if threshold is None else threshold
    if mistakes_png is not None:
        write_mistakes(frames, probs, threshold, classifier.config, mistakes_png, worst)
    return score(probs, frames.labels, threshold, target_precision)


# =================================================================================== pictures

_TILE = 168  # pixels per 84-pixel image side in a sheet: twice the policy's resolution


def _tile(image: np.ndarray, channels: Sequence[str], lines: Sequence[str],
          border: tuple[int, int, int] | None = None) -> np.ndarray:
    """One prepared frame (C, H, W) as an RGB tile: camera RGB, or seg in class colours beside disparity."""
    if list(channels) == ["r", "g", "b"]:
        panels = [image.transpose(1, 2, 0)]
    else:
        panels = [colour_segmentation(ch) if name == "seg" else np.repeat(ch[..., None], 3, axis=2)
                  for name, ch in zip(channels, image, strict=True)]
    tile = np.ascontiguousarray(np.hstack([cv2.resize(p, (_TILE, _TILE), interpolation=cv2.INTER_NEAREST)
                                           for p in panels]))
    for i, line in enumerate(lines):
        (w, h), _ = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        top = 2 + 16 * i
        strip = tile[top:top + h + 6, 0:w + 6]
        strip[...] = strip // 3  # darkened strip: readable on any background
        cv2.putText(tile, line, (3, top + h + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    if border is not None:
        cv2.rectangle(tile, (0, 0), (tile.shape[1] - 1, tile.shape[0] - 1), border, 4)
    return tile


def _grid(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    h, w = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / columns)
    sheet = np.full((rows * h, min(columns, len(tiles)) * w, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    return sheet


def _banner(text: str, width: int) -> np.ndarray:
    strip = np.full((28, width, 3), 40, dtype=np.uint8)
    cv2.putText(strip, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def _write_png(path: str | Path, rgb: np.ndarray) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise So101Error(f"{path}: give a .png file name")
    if not path.parent.is_dir():
        raise So101Error(f"{path}: the folder {path.parent} does not exist")
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise So101Error(f"{path}: could not write the image")
    return path


def write_mistakes(frames: Frames, probs: np.ndarray, threshold: float, config: ClassifierConfig,
                   path: str | Path, worst: int = 8) -> Path:
    """A PNG of the most confident false positives and false negatives, each tile named by
    recording, episode, row and probability."""
    predicted = probs >= threshold
    fp = np.flatnonzero(predicted & ~frames.labels)
    fn = np.flatnonzero(~predicted & frames.labels)
    sections = [("false positives (no success, judged success)", fp[np.argsort(-probs[fp])][:worst]),
                ("false negatives (success, judged none)", fn[np.argsort(probs[fn])][:worst])]
    blank = _tile(np.zeros((len(config.channels), *config.image_size), np.uint8), config.channels, [])
    width = blank.shape[1] * worst
    parts = []
    for title, picks in sections:
        parts.append(_banner(f"{title}: {len(picks)} shown at threshold {threshold:.2f}", width))
        tiles = []
        for i in picks:
            folder, k = frames.keys[frames.episode[i]]
            tiles.append(_tile(frames.images[i], config.channels,
                               [Path(folder).name, f"episode {k} row {frames.row[i]}", f"p = {probs[i]:.3f}"]))
        row = _grid(tiles, worst) if tiles else _banner("none", width)
        parts.append(np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=255))
    return _write_png(path, np.vstack(parts))


def contact_sheet(recording: Recording, episode: int, path: str | Path, every: int = 1, columns: int = 8,
                  labels_file: str | Path | None = None) -> Path:
    """A PNG grid of an episode's frames, each with its row number, for a person to pick
    ``first_success``; rows already labelled success get a green border.

    Shows the camera RGB when the recording has it (what a person recognises), else the
    policy frame (seg in class colours beside disparity).
    """
    if every < 1:
        raise So101Error("@every must be at least 1")
    positions = _episode_positions(recording)
    if episode not in positions:
        raise So101Error(f"@episode {episode}: not in {recording.folder} (episodes: {_span(positions)})")
    arrays = recording.load(positions[episode])
    target = labels_path(recording, labels_file)
    label = load_labels(recording, target).episodes.get(episode) if target.is_file() else None
    if "rgb_jpeg" in arrays:
        obs = recording.spec.observation
        (height, width), (source_height, source_width) = obs.image_size, obs.source_size
        config = ClassifierConfig("rgb", ["r", "g", "b"], (height, width), obs.crop, (source_height, source_width))
    else:
        config = _input_config([recording], "obs")
    frames = _episode_frames(recording, arrays, Classifier(RewardNet(len(config.channels)), config))
    positive = label.positives(len(frames)) if label else np.zeros(len(frames), dtype=bool)
    tiles = [_tile(frames[i], config.channels, [f"row {i}"], (40, 200, 60) if positive[i] else None)
             for i in range(0, len(frames), every)]
    return _write_png(path, _grid(tiles, columns))
