"""The reward classifier: does this frame show success (the cube grasped and lifted)?

On a real arm no simulator judges success, so a small CNN on the wrist view does: it
ends HIL-SERL episodes and gives their reward. This module holds the model and what uses
it (training, saving, the judge in the loop); the labels it learns from are in
:mod:`~so101_sim2real.reward.labels`, its metrics in :mod:`~so101_sim2real.reward.metrics`,
its evaluation and pictures in :mod:`~so101_sim2real.reward.evaluate`. The data flow, top to bottom:

1. **Labels**: see :mod:`~so101_sim2real.reward.labels`.
2. **Frames**: the policy's own frame (``obs``: seg + disparity, which lighting does not
   change) or the camera RGB centre-cropped with the spec's crop and resized to the
   policy's image size (``rgb``). :meth:`Classifier.prepare` makes both, for training and at
   run time alike, from the config saved with the weights, so the two cannot drift.
3. **Training** (:func:`train_classifier`): whole episodes are held out (frames of one
   episode are near copies: split by frame and the held-out score means nothing), the loss
   is weighted by the class ratio, frames get DrQ's random shift, the weights are written
   as a folder (``weights.safetensors`` + ``classifier.yaml``) in one rename.
4. **Evaluation**: see :mod:`~so101_sim2real.reward.evaluate`.
5. **The judge** (:class:`SuccessJudge`): success once ``consecutive`` frames in a row are
   at or above the threshold, never before ``min_steps``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
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
from so101_sim2real.devices import check_device
from so101_sim2real.errors import So101Error, did_you_mean
from so101_sim2real.files import check_distinct, check_out_folder, share_like_the_user, write_folder
from so101_sim2real.observation import center_crop_box
from so101_sim2real.policy.augment import random_shift
from so101_sim2real.records import parse_yaml
from so101_sim2real.reward.labels import _check_keys, _episode_positions, labels_for
from so101_sim2real.reward.metrics import Metrics, score
from so101_sim2real.spec import yaml_problem

InputKind = Literal["obs", "rgb"]
INPUTS: tuple[str, ...] = ("obs", "rgb")
WEIGHTS_FILE, CONFIG_FILE = "weights.safetensors", "classifier.yaml"
CLASSIFIER_FORMAT, CLASSIFIER_VERSION = "so101-reward-classifier", 1
_RGB_INTERPOLATION = cv2.INTER_AREA  # a downscale by ~6x: area averaging, as the disparity channel is made


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


def save_classifier(classifier: Classifier, out: str | Path, overwrite: bool = False) -> Path:
    """Write ``out/{weights.safetensors, classifier.yaml}``, never half a folder."""

    def write(folder: Path) -> None:
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in classifier.net.state_dict().items()}
        save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": CLASSIFIER_FORMAT})
        share_like_the_user(folder / WEIGHTS_FILE)
        (folder / CONFIG_FILE).write_text(yaml.safe_dump(classifier.config.to_dict(), sort_keys=False))

    return write_folder(out, write, overwrite)


def load_classifier(folder: str | Path, device: str = "cpu") -> Classifier:
    """Read a classifier folder: safetensors and safe YAML, no pickle."""
    folder = Path(folder)
    if not folder.is_dir():
        raise So101Error(f"{folder}: no such classifier folder (train one with 'so101 reward train')")
    for needed in (WEIGHTS_FILE, CONFIG_FILE):
        if not (folder / needed).is_file():
            raise So101Error(f"{folder}: missing {needed}; a classifier folder is written by 'so101 reward train'")
    try:
        data = parse_yaml((folder / CONFIG_FILE).read_text())
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


def _input_config(recordings: list[Recording], input_kind: InputKind) -> ClassifierConfig:
    """The frame layout of the recordings (their specs must agree): what the classifier will take."""
    if input_kind not in INPUTS:
        raise So101Error(f"@input {input_kind!r}: use one of {', '.join(INPUTS)}{did_you_mean(input_kind, INPUTS)}")
    layouts = {}
    for rec in recordings:
        obs = rec.spec.observation
        channels = ["r", "g", "b"] if input_kind == "rgb" else list(obs.channels)
        (height, width), (source_height, source_width) = obs.image_size, obs.source_size
        layouts[str(rec.folder)] = (tuple(channels), (height, width), obs.crop, (source_height, source_width))
    if len(set(layouts.values())) > 1:
        (a, la), (b, lb) = list(layouts.items())[:2] if len(layouts) == 2 else _differing(layouts)
        raise So101Error(f"{a} and {b}: their specs make different frames ({la} vs {lb}); train on one kind")
    names, image_size, crop, source_size = next(iter(layouts.values()))
    return ClassifierConfig(input=input_kind, channels=list(names), image_size=image_size, crop=crop,
                            source_size=source_size)


def _differing(layouts: dict) -> list:
    items = list(layouts.items())
    return [items[0], next(item for item in items if item[1] != items[0][1])]


def load_frames(datasets: Sequence[Dataset | str | Path], input_kind: InputKind = "obs",
                config: ClassifierConfig | None = None) -> tuple[Frames, ClassifierConfig]:
    """Every labelled frame of the datasets, prepared for ``input_kind`` (or an existing ``config``)."""
    given = [_as_dataset(d) for d in datasets]
    if not given:
        raise So101Error("no recordings given")
    check_distinct([Path(d.recording) for d in given])
    recordings = [Recording(d.recording) for d in given]
    config = config or _input_config(recordings, input_kind)
    for rec in recordings:
        channels = list(rec.spec.observation.channels)
        if config.input == "obs" and channels != list(config.channels):
            raise So101Error(f"{rec.folder}: its policy frames are {', '.join(channels)}; the classifier takes "
                             f"{', '.join(config.channels)}")
    preparer = Classifier(RewardNet(len(config.channels), config.widths, config.hidden), config)
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    episode: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    keys: list[tuple[str, int]] = []
    sources: list[dict[str, Any]] = []
    for dataset, rec in zip(given, recordings, strict=True):
        ep_labels = labels_for(rec, dataset.labels)
        positions = _episode_positions(rec)
        used = []
        for k in sorted(ep_labels.episodes):
            arrays = rec.load(positions[k])
            ep_frames = _episode_frames(rec, arrays, preparer)
            n = len(ep_frames)
            if (first := ep_labels.episodes[k].first_success) is not None and first >= n:
                raise So101Error(f"{ep_labels.origin}: episode {k}: first_success {first} is past its {n} rows")
            images.append(ep_frames)
            labels.append(ep_labels.episodes[k].positives(n))
            episode.append(np.full(n, len(keys)))
            rows.append(np.arange(n))
            keys.append((str(rec.folder), k))
            used.append(k)
        sources.append({"recording": str(rec.folder.resolve()), "labels": ep_labels.origin, "episodes": used})
    if not images:
        raise So101Error(f"no labelled episodes in {', '.join(str(d.recording) for d in given)}")
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
    check_out_folder(out, overwrite)  # before the training, not after it
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
