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

import contextlib
import copy
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from so101_sim2real.errors import So101Error
from so101_sim2real.hilserl.exploration import noisy_action
from so101_sim2real.hilserl.features import FeatureCache
from so101_sim2real.hilserl.replay import Batch
from so101_sim2real.machine import cpu_model, native_bf16
from so101_sim2real.policy.architecture import STATE, VIEW
from so101_sim2real.policy.augment import random_shift
from so101_sim2real.policy.networks import Critic, DrQV2Agent, project_view


@dataclass(frozen=True)
class LearnerConfig:
    """Every knob of the update; the defaults are the recipe's, except where the README's transfer
    benchmark showed otherwise (actor lr and the BC term; the warm-up is TrainConfig's)."""

    batch_size: int | None = None  # None: chosen at the session's start from the measured update rate
    critic_lr: float = 3e-4
    encoder_lr: float = 1e-4  # the snapshot's own encoder lr
    actor_lr: float = 2e-4  # the recipe's 1e-5 barely moved the actor in the transfer benchmark
    weight_decay: float = 0.0  # AdamW, as the snapshot was trained
    tau: float = 0.01
    std: float = 0.1  # fixed exploration std, also the target policy's noise
    std_clip: float = 0.3
    critic_updates_per_actor: int = 2
    reinit_critics: bool = True
    freeze_encoder: bool = False
    bc_weight: float = 1.0  # behaviour cloning on demo samples (0: off); the benchmark's early gain
    aug_pad: int = 4
    precision: str = "fp32"  # or "bf16" (autocast; a CPU with native bf16, or a GPU), "fp16" (GPU only)
    feature_cache_mb: int = 4096  # frozen encoder: each stored stack's features kept (0: computed per update)
    compile: bool = False  # torch.compile the encoder (~20 s at the start on 2 cores)
    objective: str = "drqv2"  # "bc": behaviour cloning only, the control the benchmark compares with


FUSED = True  # one kernel per optimiser step (CPU and CUDA): the same AdamW, 2-3x less time
PRECISIONS, OBJECTIVES = ("fp32", "bf16", "fp16"), ("drqv2", "bc")


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a number format this device would only emulate (slower than fp32, and less exact)."""
    if precision not in PRECISIONS:
        raise So101Error(f"learner.precision {precision!r}: choose {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise So101Error("learner.precision fp16 needs a GPU (its loss scaling is CUDA's); on a CPU use bf16 "
                         "where the CPU has it, or fp32")
    if precision == "bf16" and device.type == "cpu" and not native_bf16():
        raise So101Error(f"learner.precision bf16: this CPU ({cpu_model()}) has no native bf16 (avx512_bf16 or "
                         f"AMX), so it would be emulated and slower than fp32; use fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise So101Error("learner.precision bf16: this GPU has no bf16; use fp16 or fp32")


def orthogonal_init(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """DrQ-v2's initialisation: orthogonal weights, zero biases, for every layer inside ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.orthogonal_(m.weight.data, generator=generator)
            if m.bias is not None:
                m.bias.data.fill_(0.0)


