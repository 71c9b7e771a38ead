"""DrQ's image augmentation, shared by the learner, behaviour cloning and the reward classifier."""

from __future__ import annotations

import torch


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ's augmentation: replicate-pad by ``pad`` and crop back at a random integer shift per sample.

    drqv2.py does it with a bilinear ``grid_sample`` at integer offsets, which moves pixels
    exactly; reading the shifted pixels by index (clamped at the border: the replicate pad)
    gives the same values about 2x faster, and works on uint8 frames before they are made
    float. The shifts are drawn as drqv2 draws them (one ``(n, 1, 1, 2)`` randint, x then y),
    so the same generator gives the same shifts. The result is channels-last in memory, the
    layout the CPU's convolutions are fastest on.
    """
    n, _, h, w = x.shape
    if pad == 0:
        return x
    shift = torch.randint(0, 2 * pad + 1, (n, 1, 1, 2), device=x.device, generator=generator)
    rows = (torch.arange(h, device=x.device) + shift[:, 0, 0, 1, None] - pad).clamp_(0, h - 1)  # (n, h)
    cols = (torch.arange(w, device=x.device) + shift[:, 0, 0, 0, None] - pad).clamp_(0, w - 1)  # (n, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # advanced indices around a slice put their dims first: (n, h, w, C), viewed back as (n, C, h, w)
    return x[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
