"""The DrQ-v2 learner, as the user's snapshot was trained, plus the fine-tuning recipe.

One update, top to bottom (docs/reference.md section 1; facebookresearch/drqv2's ``update``):

1. random-shift augmentation of both stacks (pad 4, replicate, bilinear resample);
2. critic: ``y = r_n + discount * min(Q'_1, Q'_2)(s', a')`` with ``a'`` from the actor
   plus clipped Gaussian noise; both Q heads regress to ``y`` (mean squared error);
   the encoder learns through this loss only;
3. actor (every ``critic_updates_per_actor`` updates, and only after the warm-up):
   ``-min(Q_1, Q_2)(s, a)`` on detached features, ``a`` sampled the same way, plus an
   optional behaviour-cloning term on demo samples;
4. the target critics follow with ``tau``.

The fine-tuning recipe (docs/reference.md section 8), each a value in :class:`LearnerConfig`:
keep the sim encoder and actor, re-initialise the critics (the sim critic learned the
dense sim reward), a critic-only warm-up, actor lr 1e-5 against critic lr 3e-4, a fixed
small exploration std (never the sim schedule restarted at 1.0), an optional frozen
encoder. Losses are batch means; no gradient clipping.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from so101_sim2real.hilserl.exploration import noisy_action
from so101_sim2real.hilserl.replay import Batch
from so101_sim2real.policy.augment import random_shift
from so101_sim2real.policy.networks import Critic, DrQV2Agent


@dataclass(frozen=True)
class LearnerConfig:
    """Every knob of the update; the defaults are the recipe's."""

    batch_size: int = 256
    critic_lr: float = 3e-4
    encoder_lr: float = 1e-4  # the snapshot's own encoder lr
    actor_lr: float = 1e-5
    weight_decay: float = 0.0  # AdamW, as the snapshot was trained
    tau: float = 0.01
    std: float = 0.1  # fixed exploration std, also the target policy's noise
    std_clip: float = 0.3
    critic_updates_per_actor: int = 2
    reinit_critics: bool = True
    freeze_encoder: bool = False
    bc_weight: float = 0.0  # behaviour cloning on demo samples (0: off)
    aug_pad: int = 4



