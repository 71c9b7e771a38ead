"""DrQ-v2's exploration noise, written once: the actor acts with it (numpy), the learner's targets
and actor loss use it too (torch; see :func:`noisy_action`)."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

# The action stays this far inside (-1, 1): the actor's tanh never reaches the edge either.
ACTION_LIMIT = 1.0 - 1e-6

Action = TypeVar("Action", np.ndarray, torch.Tensor)


def noisy_action(mean: Action, std: float, clip: float, standard_normal: Action) -> Action:
    """DrQ-v2's clipped Gaussian: ``mean`` plus ``std`` times ``standard_normal`` draws clipped to
    ``+-clip``, the action clamped to (-1, 1). ``standard_normal`` has ``mean``'s shape: an actor's
    ``rng.standard_normal(shape)``, a learner's ``torch.randn_like(mean)``. For a tensor the
    gradient flows to ``mean`` straight through the clamp."""
    if isinstance(mean, torch.Tensor):
        x = mean + torch.clamp(standard_normal * std, -clip, clip)
        return x - x.detach() + torch.clamp(x, -ACTION_LIMIT, ACTION_LIMIT).detach()
    return np.clip(mean + np.clip(standard_normal * std, -clip, clip), -ACTION_LIMIT, ACTION_LIMIT)
