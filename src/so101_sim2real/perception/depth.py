"""Depth Anything V2 Small (transformers) as a disparity model: near = bigger.

Weights come from a local folder (``save_pretrained`` layout) or a hub id resolved in
the local Hugging Face cache only; nothing is downloaded here (``so101 models
download`` does that, see :mod:`so101_sim2real.perception.hub`). Pre-processing is
the model's own (bicubic resize to multiples of 14, ImageNet mean/std) done in torch,
so a frame never goes through PIL.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from so101_sim2real.errors import So101Error
from so101_sim2real.perception import DEFAULT_DEPTH_MODEL, EXAMPLE_MARK
from so101_sim2real.perception.backends import TORCH, Backend, CoreRunner
from so101_sim2real.perception.segmentation import to_tensor

PATCH = 14
TRAINED_SIDE = 518  # the processor's default input size


class DepthModelMissing(So101Error):
    """The depth model is neither a local folder nor in the local cache."""


def small_config():
    """The Depth Anything V2 Small architecture (docs/reference.md section 3), for random-weight runs."""
    from transformers import DepthAnythingConfig, Dinov2Config

    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4,
                            patch_size=PATCH, image_size=TRAINED_SIDE, out_indices=[3, 6, 9, 12],
                            out_features=["stage3", "stage6", "stage9", "stage12"], reshape_hidden_states=False)
    return DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[48, 96, 192, 384],
                               fusion_hidden_size=64, reassemble_hidden_size=384, depth_estimation_type="relative")


def input_size(height: int, width: int, side: int) -> tuple[int, int]:
    """Network input ``(h, w)``: the shorter side becomes ``side``, the other keeps the
    aspect ratio, both rounded to a multiple of the 14-pixel patch."""
    scale = side / min(height, width)
    return (max(PATCH, round(height * scale / PATCH) * PATCH), max(PATCH, round(width * scale / PATCH) * PATCH))


@dataclass
class DepthModel:
    """A loaded Depth Anything network: RGB -> relative disparity."""

    net: torch.nn.Module
    source: str
    device: torch.device
    backend: Backend = TORCH
    cache: Path | None = None  # exported graphs (default: beside the model cache)

    def __post_init__(self):
        self._core = CoreRunner(DepthCore(self.net), self.backend, self.cache)

    def on_backend(self, backend: Backend, cache: Path | None = None) -> DepthModel:
        """The same network (shared weights) with its core on ``backend``."""
        return dataclasses.replace(self, backend=backend, cache=cache)

    @property
    def example(self) -> bool:
        """Random weights from `so101 models example` (their config carries the mark)."""
        return hasattr(self.net.config, EXAMPLE_MARK)

    @torch.inference_mode()
    def predict(self, rgb: np.ndarray, side: int = TRAINED_SIDE,
                out_size: tuple[int, int] | None = None) -> np.ndarray:
        """RGB uint8 ``(H, W, 3)`` -> disparity float32 ``(h, w)`` at ``out_size`` (default: the image's)."""
        size = input_size(rgb.shape[0], rgb.shape[1], side)
        x = to_tensor(rgb, size, self.device, mode="bicubic")
        disparity = self._core(x)[:, None]
        disparity = F.interpolate(disparity, size=out_size or rgb.shape[:2], mode="bilinear", align_corners=False)
        return disparity[0, 0].float().cpu().numpy()


class DepthCore(torch.nn.Module):
    """The network's ``predicted_depth`` (before any resize to the map size) as a module's forward, for exporters."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net
        # in the net's mode: an exporter puts the wrapper back in its own mode afterwards, recursively
        self.train(net.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=x).predicted_depth


def load_depth(source: str | Path = DEFAULT_DEPTH_MODEL, device: str | torch.device = "cpu",
               cache_dir: str | Path | None = None, option: str = "depth_model") -> DepthModel:
    """A folder written by ``save_pretrained``, or a hub id already in the local cache. ``option``:
    the option that gave it, as errors name it (``so101 depth fit --init`` is not ``--depth-model``)."""
    text = str(source)
    local = Path(text).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise So101Error(f"{local}: not a transformers model folder (no config.json)")
        net = _load(str(local), text)
    elif local.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise So101Error(f"@{option} {text}: no such model folder (give a folder written by save_pretrained, "
                         f"or a hub id such as {DEFAULT_DEPTH_MODEL})")
    else:
        net = _load(text, text, local_files_only=True, cache_dir=cache_dir, option=option)
    dev = torch.device(device)
    return DepthModel(net.to(dev).eval(), text, dev)


def _load(where: str, shown: str, option: str = "depth_model", **kwargs) -> torch.nn.Module:
    from transformers import AutoConfig, DepthAnythingForDepthEstimation
    from transformers.utils import logging

    logging.set_verbosity_error()  # missing weights are checked below and reported as one line
    logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(where, **kwargs)
        if config.model_type != "depth_anything":
            raise So101Error(f"{shown}: a {config.model_type} model, not Depth Anything")
        # with output_loading_info the model comes with what loading found; transformers types only the model
        net, info = cast("tuple[torch.nn.Module, dict[str, Any]]", DepthAnythingForDepthEstimation.from_pretrained(
            where, config=config, output_loading_info=True, **kwargs))
    except OSError as exc:
        if kwargs.get("local_files_only"):
            raise DepthModelMissing(
                f"depth model {shown} is not in the local cache; run `so101 models download {shown}` where the hub "
                f"is reachable (or pass @{option} FOLDER)") from None
        raise So101Error(f"{shown}: cannot read the depth model: {str(exc).strip().splitlines()[0]}") from None
    except (ValueError, KeyError) as exc:  # an unreadable or foreign config
        raise So101Error(f"{shown}: not a Depth Anything model: {str(exc).strip().splitlines()[0]}") from None
    if info.get("missing_keys") or info.get("mismatched_keys"):
        bad = list(info.get("missing_keys") or []) + [str(k) for k in info.get("mismatched_keys") or []]
        raise So101Error(f"{shown}: the weights lack {len(bad)} tensors of the config's architecture (e.g. {bad[0]})")
    return net
