"""The reward classifier: does this frame show success (the cube grasped and lifted)?

On a real arm no simulator judges success, so a small CNN on the wrist view does: it
ends HIL-SERL episodes and gives their reward. The data flow, top to bottom:

1. **Labels** (``labels.json`` beside a recording, or any path)::

       {"format": "so101-reward-labels", "version": 1,
        "episodes": [{"episode": 0, "first_success": 27, "source": "twin"},
                     {"episode": 1, "first_success": null, "source": "person"}]}

   ``episode`` is the number of ``episode_NNNN.npz``; ``first_success`` the first row from
   which every frame to the end of the episode shows success, ``null`` when none does;
   ``source`` says who decided (``twin`` or ``person``). An episode left out is unlabelled
   and not used. :func:`label_from_twin` derives them on the twin (its rule is there);
   a person sets them with ``so101 reward label`` and a contact sheet of the episode.
2. **Frames**: the policy's own frame (``obs``: seg + disparity, which lighting does not
   change) or the camera RGB centre-cropped with the spec's crop and resized to the
   policy's image size (``rgb``). :meth:`Classifier.prepare` makes both, for training and at
   run time alike, from the config saved with the weights, so the two cannot drift.
3. **Training** (:func:`train_classifier`): whole episodes are held out (frames of one
   episode are near copies: split by frame and the held-out score means nothing), the loss
   is weighted by the class ratio, frames get DrQ's random shift, the weights are written
   as a folder (``weights.safetensors`` + ``classifier.yaml``) in one rename.
4. **Evaluation** (:func:`evaluate`): precision, recall, F1, balanced accuracy, ROC AUC,
   the confusion matrix, the threshold that reaches a target precision, and a PNG of the
   worst mistakes.
5. **The judge** (:class:`SuccessJudge`): success once ``consecutive`` frames in a row are
   at or above the threshold, never before ``min_steps``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from so101_sim2real.control.recording import Recording
from so101_sim2real.control.video import colour_segmentation
from so101_sim2real.devices import check_device
from so101_sim2real.errors import So101Error, did_you_mean
from so101_sim2real.files import share_like_the_user
from so101_sim2real.hilserl.learner import random_shift
from so101_sim2real.observation import center_crop_box
from so101_sim2real.sim.task import TaskConfig
from so101_sim2real.spec import yaml_problem

InputKind = Literal["obs", "rgb"]
Source = Literal["twin", "person"]
INPUTS: tuple[str, ...] = ("obs", "rgb")
SOURCES: tuple[str, ...] = ("twin", "person")
LABELS_FILE, LABELS_FORMAT, LABELS_VERSION = "labels.json", "so101-reward-labels", 1
WEIGHTS_FILE, CONFIG_FILE = "weights.safetensors", "classifier.yaml"
CLASSIFIER_FORMAT, CLASSIFIER_VERSION = "so101-reward-classifier", 1
_LABELS_ABOUT = ("first_success: the first row from which every frame to the end of the episode shows success (the "
                 "cube grasped and lifted); null: no frame does. source: twin (the simulator) or person. Episodes "
                 "not listed are unlabelled and not used.")
_RGB_INTERPOLATION = cv2.INTER_AREA  # a downscale by ~6x: area averaging, as the disparity channel is made


# =================================================================================== labels


@dataclass(frozen=True)
class EpisodeLabel:
    """One episode's label: rows ``>= first_success`` show success; None: no row does."""

    episode: int
    first_success: int | None
    source: Source

    def positives(self, rows: int) -> np.ndarray:
        """(rows,) bool: which rows show success."""
        flags = np.zeros(rows, dtype=bool)
        if self.first_success is not None:
            flags[self.first_success:] = True
        return flags


@dataclass
class Labels:
    """The labels of one recording's episodes, by episode number."""

    episodes: dict[int, EpisodeLabel] = field(default_factory=dict)
    origin: str = "twin"  # the labels file's path, or "twin" when derived in memory

    def to_json(self) -> str:
        entries = [asdict(self.episodes[k]) for k in sorted(self.episodes)]
        body = ",\n".join("    " + json.dumps(e) for e in entries)  # one episode a line: easy to edit
        head = {"format": LABELS_FORMAT, "version": LABELS_VERSION, "about": _LABELS_ABOUT}
        lines = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in head.items())
        return "{\n" + lines + ',\n  "episodes": [\n' + body + ("\n  ]\n}\n" if entries else "]\n}\n")


def _episode_positions(recording: Recording) -> dict[int, int]:
    """Episode number -> its position in the recording's index."""
    return {int(e["index"]): i for i, e in enumerate(recording.episodes)}


