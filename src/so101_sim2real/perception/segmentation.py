"""The user's segmentation model: timm EfficientViT-B0 features + a small FPN + a 1x1 head.

Architecture (docs/reference.md section 3): the backbone gives 4 levels (16/32/64/128
channels at strides 4..32); 1x1 lateral convs bring each to 64 channels; a top-down
pass adds the bilinearly upsampled coarser level; each level has a 3x3 conv + BN +
ReLU, of which only the finest is used; a 1x1 head gives the class logits, upsampled
to the input size. About 0.85M parameters.

Checkpoints are PyTorch Lightning ``.ckpt`` files: ``state_dict`` (keys ``backbone.*``,
``lateral_convs.*``, ``output_convs.*``, ``seg_head.*``, possibly under a ``model.``
prefix) and ``hyper_parameters`` (``num_classes``, ``img_height``, ``img_width``).
The class count and conv biases are read from the weights; timm is never asked for
pretrained weights, so loading needs no network.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from so101_sim2real.errors import CheckpointError, UnsafePickleError
from so101_sim2real.perception import EXAMPLE_MARK
from so101_sim2real.perception.backends import TORCH, Backend, CoreRunner
from so101_sim2real.safe_pickle import torch_load
from so101_sim2real.spec import SOURCE_SIZE

if TYPE_CHECKING:
    from timm.models import FeatureListNet

BACKBONE = "efficientvit_b0"
FPN_CHANNELS = 64
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_PARTS = ("backbone.", "lateral_convs.", "output_convs.", "seg_head.")


def _backbone() -> FeatureListNet:
    import timm  # imported late: it pulls in torchvision, which only perception needs

    # features_only: timm's FeatureListNet (create_model is typed as returning any nn.Module)
    return cast("FeatureListNet", timm.create_model(BACKBONE, pretrained=False, features_only=True))


class SegmentationNet(nn.Module):
    """EfficientViT-B0 + FPN: ``(B, 3, H, W)`` normalised RGB -> ``(B, classes, H, W)`` logits."""

    def __init__(self, num_classes: int = 6, conv_bias: bool = False):
        super().__init__()
        self.backbone = _backbone()
        widths = self.backbone.feature_info.channels()  # [16, 32, 64, 128]
        self.lateral_convs = nn.ModuleList(nn.Conv2d(w, FPN_CHANNELS, 1) for w in widths)
        self.output_convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(FPN_CHANNELS, FPN_CHANNELS, 3, padding=1, bias=conv_bias),
                          nn.BatchNorm2d(FPN_CHANNELS), nn.ReLU(inplace=True))
            for _ in widths
        )
        self.seg_head = nn.Conv2d(FPN_CHANNELS, num_classes, 1)

    @property
    def num_classes(self) -> int:
        return self.seg_head.out_channels

    def forward(self, x: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        return upsample(self.core(x), out_size or x.shape[-2:])

    def fpn(self, x: torch.Tensor) -> torch.Tensor:
        """The FPN's finest level: the backbone's levels merged top-down."""
        feats = self.backbone(x)
        top = self.lateral_convs[-1](feats[-1])
        for level in range(len(feats) - 2, -1, -1):
            lateral = self.lateral_convs[level](feats[level])
            top = lateral + F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        return top

    def core(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at stride 4: everything before the output-size-dependent upsampling."""
        top = self.fpn(x)
        # Only the finest level feeds the head; the coarser output convs hold weights but
        # do not change the result, so they are not run. The 1x1 head commutes with the
        # bilinear upsampling (both linear, weights summing to 1), so it runs first, on
        # 64x fewer pixels.
        return self.seg_head(self.output_convs[0](top))


