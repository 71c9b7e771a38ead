"""DrQ-v2 networks, built from an :class:`Architecture` read off the weights.

Native key layout (what ``so101 convert`` writes)::

    encoder.convs.{0,2,4,6}.{weight,bias}            Conv2d, ReLU after each
    actor.head.inputs.<name>.{0,1}.{weight,bias}      Linear, LayerNorm (then Tanh)
    actor.head.trunk.{0,2,...}.{weight,bias}          Linear, ReLU
    actor.head.out.{weight,bias}                      Linear -> tanh = action mean
    critic.qs.<i>.<same as actor.head>                Q heads, action appended raw
    critic_target.qs.<i>.<...>
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from so101_sim2real.policy.architecture import STATE, VIEW, Architecture, ConvLayer, HeadArch


class Encoder(nn.Module):
    """Conv stack on the stacked frames; normalises inside, so it takes [0, 255]."""

    def __init__(self, convs: tuple[ConvLayer, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        for c in convs:  # in place: the conv's output is not needed for its backward (10% of an update)
            layers += [nn.Conv2d(c.in_channels, c.out_channels, c.kernel, stride=c.stride), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # (B, frames * channels, H, W) in [0, 255] -> (B, feature_dim)
        return self.convs(obs / 255.0 - 0.5).flatten(1)


def _bottleneck(in_features: int, arch: HeadArch) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(in_features, arch.bottleneck)]
    if arch.layer_norm:
        layers.append(nn.LayerNorm(arch.bottleneck))
    if arch.tanh:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class Head(nn.Module):
    """Bottlenecked inputs, concatenated (plus a raw extra input), then an MLP."""

    def __init__(self, arch: HeadArch):
        super().__init__()
        self.names = [name for name, _ in arch.inputs]
        self.inputs = nn.ModuleDict({name: _bottleneck(n, arch) for name, n in arch.inputs})
        layers: list[nn.Module] = []
        width = arch.bottleneck * len(arch.inputs) + arch.extra_input
        for h in arch.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.out = nn.Linear(width, arch.out_features)

    def bottleneck(self, name: str) -> nn.Sequential:
        """Input ``name``'s Linear, LayerNorm (and Tanh)."""
        return cast(nn.Sequential, self.inputs[name])

    def forward(self, feats: dict[str, torch.Tensor], extra: torch.Tensor | None = None,
                projected: torch.Tensor | None = None) -> torch.Tensor:
        """``projected``: the view input's first Linear already applied (:func:`project_view`)."""
        parts = [self.bottleneck(name)[1:](projected) if name == VIEW and projected is not None
                 else self.inputs[name](feats[name]) for name in self.names]
        if extra is not None:
            parts.append(extra)
        return self.out(self.trunk(torch.cat(parts, dim=-1)))


def project_view(heads: list[Head], view: torch.Tensor) -> list[torch.Tensor]:
    """The view features through the first Linear of each head's view bottleneck, as one matrix
    product: the same numbers, one pass over the (B, 39200) features instead of one per head
    (most of a frozen-encoder update is these products)."""
    linears = [cast(nn.Linear, h.bottleneck(VIEW)[0]) for h in heads]
    weight = torch.cat([lin.weight for lin in linears])
    bias = torch.cat([cast(torch.Tensor, lin.bias) for lin in linears])
    return list(F.linear(view, weight, bias).split([lin.out_features for lin in linears], dim=-1))


class Actor(nn.Module):
    """Deterministic part of the DrQ-v2 actor: the action mean in [-1, 1]."""

    def __init__(self, arch: HeadArch):
        super().__init__()
        self.head = Head(arch)

    def forward(self, feats: dict[str, torch.Tensor], projected: torch.Tensor | None = None) -> torch.Tensor:
        return torch.tanh(self.head(feats, projected=projected))


class Critic(nn.Module):
    """Independent Q heads; returns (B, num_critics)."""

    def __init__(self, arch: HeadArch, num_critics: int):
        super().__init__()
        self.qs = nn.ModuleList([Head(arch) for _ in range(num_critics)])

    @property
    def heads(self) -> list[Head]:
        return [cast(Head, q) for q in self.qs]

    def forward(self, feats: dict[str, torch.Tensor], action: torch.Tensor,
                projected: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``projected``: each head's view projection, as :func:`project_view` gives them."""
        views = projected if projected is not None else [None] * len(self.qs)
        return torch.cat([q(feats, action, projected=v) for q, v in zip(self.qs, views, strict=True)], dim=-1)


class DrQV2Agent(nn.Module):
    """Encoder, actor and (when the checkpoint has them) critics and target critics."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        self.encoder = Encoder(arch.convs)
        self.actor = Actor(arch.actor)
        self.critic = Critic(arch.critic, arch.num_critics) if arch.critic else None
        self.critic_target = (
            Critic(arch.critic, arch.num_critics) if arch.critic and arch.has_critic_target else None
        )

    def features(self, obs: torch.Tensor, state: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """(B, C, H, W) in [0, 255] and (B, state_dim) -> the heads' named inputs."""
        feats = {VIEW: self.encoder(obs)}
        if self.arch.state_dim:
            feats[STATE] = state
        return feats

    def forward(self, obs: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """Action mean for a batch of stacked observations."""
        return self.actor(self.features(obs, state))