def orthogonal_init(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """DrQ-v2's initialisation: orthogonal weights, zero biases, for every layer inside ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.orthogonal_(m.weight.data, generator=generator)
            if m.bias is not None:
                m.bias.data.fill_(0.0)


@dataclass
class UpdateMetrics:
    critic_loss: float
    q_mean: float
    target_mean: float
    actor_loss: float | None  # None when the actor did not move this update
    bc_loss: float | None


class Learner:
    """Owns the training copy of the agent, its optimisers and the update counter."""

    def __init__(self, agent: DrQV2Agent, cfg: LearnerConfig | None = None, device: str | torch.device = "cpu",
                 seed: int = 0):
        if agent.critic is None:
            raise ValueError("the checkpoint has no critics; HIL-SERL needs a snapshot with critic weights")
        self.cfg = cfg or LearnerConfig()
        self.device = torch.device(device)
        self.agent = copy.deepcopy(agent).cpu().train()
        critic = self.agent.critic
        assert critic is not None  # the copy of a checked agent
        if self.cfg.reinit_critics:
            orthogonal_init(critic, torch.Generator().manual_seed(seed))
        self.agent.to(self.device)
        if self.agent.critic_target is None:
            self.agent.critic_target = copy.deepcopy(critic)
        self.agent.critic_target.load_state_dict(critic.state_dict())
        self.agent.critic_target.requires_grad_(False)
        self.agent.encoder.requires_grad_(not self.cfg.freeze_encoder)
        c = self.cfg
        self.encoder_opt = torch.optim.AdamW(self.agent.encoder.parameters(), lr=c.encoder_lr,
                                             weight_decay=c.weight_decay)
        self.critic_opt = torch.optim.AdamW(critic.parameters(), lr=c.critic_lr,
                                            weight_decay=c.weight_decay)
        self.actor_opt = torch.optim.AdamW(self.agent.actor.parameters(), lr=c.actor_lr, weight_decay=c.weight_decay)
        self.updates = 0
        self._generator = torch.Generator(device=self.device).manual_seed(seed)
        self.lock = threading.Lock()  # an update and a copy of the weights never interleave

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {"encoder": self.encoder_opt, "critic": self.critic_opt, "actor": self.actor_opt}

    def lr_of(self, name: str) -> float:
        """The configured learning rate of optimiser ``name``."""
        return {"encoder": self.cfg.encoder_lr, "critic": self.cfg.critic_lr, "actor": self.cfg.actor_lr}[name]

    def _critics(self) -> tuple[Critic, Critic]:
        """The agent's critics and their targets (``__init__`` saw to both)."""
        critic, target = self.agent.critic, self.agent.critic_target
        assert critic is not None and target is not None
        return critic, target

    # ------------------------------------------------------------------ one update

    def _tensors(self, batch: Batch) -> dict[str, torch.Tensor]:
        def frames(x: np.ndarray) -> torch.Tensor:  # (B, stack, C, H, W) uint8 -> (B, stack * C, H, W) float
            return torch.from_numpy(x).to(self.device).flatten(1, 2).float()

        def flat(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(x).to(self.device).flatten(1)

        t = {"obs": frames(batch.frames), "next_obs": frames(batch.next_frames), "state": flat(batch.states),
             "next_state": flat(batch.next_states)}
        for name in ("action", "reward", "discount"):
            t[name] = torch.from_numpy(getattr(batch, name)).to(self.device)
        t["demo"] = torch.from_numpy(batch.from_demos).to(self.device)
        return t

    def update(self, batch: Batch, train_actor: bool = True) -> UpdateMetrics:
        """One DrQ-v2 update on ``batch``; the actor moves only when ``train_actor`` and it is its turn."""
        with self.lock:
            return self._update(batch, train_actor)

    def _update(self, batch: Batch, train_actor: bool) -> UpdateMetrics:
        a, c, t = self.agent, self.cfg, self._tensors(batch)
        critic, critic_target = self._critics()
        obs = random_shift(t["obs"], c.aug_pad, self._generator)
        next_obs = random_shift(t["next_obs"], c.aug_pad, self._generator)
        feats = a.features(obs, t["state"])
        with torch.no_grad():
            next_feats = a.features(next_obs, t["next_state"])
            next_mean = a.actor(next_feats)
            next_action = noisy_action(next_mean, c.std, c.std_clip, torch.randn_like(next_mean))
            target_v = critic_target(next_feats, next_action).min(dim=-1).values
            target = t["reward"] + t["discount"] * target_v
        q = critic(feats, t["action"])
        critic_loss = F.mse_loss(q, target.unsqueeze(-1).expand_as(q)) * q.shape[-1]  # sum over heads, mean over batch
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        if not c.freeze_encoder:
            self.encoder_opt.step()
        self.updates += 1

        actor_loss = bc_loss = None
        if train_actor and self.updates % c.critic_updates_per_actor == 0:
            actor_loss, bc_loss = self._update_actor({k: v.detach() for k, v in feats.items()}, t)
        self._soft_update()
        return UpdateMetrics(critic_loss.item(), q.detach().mean().item(), target.mean().item(), actor_loss, bc_loss)

    def _update_actor(self, feats: dict[str, torch.Tensor], t: dict[str, torch.Tensor]) -> tuple[float, float | None]:
        a, c = self.agent, self.cfg
        critic, _ = self._critics()
        mean = a.actor(feats)
        action = noisy_action(mean, c.std, c.std_clip, torch.randn_like(mean))
        loss = -critic(feats, action).min(dim=-1).values.mean()
        bc = None
        if c.bc_weight > 0 and bool(t["demo"].any()):
            bc_term = F.mse_loss(mean[t["demo"]], t["action"][t["demo"]])
            loss = loss + c.bc_weight * bc_term
            bc = bc_term.item()
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        return loss.item(), bc

    @torch.no_grad()
    def _soft_update(self) -> None:
        tau = self.cfg.tau
        critic, target = self._critics()
        for p, tp in zip(critic.parameters(), target.parameters(), strict=True):
            tp.lerp_(p, tau)

    # ------------------------------------------------------------------ publishing

    @torch.no_grad()
    def weights(self, prefixes: tuple[str, ...] = ("encoder.", "actor.", "critic.", "critic_target.")
                ) -> dict[str, torch.Tensor]:
        """A consistent CPU copy of the agent's weights under ``prefixes``, taken between updates."""
        with self.lock:
            state = self.agent.state_dict()
            return {k: v.detach().to("cpu", copy=True) for k, v in state.items() if k.startswith(prefixes)}

    def policy_weights(self) -> dict[str, torch.Tensor]:
        """The encoder AND the actor together: what the actor thread acts with."""
        return self.weights(("encoder.", "actor."))