@dataclass
class UpdateMetrics:
    critic_loss: float | None  # None when the critic did not learn (the BC-only objective)
    q_mean: float | None
    target_mean: float | None
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
        check_precision(self.cfg.precision, self.device)
        if self.cfg.objective not in OBJECTIVES:
            raise So101Error(f"learner.objective {self.cfg.objective!r}: choose {', '.join(OBJECTIVES)}")
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
        self.encoder_opt = torch.optim.AdamW(self.agent.encoder.parameters(), lr=c.encoder_lr, fused=FUSED,
                                             weight_decay=c.weight_decay)
        self.critic_opt = torch.optim.AdamW(critic.parameters(), lr=c.critic_lr, fused=FUSED,
                                            weight_decay=c.weight_decay)
        self.actor_opt = torch.optim.AdamW(self.agent.actor.parameters(), lr=c.actor_lr, weight_decay=c.weight_decay,
                                           fused=FUSED)
        self.updates = 0
        self._generator = torch.Generator(device=self.device).manual_seed(seed)
        self.lock = threading.Lock()  # an update and a copy of the weights never interleave
        # the encoder as the update calls it: compiled or not (the same module and weights either way)
        # (not with a frozen encoder: it runs on the cache's misses only, a new shape each time)
        self._encode: Callable[[torch.Tensor], torch.Tensor] = (
            cast(Callable[[torch.Tensor], torch.Tensor], torch.compile(self.agent.encoder))
            if c.compile and not c.freeze_encoder else self.agent.encoder)
        # bf16 features where the heads multiply in bf16 anyway: half the memory and the copying
        cache_dtype = torch.bfloat16 if c.precision == "bf16" else torch.float32
        self.cache = (FeatureCache(c.feature_cache_mb, self.agent.arch.feature_dim, self.device, cache_dtype)
                      if c.freeze_encoder and c.feature_cache_mb > 0 else None)
        self._scaler = torch.amp.GradScaler("cuda") if c.precision == "fp16" else None

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

    def _autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the networks' products when configured; losses stay fp32."""
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # ------------------------------------------------------------------ one update

    def _tensors(self, batch: Batch) -> dict[str, torch.Tensor]:
        def frames(x: np.ndarray) -> torch.Tensor:  # (B, stack, C, H, W) -> (B, stack * C, H, W), still uint8
            return torch.from_numpy(x).to(self.device).flatten(1, 2)

        def flat(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(x).to(self.device).flatten(1)

        t = {"obs": frames(batch.frames), "next_obs": frames(batch.next_frames), "state": flat(batch.states),
             "next_state": flat(batch.next_states)}
        for name in ("action", "reward", "discount"):
            t[name] = torch.from_numpy(getattr(batch, name)).to(self.device)
        t["demo"] = torch.from_numpy(batch.from_demos).to(self.device)
        return t

    def _pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 stacks -> the encoder's float input, channels-last (the CPU's fast conv layout)."""
        return frames.float().contiguous(memory_format=torch.channels_last)

    def _views(self, batch: Batch, t: dict[str, torch.Tensor], need_next: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The encoder's features of the (augmented) stacks now and next (None when not
        ``need_next``); only the first carries the critic loss's gradient into the encoder, and
        only when it learns."""
        c = self.cfg
        if self.cache is not None and batch.row is not None and batch.next_row is not None:
            # a frozen encoder: each stack's features once, unaugmented (augmentation would need them per shift)
            view = self.cache.features(batch.from_demos, batch.row, t["obs"], self._frozen_features)
            if not need_next:
                return view, None
            next_view = self.cache.features(batch.from_demos, batch.next_row, t["next_obs"], self._frozen_features)
            return view, next_view
        obs = self._pixels(random_shift(t["obs"], c.aug_pad, self._generator))
        if not need_next:
            with self._autocast():
                return (self._frozen_features(obs) if c.freeze_encoder else self._encode(obs)), None
        next_obs = self._pixels(random_shift(t["next_obs"], c.aug_pad, self._generator))
        if c.freeze_encoder:  # no gradient either way: one pass over both halves
            both = self._frozen_features(torch.cat([obs, next_obs]))
            return both[:len(obs)], both[len(obs):]
        with self._autocast():
            view = self._encode(obs)
            with torch.no_grad():
                next_view = self._encode(next_obs)
        return view, next_view

    @torch.no_grad()
    def _frozen_features(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dtype == torch.uint8:
            pixels = self._pixels(pixels)
        return self._encode(pixels).float()

    def _feats(self, view: torch.Tensor, state: torch.Tensor) -> dict[str, torch.Tensor]:
        """The heads' named inputs, as :meth:`DrQV2Agent.features` names them."""
        feats = {VIEW: view}
        if self.agent.arch.state_dim:
            feats[STATE] = state
        return feats

    def update(self, batch: Batch, train_actor: bool = True) -> UpdateMetrics:
        """One DrQ-v2 update on ``batch``; the actor moves only when ``train_actor`` and it is its turn."""
        with self.lock:
            if self.cfg.objective == "bc":
                return self._update_bc(batch)
            return self._update(batch, train_actor)

    def _update(self, batch: Batch, train_actor: bool) -> UpdateMetrics:
        a, c, t = self.agent, self.cfg, self._tensors(batch)
        critic, critic_target = self._critics()
        view, next_view = self._views(batch, t)
        assert next_view is not None
        feats, next_feats = self._feats(view, t["state"]), self._feats(next_view, t["next_state"])
        with torch.no_grad(), self._autocast():
            # the actor's and both target critics' view products on s' in one pass
            mine, *theirs = project_view([a.actor.head, *critic_target.heads], next_feats[VIEW])
            next_mean = a.actor(next_feats, projected=mine).float()
            next_action = noisy_action(next_mean, c.std, c.std_clip, torch.randn_like(next_mean))
            target_v = critic_target(next_feats, next_action, projected=theirs).float().min(dim=-1).values
            target = t["reward"] + t["discount"] * target_v
        with self._autocast():
            q = critic(feats, t["action"], projected=project_view(critic.heads, feats[VIEW])).float()
        critic_loss = F.mse_loss(q, target.unsqueeze(-1).expand_as(q)) * q.shape[-1]  # sum over heads, mean over batch
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        self._step(critic_loss, [self.critic_opt] + ([] if c.freeze_encoder else [self.encoder_opt]))
        self.updates += 1

        actor_loss = bc_loss = None
        if train_actor and self.updates % c.critic_updates_per_actor == 0:
            actor_loss, bc_loss = self._update_actor({k: v.detach() for k, v in feats.items()}, t)
        self._soft_update()
        return UpdateMetrics(critic_loss.item(), q.detach().mean().item(), target.mean().item(), actor_loss, bc_loss)

    def _update_actor(self, feats: dict[str, torch.Tensor], t: dict[str, torch.Tensor]) -> tuple[float, float | None]:
        a, c = self.agent, self.cfg
        critic, _ = self._critics()
        # the critic's weights get no gradient from the actor's loss: drqv2 computes one and
        # throws it away (zero_grad before the next critic step); not computing it saves the
        # critic's bottleneck product, a third of a frozen-encoder update
        critic.requires_grad_(False)
        try:
            with self._autocast():
                mean = a.actor(feats).float()
                action = noisy_action(mean, c.std, c.std_clip, torch.randn_like(mean))
                views = project_view(critic.heads, feats[VIEW])
                loss = -critic(feats, action, projected=views).float().min(dim=-1).values.mean()
        finally:
            critic.requires_grad_(True)
        bc = None
        if c.bc_weight > 0 and bool(t["demo"].any()):
            bc_term = F.mse_loss(mean[t["demo"]], t["action"][t["demo"]])
            loss = loss + c.bc_weight * bc_term
            bc = bc_term.item()
        self.actor_opt.zero_grad(set_to_none=True)
        self._step(loss, [self.actor_opt])
        return loss.item(), bc

    def _update_bc(self, batch: Batch) -> UpdateMetrics:
        """Behaviour cloning alone on the batch's demo samples (demos and interventions): the encoder
        and the actor regress the executed actions; the critics do not learn. The control that
        says what the RL adds."""
        t = self._tensors(batch)
        demo = t["demo"]
        self.updates += 1
        if not bool(demo.any()):
            return UpdateMetrics(None, None, None, None, None)
        view, _ = self._views(batch, t, need_next=False)
        with self._autocast():
            mean = self.agent.actor(self._feats(view, t["state"])).float()
        loss = F.mse_loss(mean[demo], t["action"][demo])
        self.encoder_opt.zero_grad(set_to_none=True)
        self.actor_opt.zero_grad(set_to_none=True)
        self._step(loss, [self.actor_opt] + ([] if self.cfg.freeze_encoder else [self.encoder_opt]))
        return UpdateMetrics(None, None, None, loss.item(), loss.item())

    def _step(self, loss: torch.Tensor, optimisers: Sequence[torch.optim.Optimizer]) -> None:
        """Backward and step (fp16: through the loss scaler, which skips a step that overflowed)."""
        if self._scaler is None:
            loss.backward()
            for opt in optimisers:
                opt.step()
            return
        self._scaler.scale(loss).backward()
        for opt in optimisers:
            self._scaler.step(opt)
        self._scaler.update()

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
            return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()
                    if k.startswith(prefixes)}

    def policy_weights(self) -> dict[str, torch.Tensor]:
        """The encoder AND the actor together: what the actor thread acts with."""
        return self.weights(("encoder.", "actor."))