class SegmentationCore(nn.Module):
    """:meth:`SegmentationNet.core` as a module's forward, for exporters."""

    def __init__(self, net: SegmentationNet):
        super().__init__()
        self.net = net
        # in the net's mode: an exporter puts the wrapper back in its own mode afterwards, recursively
        self.train(net.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.core(x)


def upsample(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


@dataclass
class SegmentationModel:
    """A loaded segmentation network and what its checkpoint says about its input."""

    net: SegmentationNet
    input_size: tuple[int, int]  # (H, W) it was trained at (hparams img_height, img_width)
    source: str
    device: torch.device
    example: bool = False  # random weights from `so101 models example`
    backend: Backend = TORCH
    cache: Path | None = None  # exported graphs (default: beside the model cache)

    def __post_init__(self):
        self._core = CoreRunner(SegmentationCore(self.net), self.backend, self.cache)

    def on_backend(self, backend: Backend, cache: Path | None = None) -> SegmentationModel:
        """The same network (shared weights) with its core on ``backend``."""
        return dataclasses.replace(self, backend=backend, cache=cache)

    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    @torch.inference_mode()
    def predict(self, rgb: np.ndarray, size: tuple[int, int] | None = None,
                out_size: tuple[int, int] | None = None) -> np.ndarray:
        """RGB uint8 ``(H, W, 3)`` -> class ids ``(h, w)`` uint8 at ``out_size`` (default: the image's).

        The image is resized (bilinear) to ``size`` (default: the trained input size)
        before the network; logits are upsampled to ``out_size`` before the argmax.
        """
        x = to_tensor(rgb, size or self.input_size, self.device, mode="bilinear")
        logits = upsample(self._core(x), out_size or rgb.shape[:2])
        return logits.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()


@functools.cache
def _imagenet(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std on ``device``, made once per device rather than per frame."""
    return (torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1),
            torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1))


def to_tensor(rgb: np.ndarray, size: tuple[int, int], device: torch.device, mode: str) -> torch.Tensor:
    """RGB uint8 ``(H, W, 3)`` -> ImageNet-normalised ``(1, 3, *size)`` float32."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1)[None].float().div_(255.0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode=mode, align_corners=False)
        if mode == "bicubic":
            x = x.clamp_(0.0, 1.0)
    mean, std = _imagenet(device)
    return x.sub_(mean).div_(std)


def _model_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip whatever prefix the LightningModule put before the network's own keys."""
    for key in state:
        for part in _PARTS:
            at = key.find(part)
            if at >= 0 and (at == 0 or key[at - 1] == "."):
                prefix = key[:at]
                return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return {}


def load_segmentation(path: str | Path, device: str | torch.device = "cpu",
                      trust_pickle: bool = False) -> SegmentationModel:
    """Read the user's Lightning ``.ckpt`` (or a bare state dict) into a ready network."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such segmentation checkpoint")
    try:
        raw = torch_load(path, trust=trust_pickle)
    except UnsafePickleError as exc:
        raise CheckpointError(f"{path}: {exc}; if you trust this file, pass @trust_pickle") from None
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    weights = _model_state(state) if isinstance(state, dict) else {}
    if "seg_head.weight" not in weights:
        raise CheckpointError(f"{path}: not an EfficientViT segmentation checkpoint (no seg_head weights in its "
                              f"state_dict)")
    num_classes = weights["seg_head.weight"].shape[0]
    hparams = dict(raw.get("hyper_parameters") or {}) if isinstance(raw, dict) else {}
    if "num_classes" in hparams and int(hparams["num_classes"]) != num_classes:
        raise CheckpointError(f"{path}: hparams say {hparams['num_classes']} classes, the head has {num_classes}")
    net = SegmentationNet(num_classes, conv_bias="output_convs.0.0.bias" in weights)
    try:
        missing, unexpected = net.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # a tensor of another shape
        first = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{path}: weights do not fit {BACKBONE} + FPN: {first}") from None
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{path}: weights do not fit {BACKBONE} + FPN ({len(missing)} missing, "
                              f"{len(unexpected)} unexpected: {detail})")
    size = (int(hparams.get("img_height", SOURCE_SIZE[0])), int(hparams.get("img_width", SOURCE_SIZE[1])))
    dev = torch.device(device)
    example = isinstance(raw, dict) and EXAMPLE_MARK in raw
    return SegmentationModel(net.to(dev).eval(), size, str(path), dev, example)

