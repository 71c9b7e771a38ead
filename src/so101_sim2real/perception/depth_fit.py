"""``so101 depth fit``: the Depth Anything V2 Small architecture fitted to a stand-in's disparity.

The real Depth Anything weights cannot be downloaded everywhere (not on this build
machine), and random weights give shapeless disparity. A stand-in world still needs
perception that errs like a network. Here the architecture learns the twin's own
disparity from its renders. What comes out is marked as a stand-in's
(:data:`~so101_sim2real.perception.STANDIN_MARK`): it knows the stand-in's picture, and it
is never offered as real depth. A real arm refuses it.

The loop, top to bottom:

- frames at the depth profile's input (the short side ``side`` px, a multiple of the
  14-pixel patch, bicubic, as :class:`~so101_sim2real.perception.depth.DepthModel` feeds
  it);
- targets: the twin's disparity 1 / (depth + epsilon), min-max normalised per frame, as
  ``finish_frame`` normalises the observation;
- the loss: MiDaS's scale-and-shift-invariant loss (each map less its median, over its mean
  absolute deviation; the network's disparity is relative, but near stays bright);
- AdamW with cosine decay;
- each epoch, the held-out frames scored by the rank correlation (Spearman) and by the
  median error in 8-bit levels after both are min-max normalised; the best epoch is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from so101_sim2real.files import write_folder
from so101_sim2real.perception import STANDIN_MARK
from so101_sim2real.perception.depth import input_size, small_config
from so101_sim2real.perception.segmentation import to_tensor

EPSILON_M = 0.001  # the spec's disparity epsilon
REPORT_FILE = "so101_depth_fit.json"


@dataclass(frozen=True)
class DepthFitConfig:
    """How the network is fitted."""

    epochs: int = 8
    batch_size: int = 8
    lr: float = 1e-4
    side: int = 140  # the fast profile's depth input
    seed: int = 0


@dataclass
class DepthReport:
    """Per epoch the loss and the held-out scores; the best epoch's."""

    epochs: list[dict] = field(default_factory=list)  # {"epoch", "loss", "spearman", "error_levels", "seconds"}
    best_epoch: int = 0
    spearman: float = 0.0  # median over held-out frames
    error_levels: float = 0.0  # median |prediction - truth| after both are normalised to 0-255
    train_frames: int = 0
    held_out_frames: int = 0
    source: str = ""