def synthetic_batch(agent: DrQV2Agent, batch_size: int, seed: int = 0) -> Batch:
    """A batch of the agent's shapes (random frames, states, actions; half of it demos): for timing."""
    arch, rng = agent.arch, np.random.default_rng(seed)
    frame_shape = (batch_size, arch.frames, arch.channels_per_frame, *arch.image_size)

    def frames() -> np.ndarray:
        return rng.integers(0, 256, frame_shape, dtype=np.uint8)

    def states() -> np.ndarray:
        return rng.normal(size=(batch_size, arch.frames, arch.state_dim_per_frame)).astype(np.float32)

    demo = np.arange(batch_size) % 2 == 1
    return Batch(frames=frames(), states=states(),
                 action=rng.uniform(-1, 1, (batch_size, arch.action_dim)).astype(np.float32),
                 reward=rng.normal(size=batch_size).astype(np.float32),
                 discount=np.full(batch_size, 0.97, dtype=np.float32), next_frames=frames(), next_states=states(),
                 is_intervention=demo.copy(), from_demos=demo)


def seconds_per_update(agent: DrQV2Agent, cfg: LearnerConfig, device: str | torch.device = "cpu",
                       batch_size: int | None = None, updates: int = 1) -> float:
    """The median time of one update of a throwaway learner (a copy of ``agent``) at ``batch_size``
    (default: the config's), after one untimed update, over the config's cycle of critic updates
    per actor update (the actor's turn counted as often as it comes). A frozen
    encoder's features are in its cache by then, as in a session's steady state; the encoder is
    timed uncompiled (compiling takes longer than the measurement, and runs no slower)."""
    size = batch_size or cfg.batch_size
    if size is None:
        raise ValueError("seconds_per_update needs a batch size")
    timed = dataclasses.replace(cfg, batch_size=size, compile=False)
    learner = Learner(agent, timed, device)
    batch = synthetic_batch(learner.agent, size)
    batch.row = batch.next_row = np.arange(size)  # rows for the cache to keep
    learner.update(batch)
    times = []
    for _ in range(updates):
        started = time.perf_counter()
        for _ in range(cfg.critic_updates_per_actor):
            learner.update(batch)
        if learner.device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - started) / cfg.critic_updates_per_actor)
    return float(np.median(times))
