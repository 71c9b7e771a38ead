"""``so101 seg train``: fit the user's segmentation architecture (EfficientViT-B0 + FPN) to labelled frames.

The loop is plain supervised learning, written out so it reads top to bottom:

- each step draws a batch of frames at random scales (the short side 192-288 px), cut to
  192 x 192 at random (never flipped: the static finger is always on the same side of a
  wrist camera's picture, and a flip would teach the fingers' classes by chance);
- cross-entropy on the real class ids (``unlabeled`` ignored), AdamW, cosine decay;
- the held-out frames are scored per class (IoU) after each epoch, and the best epoch's
  weights are kept.

The scales cover both profiles' inputs: the fast profile's crop at 192 px, and the exact
profile's whole frame at the size the checkpoint names, 240 x 320.

The checkpoint is a Lightning ``.ckpt`` in the layout :func:`load_segmentation` reads
(``state_dict`` under ``model.``, ``hyper_parameters``), with what it was trained on.
A network fitted to twin renders is a stand-in's: its checkpoint says so, and it is never
the user's own network.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from so101_sim2real.files import write_file
from so101_sim2real.perception import STANDIN_MARK
from so101_sim2real.perception.label_folder import resized
from so101_sim2real.perception.segmentation import IMAGENET_MEAN, IMAGENET_STD, SegmentationNet

CROP = 192
TRAINED_SIZE = (240, 320)  # what the checkpoint names: the exact profile's whole-frame input
IGNORE = 0  # the real ``unlabeled`` class: never a target


class Labelled(Protocol):
    """Frames ``rgb`` (N, H, W, 3) uint8 with real class ids ``labels`` (N, H, W) uint8."""

    rgb: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class SegTrainConfig:
    """How the network is fitted."""

    epochs: int = 12
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    # None: keep the epoch that scored best; a number: the epoch whose held-out mIoU is nearest
    # it (a stand-in's network that errs as much as the user's, val IoU 0.81, not less)
    target_miou: float | None = None


@dataclass
class SegReport:
    """What training did: per epoch the loss and the held-out mean IoU, and the best epoch's per-class IoU."""

    classes: list[str]
    epochs: list[dict] = field(default_factory=list)  # {"epoch", "loss", "miou", "seconds"}
    best_epoch: int = 0
    per_class_iou: dict[str, float] = field(default_factory=dict)
    miou: float = 0.0
    train_frames: int = 0
    held_out_frames: int = 0
    source: str = ""
    # pictures a person labelled (``--labelled``): how many; with renders too, their held-out pictures
    # picked the epoch, and the kept network's IoU on the held-out renders is here
    labelled_frames: int = 0
    rendered_iou: dict[str, float] = field(default_factory=dict)
    rendered_miou: float | None = None


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _batch(frames: Labelled, rows: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``rows`` at random scales, cut to CROP x CROP."""
    images, targets = [], []
    for i in rows:
        x = torch.from_numpy(frames.rgb[i]).permute(2, 0, 1)[None].float() / 255.0
        y = torch.from_numpy(frames.labels[i].astype(np.int64))[None, None].float()
        height, width = x.shape[-2:]
        scale = rng.uniform(CROP, 1.5 * CROP) / min(height, width)
        size = (max(CROP, round(height * scale)), max(CROP, round(width * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        y = F.interpolate(y, size=size, mode="nearest")
        top, left = rng.integers(0, size[0] - CROP + 1), rng.integers(0, size[1] - CROP + 1)
        x, y = x[..., top:top + CROP, left:left + CROP], y[..., top:top + CROP, left:left + CROP]
        images.append(x)
        targets.append(y[:, 0].long())
    return _normalise(torch.cat(images)), torch.cat(targets)


@torch.inference_mode()
def class_iou(net: SegmentationNet, frames: Labelled, classes: list[str], size: tuple[int, int] = TRAINED_SIZE
              ) -> dict[str, float]:
    """Per-class IoU over ``frames`` (whole frames at ``size``, labels at full size); ``unlabeled`` left out,
    and a class that is nowhere in the labels nor the predictions too."""
    net.eval()
    hits = np.zeros(len(classes))
    union = np.zeros(len(classes))
    for rgb, label in zip(frames.rgb, frames.labels, strict=True):
        x = F.interpolate(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0, size=size,
                          mode="bilinear", align_corners=False)
        logits = F.interpolate(net(_normalise(x)), size=label.shape, mode="bilinear", align_corners=False)
        predicted = logits.argmax(1)[0].numpy()
        for k in range(1, len(classes)):
            p, t = predicted == k, label == k
            hits[k] += np.logical_and(p, t).sum()
            union[k] += np.logical_or(p, t).sum()
    return {classes[k]: float(hits[k] / union[k]) for k in range(1, len(classes)) if union[k] > 0}


def train_segmentation(train: Labelled, held_out: Labelled, classes: list[str], cfg: SegTrainConfig,
                       init: SegmentationNet | None = None,
                       on_step: Callable[[int, int, float], None] | None = None,
                       on_epoch: Callable[[dict], None] | None = None) -> tuple[SegmentationNet, SegReport]:
    """The network fitted to ``train`` (from ``init``'s weights, else a random start), the epoch
    that scored best on ``held_out`` kept (or the one nearest ``cfg.target_miou``);
    ``on_step(step, steps, loss)`` after each step, ``on_epoch(row)`` after each epoch is scored."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = init if init is not None else SegmentationNet(len(classes))
    steps_per_epoch = max(1, len(train.rgb) // cfg.batch_size)
    steps = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    report = SegReport(classes, train_frames=len(train.rgb), held_out_frames=len(held_out.rgb))
    best: dict[str, torch.Tensor] | None = None
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        started, losses = time.perf_counter(), []
        net.train()
        order = rng.permutation(len(train.rgb))
        for first in range(0, steps_per_epoch * cfg.batch_size, cfg.batch_size):
            x, y = _batch(train, order[first:first + cfg.batch_size], rng)
            logits = F.interpolate(net(x), size=y.shape[-2:], mode="bilinear", align_corners=False)
            loss = F.cross_entropy(logits, y, ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            step += 1
            losses.append(loss.item())
            if on_step:
                on_step(step, steps, losses[-1])
        iou = class_iou(net, held_out, classes)
        miou = float(np.mean(list(iou.values()))) if iou else 0.0
        report.epochs.append({"epoch": epoch, "loss": float(np.mean(losses)), "miou": miou,
                              "seconds": time.perf_counter() - started})
        if on_epoch:
            on_epoch(report.epochs[-1])
        if best is None or _better(miou, report.miou, cfg.target_miou):
            best = {k: v.detach().clone() for k, v in net.state_dict().items()}
            report.best_epoch, report.miou, report.per_class_iou = epoch, miou, iou
    assert best is not None  # at least one epoch ran
    net.load_state_dict(best)
    return net.eval(), report


@dataclass
class Mixed:
    """Renders and a person's pictures as one set of training frames (the ``Labelled`` protocol)."""

    rgb: np.ndarray
    labels: np.ndarray


def mixed(renders: Labelled, pictures: Labelled, share: float = 0.25) -> Mixed:
    """``renders`` with ``pictures`` repeated until they are about ``share`` of the frames: a person labels
    tens of frames where the twin renders hundreds, and their camera is the one that counts. The pictures
    are brought to the renders' size first (a mask nearest, never blended)."""
    rgb, labels = resized(pictures.rgb, pictures.labels, renders.rgb.shape[1:3])
    repeats = max(1, round(share * len(renders.rgb) / ((1 - share) * len(rgb))))
    return Mixed(np.concatenate([renders.rgb, *[rgb] * repeats]), np.concatenate([renders.labels, *[labels] * repeats]))


def _better(miou: float, kept: float, target: float | None) -> bool:
    """Whether an epoch scoring ``miou`` replaces the one kept: higher, or nearer the target."""
    return miou > kept if target is None else abs(miou - target) < abs(kept - target)


def save_checkpoint(path: str | Path, net: SegmentationNet, report: SegReport, standin: bool = True) -> Path:
    """A Lightning-layout ``.ckpt`` that :func:`~so101_sim2real.perception.segmentation.load_segmentation`
    reads, with the training report beside the weights (written atomically). ``standin``: fitted to
    a stand-in's renders, marked so that a real arm refuses it."""
    payload: dict = {"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
                     "hyper_parameters": {"num_classes": net.num_classes, "img_height": TRAINED_SIZE[0],
                                          "img_width": TRAINED_SIZE[1]},
                     "so101_seg_train": asdict(report)}
    if standin:
        payload[STANDIN_MARK] = "fitted to a stand-in world's renders: not for a real arm"
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_file(path, buffer.getvalue())


def plot_training(report: SegReport, path: str | Path) -> Path:
    """The training loss and the held-out mean IoU per epoch, and the best epoch's IoU per class."""
    from matplotlib.figure import Figure  # the Agg canvas, no pyplot state

    fig = Figure(figsize=(10, 3.6))
    epochs = [e["epoch"] for e in report.epochs]
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(epochs, [e["loss"] for e in report.epochs], "o-", color="tab:red", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    twin = ax.twinx()
    twin.plot(epochs, [e["miou"] for e in report.epochs], "s-", color="tab:blue", label="held-out mIoU")
    twin.set_ylim(0, 1)
    twin.set_ylabel("held-out mean IoU")
    ax.set_title(f"{report.train_frames} training, {report.held_out_frames} held-out frames")
    bars = fig.add_subplot(1, 2, 2)
    names = list(report.per_class_iou)
    bars.bar(names, [report.per_class_iou[n] for n in names], color="tab:blue")
    bars.axhline(0.81, color="k", ls="--", lw=0.8, label="the user's network: val IoU 0.81")
    bars.set_ylim(0, 1)
    bars.set_title(f"epoch {report.best_epoch}: IoU per class (mean {report.miou:.3f})")
    bars.tick_params(axis="x", rotation=30)
    bars.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return write_file(path, buffer.getvalue())
