"""The DrQ-v2 agent's architecture, read off its weights.

Every size (input channels, hidden widths, state size, action size, number of
critics) comes from tensor shapes. What weights cannot say (frames in the stack,
the image size, which convs are strided, whether a Tanh follows a bottleneck) comes
in as :class:`Hints` from the checkpoint's config or the spec, and is then checked
against the shapes: a hint that does not fit the weights is an error, not a guess.

Weights are expected in the native key layout (see ``networks.py``); format readers
translate RoboBase and facebookresearch/drqv2 keys into it first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from so101_sim2real.errors import CheckpointError

VIEW = "fused_view_feats"
STATE = "low_dim_obs"


@dataclass(frozen=True)
class Hints:
    """Facts the weights cannot state; checked against them."""

    frames: int
    image_size: tuple[int, int]
    downsample_convs: int = 1  # leading stride-2 convs, the rest stride 1
    bottleneck_tanh: bool = True
    input_order: tuple[str, ...] = (VIEW, STATE)


@dataclass(frozen=True)
class ConvLayer:
    in_channels: int
    out_channels: int
    kernel: int
    stride: int


@dataclass(frozen=True)
class HeadArch:
    """An MLP whose named inputs each pass a Linear(-LayerNorm)(-Tanh) bottleneck."""

    inputs: tuple[tuple[str, int], ...]  # (name, in_features), in concatenation order
    bottleneck: int
    layer_norm: bool
    tanh: bool
    hidden: tuple[int, ...]
    extra_input: int  # raw features appended after the bottlenecks (the critic's action)
    out_features: int


@dataclass(frozen=True)
class Architecture:
    """Everything needed to rebuild the agent, with shapes that match its weights."""

    image_size: tuple[int, int]
    frames: int
    in_channels: int
    convs: tuple[ConvLayer, ...]
    feature_dim: int
    state_dim: int  # stacked (frames x per-frame); 0 if the policy takes no state
    action_dim: int
    actor: HeadArch
    critic: HeadArch | None
    num_critics: int
    has_critic_target: bool

    @property
    def channels_per_frame(self) -> int:
        return self.in_channels // self.frames

    @property
    def state_dim_per_frame(self) -> int:
        return self.state_dim // self.frames

    def conv_output_hw(self) -> tuple[int, int]:
        return _conv_out(self.image_size, self.convs)


def _conv_out(size: tuple[int, int], convs: tuple[ConvLayer, ...]) -> tuple[int, int]:
    h, w = size
    for c in convs:  # no padding, as both DrQ-v2 codebases build it
        h, w = (h - c.kernel) // c.stride + 1, (w - c.kernel) // c.stride + 1
    return h, w


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"weights: missing '{key}'")
    return tuple(state[key].shape)


def _indices(state: Mapping[str, torch.Tensor], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.weight$")
    return sorted({int(m.group(1)) for k in state if (m := pattern.match(k))})


def _mismatch(key: str, shape: tuple[int, ...], expected: str) -> CheckpointError:
    return CheckpointError(f"weights: '{key}' has shape {list(shape)}, expected {expected}")


def _read_convs(state: Mapping[str, torch.Tensor], hints: Hints) -> tuple[ConvLayer, ...]:
    idx = _indices(state, "encoder.convs.")
    if not idx:
        raise CheckpointError("weights: no encoder convolutions ('encoder.convs.*')")
    convs, prev = [], None
    for n, i in enumerate(idx):
        key = f"encoder.convs.{i}.weight"
        shape = _shape(state, key)
        if len(shape) != 4 or shape[2] != shape[3]:
            raise _mismatch(key, shape, "(out, in, k, k)")
        if prev is not None and shape[1] != prev:
            raise _mismatch(key, shape, f"{prev} input channels (the previous conv's output)")
        stride = 2 if n < hints.downsample_convs else 1
        convs.append(ConvLayer(shape[1], shape[0], shape[2], stride))
        prev = shape[0]
    return tuple(convs)


def _read_head(state: Mapping[str, torch.Tensor], prefix: str, hints: Hints, extra: int) -> HeadArch:
    names = [n for n in hints.input_order if f"{prefix}inputs.{n}.0.weight" in state]
    given = {k[len(prefix + "inputs.") :].split(".")[0] for k in state if k.startswith(prefix + "inputs.")}
    unknown = given - set(names)
    if unknown:
        raise CheckpointError(f"weights: '{prefix}inputs' has inputs {sorted(unknown)} this runtime does not know")
    if not names:
        raise CheckpointError(f"weights: '{prefix}inputs' has no bottleneck inputs")
    inputs: list[tuple[str, int]] = []
    bottleneck: int | None = None
    layer_norm: bool | None = None
    for name in names:
        key = f"{prefix}inputs.{name}.0.weight"
        out_f, in_f = _shape(state, key)
        if bottleneck not in (None, out_f):
            raise _mismatch(key, (out_f, in_f), f"{bottleneck} outputs like the other bottlenecks")
        bottleneck = out_f
        has_ln = f"{prefix}inputs.{name}.1.weight" in state
        if layer_norm not in (None, has_ln):
            raise CheckpointError(f"weights: '{prefix}inputs.{name}' differs from the other bottlenecks in LayerNorm")
        layer_norm = has_ln
        ln_key = f"{prefix}inputs.{name}.1.weight"
        if has_ln and _shape(state, ln_key) != (out_f,):
            raise _mismatch(ln_key, _shape(state, ln_key), f"({out_f},)")
        inputs.append((name, in_f))
    assert bottleneck is not None and layer_norm is not None  # set by the first of the (non-empty) names
    hidden, width = [], bottleneck * len(names) + extra
    for i in _indices(state, prefix + "trunk."):
        key = f"{prefix}trunk.{i}.weight"
        shape = _shape(state, key)
        if len(shape) != 2 or shape[1] != width:
            raise _mismatch(key, shape, f"[*, {width}]")
        hidden.append(shape[0])
        width = shape[0]
    out_shape = _shape(state, f"{prefix}out.weight")
    if out_shape[1] != width:
        raise _mismatch(f"{prefix}out.weight", out_shape, f"[*, {width}]")
    return HeadArch(tuple(inputs), bottleneck, layer_norm, hints.bottleneck_tanh, tuple(hidden), extra, out_shape[0])


def derive_architecture(state: Mapping[str, torch.Tensor], hints: Hints) -> Architecture:
    """Read every size from ``state`` (native keys) and check ``hints`` against it."""
    convs = _read_convs(state, hints)
    in_channels = convs[0].in_channels
    if in_channels % hints.frames:
        raise CheckpointError(
            f"weights: the encoder takes {in_channels} channels, not divisible by frame_stack={hints.frames}"
        )
    h, w = _conv_out(hints.image_size, convs)
    if h <= 0 or w <= 0:
        raise CheckpointError(f"spec: image_size {list(hints.image_size)} is too small for {len(convs)} convs")
    feature_dim = convs[-1].out_channels * h * w
    actor = _read_head(state, "actor.head.", hints, extra=0)
    view_in = dict(actor.inputs).get(VIEW)
    if view_in != feature_dim:
        raise CheckpointError(
            f"weights: the actor's view bottleneck takes {view_in} features, but {len(convs)} convs on "
            f"{hints.image_size[0]}x{hints.image_size[1]} images give {convs[-1].out_channels}x{h}x{w}="
            f"{feature_dim}: image size or conv strides differ from the checkpoint's"
        )
    state_dim = dict(actor.inputs).get(STATE, 0)
    if state_dim % hints.frames:
        raise CheckpointError(f"weights: state input {state_dim} is not divisible by frame_stack={hints.frames}")
    action_dim = actor.out_features
    critic, num_critics = None, 0
    q_idx = sorted({int(m.group(1)) for k in state if (m := re.match(r"critic\.qs\.(\d+)\.", k))})
    for q in q_idx:
        head = _read_head(state, f"critic.qs.{q}.", hints, extra=action_dim)
        if head.out_features != 1:
            raise _mismatch(f"critic.qs.{q}.out.weight", _shape(state, f"critic.qs.{q}.out.weight"), "[1, *]")
        if head.inputs != actor.inputs:
            raise CheckpointError(f"weights: critic {q} takes inputs {head.inputs}, the actor {actor.inputs}")
        if critic is not None and head != critic:
            raise CheckpointError(f"weights: critic {q} differs in shape from critic 0")
        critic = head
    num_critics = len(q_idx)
    has_target = any(k.startswith("critic_target.") for k in state)
    return Architecture(
        image_size=(hints.image_size[0], hints.image_size[1]),
        frames=hints.frames,
        in_channels=in_channels,
        convs=convs,
        feature_dim=feature_dim,
        state_dim=state_dim,
        action_dim=action_dim,
        actor=actor,
        critic=critic,
        num_critics=num_critics,
        has_critic_target=has_target,
    )