def normalised_disparity(depth_m: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Frames' metric depth ``(N, H, W)`` -> disparity in [0, 1] per frame at ``size``."""
    disparity = 1.0 / (torch.from_numpy(np.asarray(depth_m, np.float32)) + EPSILON_M)
    disparity = F.interpolate(disparity[:, None], size=size, mode="area")[:, 0]
    low = disparity.flatten(1).min(1).values.view(-1, 1, 1)
    high = disparity.flatten(1).max(1).values.view(-1, 1, 1)
    return (disparity - low) / (high - low).clamp_min(1e-6)


def _standardised(x: torch.Tensor) -> torch.Tensor:
    """Each row less its median, over its mean absolute deviation: free of scale and shift, not of sign."""
    centred = x - x.median(1, keepdim=True).values
    return centred / centred.abs().mean(1, keepdim=True).clamp_min(1e-6)


def scale_shift_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MiDaS's scale-and-shift-invariant loss: the mean absolute difference of the two, each
    standardised per frame. A positive scale only: near must stay bright (a least-squares fit
    would let the network learn the picture upside down, inverted disparity at a negative scale)."""
    return (_standardised(prediction.flatten(1)) - _standardised(target.flatten(1))).abs().mean()


def _inputs(rgb: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    return torch.cat([to_tensor(frame, size, torch.device("cpu"), "bicubic") for frame in rgb])


def spearman(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Rank correlation with tied values sharing their average rank; 0 for a constant map (a
    dead head ranks nothing: ties broken by pixel order would score it near 1)."""
    from scipy.stats import spearmanr

    if np.ptp(predicted) == 0 or np.ptp(truth) == 0:
        return 0.0
    rho = float(spearmanr(predicted, truth).statistic)
    return rho if np.isfinite(rho) else 0.0


@torch.inference_mode()
def score(net: torch.nn.Module, rgb: np.ndarray, depth_m: np.ndarray, side: int) -> tuple[float, float]:
    """(median Spearman, median error in levels) of the network's disparity against the twin's."""
    size = input_size(rgb.shape[1], rgb.shape[2], side)
    net.eval()
    rhos, errors = [], []
    for i in range(len(rgb)):
        predicted = net(pixel_values=_inputs(rgb[i:i + 1], size)).predicted_depth[0].numpy().ravel()
        truth = normalised_disparity(depth_m[i:i + 1], size)[0].numpy().ravel()
        rhos.append(spearman(predicted, truth))
        span = max(float(predicted.max() - predicted.min()), 1e-6)
        errors.append(float(np.median(np.abs((predicted - predicted.min()) / span - truth))) * 255)
    return float(np.median(rhos)), float(np.median(errors))


def fit_depth(train_rgb: np.ndarray, train_depth: np.ndarray, held_rgb: np.ndarray, held_depth: np.ndarray,
              cfg: DepthFitConfig, init: torch.nn.Module | None = None,
              on_step: Callable[[int, int, float], None] | None = None,
              on_epoch: Callable[[dict], None] | None = None) -> tuple[torch.nn.Module, DepthReport]:
    """The network fitted to the training frames' disparity (from ``init``, else random weights of
    the Small architecture); the epoch that scored best on the held-out frames kept."""
    from transformers import DepthAnythingForDepthEstimation

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net: torch.nn.Module
    if init is None:
        fresh = DepthAnythingForDepthEstimation(small_config())
        # the head ends in a ReLU: started below zero everywhere, its output is a constant 0 with no
        # gradient, and a fit from random weights stalls there (a loss stuck at 1.0); start it above
        with torch.no_grad():
            fresh.head.conv3.bias.fill_(1.0)
        net = fresh
    else:
        net = init
    size = input_size(train_rgb.shape[1], train_rgb.shape[2], cfg.side)
    targets = normalised_disparity(train_depth, size)
    steps_per_epoch = max(1, len(train_rgb) // cfg.batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps_per_epoch * cfg.epochs)
    report = DepthReport(train_frames=len(train_rgb), held_out_frames=len(held_rgb))
    best: dict[str, torch.Tensor] | None = None
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        started, losses = time.perf_counter(), []
        net.train()
        order = rng.permutation(len(train_rgb))
        for first in range(0, steps_per_epoch * cfg.batch_size, cfg.batch_size):
            rows = order[first:first + cfg.batch_size]
            loss = scale_shift_loss(net(pixel_values=_inputs(train_rgb[rows], size)).predicted_depth, targets[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            step += 1
            losses.append(loss.item())
            if on_step:
                on_step(step, steps_per_epoch * cfg.epochs, losses[-1])
        rho, error = score(net, held_rgb, held_depth, cfg.side)
        report.epochs.append({"epoch": epoch, "loss": float(np.mean(losses)), "spearman": rho, "error_levels": error,
                              "seconds": time.perf_counter() - started})
        if on_epoch:
            on_epoch(report.epochs[-1])
        if best is None or rho > report.spearman:
            best = {k: v.detach().clone() for k, v in net.state_dict().items()}
            report.best_epoch, report.spearman, report.error_levels = epoch, rho, error
    assert best is not None  # at least one epoch ran
    net.load_state_dict(best)
    return net.eval(), report


def save_depth(out: str | Path, net: torch.nn.Module, report: DepthReport) -> Path:
    """The fitted network as a ``save_pretrained`` folder ``--depth-model`` reads, marked as a
    stand-in's (its config carries the mark), with the report beside it; written whole or not at all."""
    import json

    def write(staging: Path) -> None:
        model = cast(Any, net)  # a transformers model: its config and save_pretrained
        setattr(model.config, STANDIN_MARK, "fitted to a stand-in world's disparity: not real depth")
        model.save_pretrained(staging)
        (staging / REPORT_FILE).write_text(json.dumps(asdict(report), indent=1))

    return write_folder(out, write, overwrite=True)