def twin_first_success(cube_z: np.ndarray, gripper: np.ndarray, success: bool | None,
                       task: TaskConfig | None = None) -> int | None:
    """The twin's rule for one episode's ``first_success`` (see :func:`label_from_twin`)."""
    task = task or TaskConfig()
    if not success or len(cube_z) == 0:
        return None
    # Row i's frame was taken before row i's action, so it shows the cube where row i-1's
    # step left it (row 0: where the reset left it, which is on the table).
    shown_z = np.concatenate([[-np.inf], cube_z[:-1]])
    lifted = (shown_z > task.lift_height_m) & (gripper < task.closed_below_rad)
    if not lifted[-1]:
        return None
    not_lifted = np.flatnonzero(~lifted)
    return int(not_lifted[-1] + 1) if not_lifted.size else 0


def label_from_twin(recording: Recording, task: TaskConfig | None = None) -> Labels:
    """Labels of a twin recording, from the simulator's own record.

    The rule: in an episode the task judged a success, the frames from the first row of
    the last unbroken run of rows where the frame shows the cube above the task's
    ``lift_height_m`` (0.08 m) with the gripper closed (``joint_pos`` of the gripper below
    ``closed_below_rad``), up to the episode's last row, are success; every other frame is
    not. "Shows": row i's frame was taken before row i's action, so it shows the cube at
    ``cube_pos[i - 1]`` (the recorded ``cube_pos`` is after the row's step). Episodes that
    did not succeed are all negatives; interrupted episodes get no label (their outcome is
    unknown). The gripper's closure stands in for the task's grasp test, whose pad
    contacts are not recorded; a cube 8 cm above the table is held in any case.
    """
    labels = Labels(origin="twin")
    for position, meta in enumerate(recording.episodes):
        if meta.get("interrupted"):
            continue
        arrays = recording.load(position)
        if "cube_pos" not in arrays or meta.get("success") is None:
            how = f"'so101 reward label {recording.folder} --episode K --first-success ROW'"
            raise So101Error(f"{recording.folder}: not a twin recording (no cube positions or no judged success); "
                             f"label it by hand: {how}")
        first = twin_first_success(arrays["cube_pos"][:, 2], arrays["joint_pos"][:, 5], meta["success"], task)
        labels.episodes[int(meta["index"])] = EpisodeLabel(int(meta["index"]), first, "twin")
    return labels


def labels_path(recording: Recording, path: str | Path | None = None) -> Path:
    """Where a recording's labels live: ``path`` if given, else ``labels.json`` in its folder."""
    return Path(path) if path is not None else recording.folder / LABELS_FILE


def _check_keys(where: str, data: dict, known: Sequence[str], required: Sequence[str]) -> None:
    for key in data:
        if key not in known:
            hint = did_you_mean(key, known, f" (known: {', '.join(known)})")
            raise So101Error(f"{where}: unknown key '{key}'{hint}")
    for key in required:
        if key not in data:
            raise So101Error(f"{where}: missing '{key}'")


