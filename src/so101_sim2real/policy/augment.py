"""DrQ's image augmentation, shared by the learner and the reward classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ's augmentation: replicate-pad by ``pad`` and crop back at a random integer shift per sample.

    Done as a bilinear ``grid_sample`` at integer offsets, which moves pixels exactly.
    """
    n, _, h, w = x.shape
    if pad == 0:
        return x
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    eps_h, eps_w = 1.0 / (h + 2 * pad), 1.0 / (w + 2 * pad)
    ys = torch.linspace(-1.0 + eps_h, 1.0 - eps_h, h + 2 * pad, device=x.device)[:h]
    xs = torch.linspace(-1.0 + eps_w, 1.0 - eps_w, w + 2 * pad, device=x.device)[:w]
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2) as (x, y)
    shift = torch.randint(0, 2 * pad + 1, (n, 1, 1, 2), device=x.device, generator=generator).to(x.dtype)
    shift = shift * torch.tensor([2.0 * eps_w, 2.0 * eps_h], device=x.device)
    grid = base.unsqueeze(0) + shift
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
