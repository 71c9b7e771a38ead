"""Behaviour cloning: a starting policy from demonstrations, cheaply.

The encoder and the actor of a DrQ-v2 agent regress the demonstrated actions (mean
squared error on the actor's tanh mean), with the learner's random-shift augmentation
and frame stacks from the replay buffer, so the result acts through exactly the
runtime a fine-tuned policy does. The critics are left as they are: HIL-SERL
re-initialises them anyway.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from so101_sim2real.hilserl.replay import ReplayBuffer
from so101_sim2real.policy.augment import random_shift
from so101_sim2real.policy.networks import DrQV2Agent


def behaviour_clone(agent: DrQV2Agent, buffer: ReplayBuffer, updates: int, batch_size: int = 64, lr: float = 3e-4,
                    aug_pad: int = 4, seed: int = 0,
                    on_update: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``agent``'s encoder and actor in place on ``buffer``'s samples; the loss of every update."""
    generator = torch.Generator().manual_seed(seed)
    params = list(agent.encoder.parameters()) + list(agent.actor.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    agent.train()
    losses = []
    for i in range(updates):
        batch = buffer.sample(batch_size)
        obs = torch.from_numpy(batch.frames).flatten(1, 2).float()
        state = torch.from_numpy(batch.states).flatten(1)
        feats = agent.features(random_shift(obs, aug_pad, generator), state)
        loss = F.mse_loss(agent.actor(feats), torch.from_numpy(batch.action))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if on_update:
            on_update(i + 1, losses[-1])
    agent.eval()
    return losses