def load_labels(recording: Recording, path: str | Path | None = None) -> Labels:
    """Read and check a labels file against its recording; any problem is one line."""
    path = labels_path(recording, path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise So101Error(f"{path}: no labels file; write one with 'so101 reward label {recording.folder}'") from None
    except OSError as exc:
        raise So101Error(f"{path}: cannot read the labels ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise So101Error(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise So101Error(f"{path}: expected a JSON object with 'format' and 'episodes'")
    _check_keys(str(path), data, ("format", "version", "about", "episodes"), ("format", "episodes"))
    if data["format"] != LABELS_FORMAT or data.get("version", LABELS_VERSION) != LABELS_VERSION:
        raise So101Error(f"{path}: format {data['format']!r} v{data.get('version')}, expected {LABELS_FORMAT!r} "
                         f"v{LABELS_VERSION}")
    if not isinstance(data["episodes"], list):
        raise So101Error(f"{path}: 'episodes' must be a list of {{episode, first_success, source}}")
    steps = {int(e["index"]): int(e["steps"]) for e in recording.episodes}
    labels = Labels(origin=str(path))
    for n, entry in enumerate(data["episodes"]):
        where = f"{path}: episodes[{n}]"
        if not isinstance(entry, dict):
            raise So101Error(f"{where}: expected an object {{episode, first_success, source}}, got {entry!r}")
        _check_keys(where, entry, ("episode", "first_success", "source"), ("episode", "first_success", "source"))
        k, first, source = entry["episode"], entry["first_success"], entry["source"]
        if not isinstance(k, int) or isinstance(k, bool) or k not in steps:
            raise So101Error(f"{where}: episode {k!r} is not in {recording.folder} (episodes: {_span(steps)})")
        if k in labels.episodes:
            raise So101Error(f"{where}: episode {k} is labelled twice")
        if first is not None and (not isinstance(first, int) or isinstance(first, bool)
                                  or not 0 <= first < steps[k]):
            raise So101Error(f"{where}: first_success {first!r} must be a row 0..{steps[k] - 1} of episode {k}, or "
                             f"null")
        if source not in SOURCES:
            raise So101Error(f"{where}: source {source!r} must be one of {', '.join(SOURCES)}"
                             f"{did_you_mean(source, SOURCES)}")
        labels.episodes[k] = EpisodeLabel(k, first, source)
    return labels


def _span(numbers: Sequence[int] | dict) -> str:
    numbers = sorted(numbers)
    if not numbers:
        return "none"
    return f"{numbers[0]}..{numbers[-1]}" if numbers == list(range(numbers[0], numbers[-1] + 1)) else \
        ", ".join(map(str, numbers))


def save_labels(labels: Labels, path: str | Path) -> Path:
    """Write a labels file by a rename, so a reader never sees half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(labels.to_json())
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise So101Error(f"{path}: cannot write the labels ({exc.strerror})") from None
    labels.origin = str(path)
    return path


def labels_for(recording: Recording, path: str | Path | None = None) -> Labels:
    """A recording's labels: its labels file if there is one (or ``path``), else the twin's rule."""
    if path is not None or labels_path(recording).is_file():
        return load_labels(recording, path)
    if not recording.episodes:
        raise So101Error(f"{recording.folder}: the recording has no episodes")
    if "cube_pos" not in recording.load(0):
        raise So101Error(f"{recording.folder}: no labels ({LABELS_FILE}) and not a twin recording; label it with "
                         f"'so101 reward label {recording.folder} --episode K --first-success ROW'")
    return label_from_twin(recording)


def set_label(recording: Recording, episode: int, first_success: int | None,
              path: str | Path | None = None) -> EpisodeLabel:
    """A person's label for one episode, written into the labels file (made if missing)."""
    target = labels_path(recording, path)
    labels = load_labels(recording, target) if target.is_file() else Labels(origin=str(target))
    steps = {int(e["index"]): int(e["steps"]) for e in recording.episodes}
    if episode not in steps:
        raise So101Error(f"@episode {episode}: not in {recording.folder} (episodes: {_span(steps)})")
    if first_success is not None and not 0 <= first_success < steps[episode]:
        raise So101Error(f"@first_success {first_success}: episode {episode} has rows 0..{steps[episode] - 1}")
    labels.episodes[episode] = EpisodeLabel(episode, first_success, "person")
    save_labels(labels, target)
    return labels.episodes[episode]


def write_twin_labels(recording: Recording, path: str | Path | None = None) -> tuple[Labels, int]:
    """The twin's labels written to the labels file; a person's labels there are kept.

    Returns the labels written and how many of them were a person's.
    """
    target = labels_path(recording, path)
    twin = label_from_twin(recording)
    kept = 0
    if target.is_file():
        for k, label in load_labels(recording, target).episodes.items():
            if label.source == "person":
                twin.episodes[k], kept = label, kept + 1
    save_labels(twin, target)
    return twin, kept


# =================================================================================== model


class RewardNet(nn.Module):
    """Frame (B, C, 84, 84), pixel values in [0, 255] -> success logit (B,).

    Four 3x3 convolutions (three of stride 2: 84 -> 41 -> 20 -> 9 -> 7), global average
    pooling, a 64-unit hidden layer: ~37k parameters for two channels.
    """

    def __init__(self, in_channels: int, widths: Sequence[int] = (16, 32, 32, 64), hidden: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, stride=2 if i < len(widths) - 1 else 1), nn.ReLU()]
            c = w
        self.convs = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.float() / 255.0  # the one place pixels are scaled, as the policy's encoder does it
        return self.head(self.convs(x).mean(dim=(2, 3))).squeeze(-1)


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything the weights need to see a frame as in training (saved as ``classifier.yaml``)."""

    input: InputKind
    channels: list[str]
    image_size: tuple[int, int]  # (H, W)
    crop: str  # the spec's observation.crop, applied to camera RGB
    source_size: tuple[int, int]  # (H, W) of the camera image the spec expects
    widths: tuple[int, ...] = (16, 32, 32, 64)
    hidden: int = 64
    threshold: float = 0.5
    target_precision: float = 0.95
    threshold_at_target_precision: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # on the held-out episodes
    trained_on: list[dict[str, Any]] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("image_size", "source_size", "widths"):
            data[key] = list(data[key])
        return {"format": CLASSIFIER_FORMAT, "version": CLASSIFIER_VERSION, **data}


class Classifier:
    """A :class:`RewardNet` with the config that says how its frames are made."""

    def __init__(self, net: RewardNet, config: ClassifierConfig):
        self.net = net.eval()
        self.config = config

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """What the net takes, (C, H, W) uint8, from a frame as the control loop has it.

        ``obs``: a policy frame (C, H, W), or a stack of them (oldest first, as the spec
        stacks them), of which the newest is used. ``rgb``: a camera image (H, W, 3),
        centre-cropped with the spec's crop and resized with area averaging.
        """
        cfg = self.config
        frame = np.asarray(frame)
        if cfg.input == "rgb":
            if frame.ndim != 3 or frame.shape[2] != 3:
                raise So101Error(f"the classifier takes camera RGB (H, W, 3); got an array of shape {frame.shape}")
            rows, cols = center_crop_box(frame.shape[0], frame.shape[1], cfg.crop)
            size = (cfg.image_size[1], cfg.image_size[0])  # cv2 takes (W, H)
            resized = cv2.resize(np.ascontiguousarray(frame[rows, cols]), size, interpolation=_RGB_INTERPOLATION)
            return np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.uint8)
        c = len(cfg.channels)
        if frame.ndim != 3 or frame.shape[0] % c or tuple(frame.shape[1:]) != tuple(cfg.image_size):
            raise So101Error(f"the classifier takes policy frames ({c}, {cfg.image_size[0]}, {cfg.image_size[1]}) "
                             f"({', '.join(cfg.channels)}); got an array of shape {frame.shape}")
        return np.ascontiguousarray(frame[-c:], dtype=np.uint8)

    @torch.no_grad()
    def probabilities(self, frames: np.ndarray, batch: int = 256) -> np.ndarray:
        """(N,) success probabilities of prepared frames (N, C, H, W) uint8."""
        device = next(self.net.parameters()).device
        out = [torch.sigmoid(self.net(torch.from_numpy(frames[i:i + batch]).to(device))).cpu()
               for i in range(0, len(frames), batch)]
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)

    def probability(self, frame: np.ndarray) -> float:
        """The success probability of one frame as the control loop has it (see :meth:`prepare`)."""
        return float(self.probabilities(self.prepare(frame)[None])[0])


def _atomic_folder(out: Path, overwrite: bool, write: Callable[[Path], None]) -> Path:
    """Make ``out`` by writing a hidden sibling and renaming it: a kill leaves the old folder or the new."""
    if out.exists() and not overwrite:
        raise So101Error(f"{out}: already exists; choose another @out or pass @force")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
    except OSError as exc:
        raise So101Error(f"{out}: cannot write there ({exc.strerror})") from None
    try:
        write(tmp)
        old = out.with_name(f".{out.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def save_classifier(classifier: Classifier, out: str | Path, overwrite: bool = False) -> Path:
    """Write ``out/{weights.safetensors, classifier.yaml}``, never half a folder."""

    def write(folder: Path) -> None:
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in classifier.net.state_dict().items()}
        save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": CLASSIFIER_FORMAT})
        share_like_the_user(folder / WEIGHTS_FILE)
        (folder / CONFIG_FILE).write_text(yaml.safe_dump(classifier.config.to_dict(), sort_keys=False))

    return _atomic_folder(Path(out), overwrite, write)


def load_classifier(folder: str | Path, device: str = "cpu") -> Classifier:
    """Read a classifier folder: safetensors and ``yaml.safe_load``, no pickle."""
    folder = Path(folder)
    if not folder.is_dir():
        raise So101Error(f"{folder}: no such classifier folder (train one with 'so101 reward train')")
    for needed in (WEIGHTS_FILE, CONFIG_FILE):
        if not (folder / needed).is_file():
            raise So101Error(f"{folder}: missing {needed}; a classifier folder is written by 'so101 reward train'")
    try:
        data = yaml.safe_load((folder / CONFIG_FILE).read_text())
    except yaml.YAMLError as exc:
        raise So101Error(f"{folder / CONFIG_FILE}: {yaml_problem(exc)}") from None
    if not isinstance(data, dict) or data.get("format") != CLASSIFIER_FORMAT:
        raise So101Error(f"{folder / CONFIG_FILE}: not a reward classifier config (format {CLASSIFIER_FORMAT!r})")
    fields = set(ClassifierConfig.__dataclass_fields__)
    body = {k: v for k, v in data.items() if k not in ("format", "version")}
    _check_keys(str(folder / CONFIG_FILE), body, sorted(fields), ("input", "channels", "image_size", "crop"))
    body["image_size"] = tuple(body["image_size"])
    body["source_size"] = tuple(body.get("source_size", body["image_size"]))
    body["widths"] = tuple(body.get("widths", ClassifierConfig.widths))
    if body["input"] not in INPUTS:
        raise So101Error(f"{folder / CONFIG_FILE}: input {body['input']!r} must be one of {', '.join(INPUTS)}")
    config = ClassifierConfig(**body)
    try:
        weights = load_file(str(folder / WEIGHTS_FILE))
        with safe_open(str(folder / WEIGHTS_FILE), "pt") as f:
            tag = (f.metadata() or {}).get("format")
    except (SafetensorError, OSError, ValueError) as exc:
        raise So101Error(f"{folder / WEIGHTS_FILE}: not a readable safetensors file (truncated?): {exc}") from None
    if tag != CLASSIFIER_FORMAT:
        raise So101Error(f"{folder / WEIGHTS_FILE}: not a reward classifier's weights (format tag {tag!r})")
    net = RewardNet(len(config.channels), config.widths, config.hidden)
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:
        raise So101Error(f"{folder / WEIGHTS_FILE}: the weights do not fit the config's network "
                         f"({str(exc).splitlines()[0]})") from None
    return Classifier(net.to(device), config)


# =================================================================================== data


@dataclass(frozen=True)
class Dataset:
    """A recording and, optionally, its labels file (default: its ``labels.json``, else the twin's rule)."""

    recording: Path
    labels: Path | None = None


@dataclass
class Frames:
    """Labelled frames of several episodes, one row per frame."""

    images: np.ndarray  # (N, C, H, W) uint8, as the classifier takes them
    labels: np.ndarray  # (N,) bool: shows success
    episode: np.ndarray  # (N,) int: index into ``keys``
    row: np.ndarray  # (N,) int: the row within its episode
    keys: list[tuple[str, int]]  # per episode: (recording folder, episode number)
    sources: list[dict[str, Any]]  # per recording: folder, labels, episodes used

    def take(self, mask: np.ndarray) -> Frames:
        return Frames(self.images[mask], self.labels[mask], self.episode[mask], self.row[mask], self.keys,
                      self.sources)


def _as_dataset(item: Dataset | str | Path) -> Dataset:
    return item if isinstance(item, Dataset) else Dataset(Path(item))


def _input_config(recordings: list[Recording], input_kind: str) -> ClassifierConfig:
    """The frame layout of the recordings (their specs must agree): what the classifier will take."""
    if input_kind not in INPUTS:
        raise So101Error(f"@input {input_kind!r}: use one of {', '.join(INPUTS)}{did_you_mean(input_kind, INPUTS)}")
    layouts = {}
    for rec in recordings:
        obs = rec.spec.observation
        channels = ["r", "g", "b"] if input_kind == "rgb" else list(obs.channels)
        layouts[str(rec.folder)] = (tuple(channels), tuple(obs.image_size), obs.crop, tuple(obs.source_size))
    if len(set(layouts.values())) > 1:
        (a, la), (b, lb) = list(layouts.items())[:2] if len(layouts) == 2 else _differing(layouts)
        raise So101Error(f"{a} and {b}: their specs make different frames ({la} vs {lb}); train on one kind")
    channels, image_size, crop, source_size = next(iter(layouts.values()))
    return ClassifierConfig(input=input_kind, channels=list(channels), image_size=image_size, crop=crop,
                            source_size=source_size)


def _differing(layouts: dict) -> list:
    items = list(layouts.items())
    return [items[0], next(item for item in items if item[1] != items[0][1])]


def load_frames(datasets: Sequence[Dataset | str | Path], input_kind: InputKind = "obs",
                config: ClassifierConfig | None = None) -> tuple[Frames, ClassifierConfig]:
    """Every labelled frame of the datasets, prepared for ``input_kind`` (or an existing ``config``)."""
    datasets = [_as_dataset(d) for d in datasets]
    if not datasets:
        raise So101Error("no recordings given")
    recordings = [Recording(d.recording) for d in datasets]
    config = config or _input_config(recordings, input_kind)
    for rec in recordings:
        channels = list(rec.spec.observation.channels)
        if config.input == "obs" and channels != list(config.channels):
            raise So101Error(f"{rec.folder}: its policy frames are {', '.join(channels)}; the classifier takes "
                             f"{', '.join(config.channels)}")
    preparer = Classifier(RewardNet(len(config.channels), config.widths, config.hidden), config)
    images, labels, episode, rows, keys, sources = [], [], [], [], [], []
    for dataset, rec in zip(datasets, recordings, strict=True):
        ep_labels = labels_for(rec, dataset.labels)
        positions = _episode_positions(rec)
        used = []
        for k in sorted(ep_labels.episodes):
            arrays = rec.load(positions[k])
            frames = _episode_frames(rec, arrays, preparer)
            n = len(frames)
            if ep_labels.episodes[k].first_success is not None and ep_labels.episodes[k].first_success >= n:
                raise So101Error(f"{ep_labels.origin}: episode {k}: first_success {ep_labels.episodes[k].first_success}"
                                 f" is past its {n} rows")
            images.append(frames)
            labels.append(ep_labels.episodes[k].positives(n))
            episode.append(np.full(n, len(keys)))
            rows.append(np.arange(n))
            keys.append((str(rec.folder), k))
            used.append(k)
        sources.append({"recording": str(rec.folder.resolve()), "labels": ep_labels.origin, "episodes": used})
    if not images:
        raise So101Error(f"no labelled episodes in {', '.join(str(d.recording) for d in datasets)}")
    frames = Frames(np.concatenate(images), np.concatenate(labels), np.concatenate(episode), np.concatenate(rows),
                    keys, sources)
    return frames, config


def _episode_frames(rec: Recording, arrays: dict[str, np.ndarray], preparer: Classifier) -> np.ndarray:
    if preparer.config.input == "rgb":
        if "rgb_jpeg" not in arrays:
            raise So101Error(f"{rec.folder}: the recording holds no camera images, which @input rgb needs; record "
                             f"with RGB (the default of 'so101 infer --record') or use @input obs")
        return np.stack([preparer.prepare(rec.rgb(arrays, i)) for i in range(len(arrays["rgb_offsets"]) - 1)])
    if "obs" not in arrays:
        raise So101Error(f"{rec.folder}: the recording holds no policy frames (recorded without perception)")
    return np.stack([preparer.prepare(frame) for frame in arrays["obs"]])


def split_by_episode(frames: Frames, heldout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) masks over frames; an episode's frames all fall on one side.

    Episodes with and without success frames are split separately, so both sides get some
    of each where there are at least two of a kind.
    """
    rng = np.random.default_rng(seed)
    n_eps = len(frames.keys)
    has_positive = np.zeros(n_eps, dtype=bool)
    has_positive[np.unique(frames.episode[frames.labels])] = True
    held: list[int] = []
    for group in (np.flatnonzero(has_positive), np.flatnonzero(~has_positive)):
        if len(group) >= 2 and heldout > 0:
            k = min(len(group) - 1, max(1, round(heldout * len(group))))
            held += rng.choice(group, size=k, replace=False).tolist()
    held_mask = np.isin(frames.episode, held)
    return ~held_mask, held_mask


# =================================================================================== metrics


@dataclass
class Metrics:
    """Scores of a classifier on labelled frames, at ``threshold`` (None where undefined)."""

    frames: int
    positives: int
    negatives: int
    threshold: float
    precision: float | None
    recall: float | None
    f1: float | None
    balanced_accuracy: float | None
    roc_auc: float | None
    confusion: dict[str, int]  # tp, fp, tn, fn
    target_precision: float
    threshold_at_target_precision: float | None  # the lowest threshold whose precision meets the target
    recall_at_target_precision: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def roc_auc(probs: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve: the chance that a random positive scores above a random negative
    (ties count half), by the rank-sum formula."""
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(probs, kind="mergesort")
    sorted_p = np.asarray(probs)[order]
    ranks = np.empty(len(probs))
    start = 0
    while start < len(sorted_p):  # tied scores share their average rank
        end = start
        while end + 1 < len(sorted_p) and sorted_p[end + 1] == sorted_p[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def threshold_for_precision(probs: np.ndarray, labels: np.ndarray, target: float) -> tuple[float | None, float | None]:
    """(the lowest threshold at which precision >= target, the recall there); (None, None) if none reaches it."""
    labels = np.asarray(labels, dtype=bool)
    best = (None, None)
    for t in np.unique(probs)[::-1]:  # from the strictest: recall only grows as the threshold falls
        predicted = probs >= t
        precision = _ratio(int((predicted & labels).sum()), int(predicted.sum()))
        if precision is not None and precision >= target:
            best = (float(t), _ratio(int((predicted & labels).sum()), int(labels.sum())))
    return best


def score(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5, target_precision: float = 0.95) -> Metrics:
    """All the metrics of probabilities against labels."""
    labels = np.asarray(labels, dtype=bool)
    predicted = np.asarray(probs) >= threshold
    tp, fp = int((predicted & labels).sum()), int((predicted & ~labels).sum())
    fn, tn = int((~predicted & labels).sum()), int((~predicted & ~labels).sum())
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    balanced = (recall + specificity) / 2 if recall is not None and specificity is not None else None
    t_target, r_target = threshold_for_precision(probs, labels, target_precision)
    return Metrics(frames=len(labels), positives=int(labels.sum()), negatives=int((~labels).sum()),
                   threshold=float(threshold), precision=precision, recall=recall, f1=f1, balanced_accuracy=balanced,
                   roc_auc=roc_auc(probs, labels), confusion={"tp": tp, "fp": fp, "tn": tn, "fn": fn},
                   target_precision=target_precision, threshold_at_target_precision=t_target,
                   recall_at_target_precision=r_target)


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
        tile[top:top + h + 6, 0:w + 6] //= 3  # darkened strip: readable on any background
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
        config = ClassifierConfig("rgb", ["r", "g", "b"], tuple(obs.image_size), obs.crop, tuple(obs.source_size))
    else:
        config = _input_config([recording], "obs")
    frames = _episode_frames(recording, arrays, Classifier(RewardNet(len(config.channels)), config))
    positive = label.positives(len(frames)) if label else np.zeros(len(frames), dtype=bool)
    tiles = [_tile(frames[i], config.channels, [f"row {i}"], (40, 200, 60) if positive[i] else None)
             for i in range(0, len(frames), every)]
    return _write_png(path, _grid(tiles, columns))


# =================================================================================== training


@dataclass(frozen=True)
class TrainOptions:
    """The knobs of :func:`train_classifier`; the defaults train the twin's classifier in seconds."""

    epochs: int = 25
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    heldout: float = 0.25  # fraction of episodes held out for the metrics
    aug_pad: int = 4  # DrQ's random shift, +-4 px
    seed: int = 0
    threshold: float = 0.5
    target_precision: float = 0.95
    device: str = "cpu"

    def check(self) -> None:
        if self.epochs < 1:
            raise So101Error("@epochs must be at least 1")
        if self.batch_size < 1:
            raise So101Error("@batch_size must be at least 1")
        if not 0.0 <= self.heldout < 1.0:
            raise So101Error(f"@heldout {self.heldout}: a fraction of the episodes, 0 <= f < 1")
        if not 0.0 < self.threshold < 1.0:
            raise So101Error(f"@threshold {self.threshold}: a probability, 0 < t < 1")
        if not 0.0 < self.target_precision <= 1.0:
            raise So101Error(f"@target_precision {self.target_precision}: 0 < p <= 1")
        if self.lr <= 0:
            raise So101Error("@lr must be positive")
        check_device(self.device)


@dataclass
class TrainResult:
    folder: Path
    classifier: Classifier
    metrics: Metrics | None  # on the held-out episodes; None when none were held out
    train_frames: int
    train_positives: int
    heldout_episodes: list[tuple[str, int]]
    seconds: float


def _fit(net: RewardNet, images: np.ndarray, labels: np.ndarray, opts: TrainOptions) -> float:
    """Minibatch Adam on the class-weighted logistic loss; returns the last epoch's mean loss."""
    gen = torch.Generator().manual_seed(opts.seed)
    x_all = torch.from_numpy(images)
    y_all = torch.from_numpy(labels.astype(np.float32))
    n_pos = float(labels.sum())
    # Negatives outnumber positives (2-3x is typical): weight positives up so that both
    # classes count alike, which is what balanced accuracy measures.
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(labels) - n_pos) / n_pos, device=opts.device))
    optim = torch.optim.AdamW(net.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    batches = math.ceil(len(labels) / opts.batch_size)
    from tqdm import tqdm

    bar = tqdm(total=opts.epochs * batches, unit="batch", desc="training", file=sys.stderr, leave=False,
               disable=not sys.stderr.isatty(), dynamic_ncols=True)
    net.train()
    loss_sum = 0.0
    try:
        for epoch in range(opts.epochs):
            order = torch.randperm(len(labels), generator=gen)
            loss_sum = 0.0
            for b in range(batches):
                idx = order[b * opts.batch_size:(b + 1) * opts.batch_size]
                x = random_shift(x_all[idx].float().to(opts.device), opts.aug_pad, generator=gen)
                loss = loss_fn(net(x), y_all[idx].to(opts.device))
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                loss_sum += float(loss.detach()) * len(idx)
                bar.update(1)
            bar.set_postfix_str(f"epoch {epoch + 1} loss {loss_sum / len(labels):.4f}", refresh=False)
    finally:
        bar.close()
    net.eval()
    return loss_sum / len(labels)


def train_classifier(datasets: Sequence[Dataset | str | Path], out: str | Path, input_kind: InputKind = "obs",
                     options: TrainOptions | None = None, overwrite: bool = False) -> TrainResult:
    """Train a reward classifier on labelled recordings and save it to the folder ``out``.

    Whole episodes are held out (``options.heldout`` of those with success frames and of
    those without); the metrics in ``classifier.yaml`` are on them. Seeded: the same data
    and options give the same weights on one machine.
    """
    opts = options or TrainOptions()
    opts.check()
    out = Path(out)
    if out.exists() and not overwrite:  # before the training, not after it
        raise So101Error(f"{out}: already exists; choose another @out or pass @force")
    started = time.monotonic()
    frames, config = load_frames(datasets, input_kind)
    train_mask, held_mask = split_by_episode(frames, opts.heldout, opts.seed)
    train = frames.take(train_mask)
    n_pos = int(train.labels.sum())
    if n_pos == 0:
        raise So101Error("no success frames to train on: label some (first_success) or record successful episodes")
    if n_pos == len(train.labels):
        raise So101Error("no frames without success to train on: every labelled frame shows success")
    torch.manual_seed(opts.seed)
    net = RewardNet(len(config.channels), config.widths, config.hidden).to(opts.device)
    final_loss = _fit(net, train.images, train.labels, opts)
    held = frames.take(held_mask)
    metrics = None
    classifier = Classifier(net, config)
    if len(held.labels):
        metrics = score(classifier.probabilities(held.images), held.labels, opts.threshold, opts.target_precision)
    held_keys = [frames.keys[e] for e in np.unique(held.episode)]
    seconds = time.monotonic() - started
    classifier.config = _with_results(config, opts, metrics, frames, held_keys, train, final_loss, seconds)
    folder = save_classifier(classifier, out, overwrite)
    return TrainResult(folder, classifier, metrics, len(train.labels), n_pos, held_keys, seconds)


def _with_results(config: ClassifierConfig, opts: TrainOptions, metrics: Metrics | None, frames: Frames,
                  held_keys: list[tuple[str, int]], train: Frames, final_loss: float,
                  seconds: float) -> ClassifierConfig:
    held = {f"{Path(folder).resolve()}#{k}" for folder, k in held_keys}
    trained_on = [{**src, "heldout": [k for k in src["episodes"] if f"{src['recording']}#{k}" in held]}
                  for src in frames.sources]
    training = {"epochs": opts.epochs, "batch_size": opts.batch_size, "lr": opts.lr,
                "weight_decay": opts.weight_decay, "aug_pad": opts.aug_pad, "seed": opts.seed,
                "heldout_fraction": opts.heldout, "train_frames": int(len(train.labels)),
                "train_positives": int(train.labels.sum()), "final_loss": round(final_loss, 6),
                "seconds": round(seconds, 1), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return replace(config, threshold=opts.threshold, target_precision=opts.target_precision,
                   threshold_at_target_precision=metrics.threshold_at_target_precision if metrics else None,
                   metrics=metrics.to_dict() if metrics else {}, trained_on=trained_on, training=training)


# =================================================================================== the judge


class SuccessJudge:
    """Success in the loop: ``consecutive`` frames in a row at or above ``threshold``, and at
    least ``min_steps`` steps into the episode (a classifier's flicker, or a frame that
    looks lifted at the start, must not end an episode).

    ``classifier`` needs only ``probability(frame) -> float``; a :class:`Classifier` prepares
    the frame (crop, size, channels) from its saved config.
    """

    def __init__(self, classifier: Any, threshold: float = 0.7, consecutive: int = 3, min_steps: int = 10):
        if consecutive < 1:
            raise So101Error("@consecutive must be at least 1")
        if not 0.0 < threshold <= 1.0:
            raise So101Error(f"@threshold {threshold}: a probability, 0 < t <= 1")
        self.classifier, self.threshold = classifier, threshold
        self.consecutive, self.min_steps = consecutive, min_steps
        self.reset()

    def reset(self) -> None:
        """A new episode: the run of confident frames starts again."""
        self.run = 0

    def update(self, frame: np.ndarray, step: int) -> tuple[float, bool]:
        """(probability of ``frame``, whether the episode has succeeded at ``step``)."""
        p = self.classifier.probability(frame)
        self.run = self.run + 1 if p >= self.threshold else 0
        return p, self.run >= self.consecutive and step >= self.min_steps
