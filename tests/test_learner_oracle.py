"""An oracle for one learner update: facebookresearch/drqv2's ``update``, retyped in this file.

The oracle below is written from drqv2.py (``RandomShiftsAug``, ``update``, ``update_critic``,
``update_actor``) and utils.py (``TruncatedNormal.sample``, ``soft_update_params``), plus the
fine-tuning recipe the learner documents (docs/reference.md section 8, ``LearnerConfig``):
AdamW at the recipe's learning rates, a fixed exploration std clipped at ``std_clip``, the actor
moving every ``critic_updates_per_actor`` critic updates, and a behaviour-cloning term
``bc_weight * mean((mu - a)^2)`` over the demo samples' action means. It calls none of the
learner's helpers; it shares only the networks (deep copies of the learner's own weights), the
batch, the exploration noise (the learner's draws are recorded and handed to the oracle) and the
augmentation shifts (the same seed drives both generators).

After each update the losses, the gradient of every parameter (critic-loss gradients in the
encoder, actor-loss gradients not) and the weights after the optimiser steps and the tau target
update must agree to 1e-5.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from so101_sim2real.hilserl.learner import Learner, LearnerConfig
from so101_sim2real.hilserl.replay import Batch, ReplayBuffer, Step
from so101_sim2real.machine import native_bf16
from so101_sim2real.policy.architecture import STATE, VIEW, Architecture, ConvLayer, HeadArch
from so101_sim2real.policy.networks import DrQV2Agent

GAMMA = 0.99
STACK, CHANNELS, SIZE, STATE_DIM, ACTION_DIM = 3, 2, 16, 3, 2
RTOL, ATOL = 1e-5, 1e-6


def tiny_agent(seed: int = 0) -> DrQV2Agent:
    """The user's layout (two convs, per-input bottlenecks, two Q heads) at toy sizes: 16x16 images."""
    convs = (ConvLayer(STACK * CHANNELS, 8, 3, 2), ConvLayer(8, 8, 3, 1))  # 16 -> 7 -> 5
    inputs = ((VIEW, 8 * 5 * 5), (STATE, STACK * STATE_DIM))
    actor = HeadArch(inputs, 8, True, True, (16, 16), 0, ACTION_DIM)
    critic = HeadArch(inputs, 8, True, True, (16, 16), ACTION_DIM, 1)
    arch = Architecture((SIZE, SIZE), STACK, STACK * CHANNELS, convs, 8 * 5 * 5, STACK * STATE_DIM, ACTION_DIM,
                        actor, critic, 2, True)
    torch.manual_seed(seed)
    agent = DrQV2Agent(arch)
    with torch.no_grad():  # LayerNorms that are not the identity, so their gradients matter too
        for m in agent.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.add_(0.2 * torch.randn_like(m.weight))
                m.bias.add_(0.2 * torch.randn_like(m.bias))
    return agent


def hand_batch(seed: int = 0) -> Batch:
    """Six transitions: full 3-step windows (gamma^3), a window cut short (gamma^2, gamma^1) and two
    windows that end their episode (discount 0: no bootstrap); demos and online samples mixed."""
    rng = np.random.default_rng(seed)
    n = 6

    def frames() -> np.ndarray:
        return rng.integers(0, 256, (n, STACK, CHANNELS, SIZE, SIZE)).astype(np.uint8)

    def states() -> np.ndarray:
        return rng.normal(size=(n, STACK, STATE_DIM)).astype(np.float32)

    demo = np.array([False, True, False, True, True, False])
    return Batch(frames=frames(), states=states(), action=rng.uniform(-1, 1, (n, ACTION_DIM)).astype(np.float32),
                 reward=rng.normal(size=n).astype(np.float32),
                 discount=np.array([GAMMA**3, GAMMA**3, 0.0, GAMMA**2, 0.0, GAMMA], dtype=np.float32),
                 next_frames=frames(), next_states=states(), is_intervention=demo.copy(), from_demos=demo)


class RecordedNoise:
    """Stands in for ``torch.randn_like`` during the learner's update and keeps what it handed out."""

    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(seed)
        self.drawn: list[torch.Tensor] = []

    def __call__(self, like: torch.Tensor, **_: object) -> torch.Tensor:
        eps = torch.randn(like.shape, generator=self.gen, dtype=like.dtype) * 3.0  # large: the clip bites
        self.drawn.append(eps.clone())
        return eps


class DrQV2Oracle:
    """drqv2.py's DrQV2Agent.update on deep copies of the learner's networks, at the recipe's settings."""

    def __init__(self, agent: DrQV2Agent, cfg: LearnerConfig, seed: int):
        self.cfg = cfg
        self.encoder = copy.deepcopy(agent.encoder)
        self.actor = copy.deepcopy(agent.actor)
        self.critic = copy.deepcopy(agent.critic)
        self.critic_target = copy.deepcopy(agent.critic_target)
        self.encoder.requires_grad_(not cfg.freeze_encoder)
        self.critic_target.requires_grad_(False)
        self.encoder_opt = torch.optim.AdamW(self.encoder.parameters(), lr=cfg.encoder_lr,
                                             weight_decay=cfg.weight_decay)
        self.critic_opt = torch.optim.AdamW(self.critic.parameters(), lr=cfg.critic_lr, weight_decay=cfg.weight_decay)
        self.actor_opt = torch.optim.AdamW(self.actor.parameters(), lr=cfg.actor_lr, weight_decay=cfg.weight_decay)
        self.shift_gen = torch.Generator().manual_seed(seed)  # the learner's documented seed
        self.updates = 0

    # drqv2.py RandomShiftsAug.forward, its randint drawn from a generator
    def aug(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.size()
        assert h == w
        pad = self.cfg.aug_pad
        x = F.pad(x, (pad,) * 4, "replicate")
        eps = 1.0 / (h + 2 * pad)
        arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * pad, dtype=x.dtype)[:h]
        arange = arange.unsqueeze(0).repeat(h, 1).unsqueeze(2)
        base_grid = torch.cat([arange, arange.transpose(1, 0)], dim=2).unsqueeze(0).repeat(n, 1, 1, 1)
        shift = torch.randint(0, 2 * pad + 1, size=(n, 1, 1, 2), dtype=x.dtype, generator=self.shift_gen)
        shift *= 2.0 / (h + 2 * pad)
        # At integer offsets this reads whole pixels, up to the float rounding of the grid (~1e-3 of
        # a level); the frames are whole numbers, so rounding gives the pixels drqv2 means to read.
        return F.grid_sample(x, base_grid + shift, padding_mode="zeros", align_corners=False).round()

    def encode(self, obs: torch.Tensor, state: torch.Tensor) -> dict[str, torch.Tensor]:
        return {VIEW: self.encoder(obs), STATE: state}

    @staticmethod
    def q_pair(critic: torch.nn.Module, h: dict[str, torch.Tensor], action: torch.Tensor):
        q = critic(h, action)
        return q[:, 0:1], q[:, 1:2]

    # utils.py TruncatedNormal.sample(clip=std_clip) with a given standard-normal draw
    def sample(self, mu: torch.Tensor, standard_normal: torch.Tensor) -> torch.Tensor:
        eps = torch.clamp(standard_normal * self.cfg.std, -self.cfg.std_clip, self.cfg.std_clip)
        x = mu + eps
        clamped_x = torch.clamp(x, -1.0 + 1e-6, 1.0 - 1e-6)
        return x - x.detach() + clamped_x.detach()

    def update(self, batch: Batch, noise: list[torch.Tensor], train_actor: bool = True) -> dict:
        cfg, n = self.cfg, len(batch.reward)
        obs = torch.as_tensor(batch.frames).float().reshape(n, STACK * CHANNELS, SIZE, SIZE)
        next_obs = torch.as_tensor(batch.next_frames).float().reshape(n, STACK * CHANNELS, SIZE, SIZE)
        state = torch.as_tensor(batch.states).reshape(n, STACK * STATE_DIM)
        next_state = torch.as_tensor(batch.next_states).reshape(n, STACK * STATE_DIM)
        action = torch.as_tensor(batch.action)
        reward = torch.as_tensor(batch.reward).unsqueeze(1)  # (B, 1), as drqv2's replay yields it
        discount = torch.as_tensor(batch.discount).unsqueeze(1)  # gamma^n per sample, 0 where it ended
        demo = torch.as_tensor(batch.from_demos)
        noise = list(noise)

        obs, next_obs = self.aug(obs), self.aug(next_obs)
        h = self.encode(obs, state)
        with torch.no_grad():
            next_h = self.encode(next_obs, next_state)

        # update_critic
        with torch.no_grad():
            next_action = self.sample(self.actor(next_h), noise.pop(0))
            target_q1, target_q2 = self.q_pair(self.critic_target, next_h, next_action)
            target_v = torch.min(target_q1, target_q2)
            target_q = reward + discount * target_v
        q1, q2 = self.q_pair(self.critic, h, action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        if not cfg.freeze_encoder:
            self.encoder_opt.step()
        self.updates += 1
        out = {"critic_loss": critic_loss.item(), "q_mean": torch.cat([q1, q2], 1).mean().item(),
               "target_mean": target_q.mean().item(), "actor_loss": None, "bc_loss": None,
               "encoder_grads": [None if p.grad is None else p.grad.clone() for p in self.encoder.parameters()],
               "critic_grads": [p.grad.clone() for p in self.critic.parameters()]}

        # update_actor, on detached features, on its turn
        if train_actor and self.updates % cfg.critic_updates_per_actor == 0:
            h_detached = {k: v.detach() for k, v in h.items()}
            mu = self.actor(h_detached)
            pi = self.sample(mu, noise.pop(0))
            q1, q2 = self.q_pair(self.critic, h_detached, pi)
            actor_loss = -torch.min(q1, q2).mean()
            if cfg.bc_weight > 0 and bool(demo.any()):
                bc = ((mu[demo] - action[demo]) ** 2).mean()
                actor_loss = actor_loss + cfg.bc_weight * bc
                out["bc_loss"] = bc.item()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            out["actor_loss"] = actor_loss.item()

        # utils.soft_update_params(critic, critic_target, tau)
        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.critic_target.parameters(), strict=True):
                tp.data.copy_(cfg.tau * p.data + (1 - cfg.tau) * tp.data)
        assert not noise, "the oracle used fewer noise draws than the learner made"
        return out


def modules(learner: Learner, oracle: DrQV2Oracle):
    a = learner.agent
    return [("encoder", a.encoder, oracle.encoder), ("actor", a.actor, oracle.actor),
            ("critic", a.critic, oracle.critic), ("critic_target", a.critic_target, oracle.critic_target)]


def close(actual: torch.Tensor, expected: torch.Tensor, where: str) -> None:
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL, msg=lambda m: f"{where}: {m}")


def assert_same_grads_and_weights(learner: Learner, oracle: DrQV2Oracle, step: int, critic_grads: list) -> None:
    """Every weight, and every gradient that moved one. The critic's are the critic loss's: drqv2's
    actor loss adds its own to them, which the next critic step zeroes unused; the learner does not
    compute those."""
    for name, mine, theirs in modules(learner, oracle):
        grads = critic_grads if name == "critic" else [q.grad for q in theirs.parameters()]
        for (pname, p), q, g in zip(mine.named_parameters(), theirs.parameters(), grads, strict=True):
            where = f"update {step}: {name}.{pname}"
            assert (p.grad is None) == (g is None), f"{where}: gradient present in only one of the two"
            if p.grad is not None:
                close(p.grad, g, f"{where} gradient")
            close(p.data, q.data, f"{where} weight")


def run_both(cfg: LearnerConfig, batches: list[Batch], train_actor: list[bool], monkeypatch, seed: int = 3,
             rtol: float = RTOL, atol: float = ATOL) -> Learner:
    learner = Learner(tiny_agent(), cfg, seed=seed)
    oracle = DrQV2Oracle(learner.agent, cfg, seed=seed)
    for step, (batch, actor_on) in enumerate(zip(batches, train_actor, strict=True), start=1):
        noise = RecordedNoise(100 + step)
        with monkeypatch.context() as m:
            m.setattr(torch, "randn_like", noise)
            got = learner.update(batch, train_actor=actor_on)
        want = oracle.update(batch, noise.drawn, train_actor=actor_on)
        actor_turn = actor_on and step % cfg.critic_updates_per_actor == 0
        assert len(noise.drawn) == 1 + actor_turn  # one draw for a', one more for the actor's a
        assert all(tuple(d.shape) == (len(batch.reward), ACTION_DIM) for d in noise.drawn)
        assert got.critic_loss == pytest.approx(want["critic_loss"], rel=RTOL, abs=ATOL), f"update {step}"
        assert got.q_mean == pytest.approx(want["q_mean"], rel=RTOL, abs=ATOL)
        assert got.target_mean == pytest.approx(want["target_mean"], rel=RTOL, abs=ATOL)
        assert (got.actor_loss is None) == (not actor_turn)
        if actor_turn:
            assert got.actor_loss == pytest.approx(want["actor_loss"], rel=RTOL, abs=ATOL), f"update {step}"
        assert (got.bc_loss is None) == (want["bc_loss"] is None)
        if want["bc_loss"] is not None:
            assert got.bc_loss == pytest.approx(want["bc_loss"], rel=RTOL, abs=ATOL)
        # the encoder's gradient is the critic loss's alone, also after an actor update
        for p, g in zip(learner.agent.encoder.parameters(), want["encoder_grads"], strict=True):
            assert (p.grad is None) == (g is None)
            if g is not None:
                torch.testing.assert_close(p.grad, g, rtol=RTOL, atol=ATOL)
        assert_same_grads_and_weights(learner, oracle, step, want["critic_grads"])
    return learner


def test_one_update_matches_drqv2_with_the_bc_term(monkeypatch):
    cfg = LearnerConfig(critic_updates_per_actor=1, bc_weight=2.5, std=0.2, std_clip=0.3, tau=0.05,
                        actor_lr=1e-3, critic_lr=1e-3, encoder_lr=1e-3)
    run_both(cfg, [hand_batch(0)], [True], monkeypatch)


def test_a_warm_up_then_an_actor_every_second_update_matches_drqv2(monkeypatch):
    """Critic-only warm-up, then the actor on every 2nd update; Adam state and targets carried over."""
    cfg = LearnerConfig(critic_updates_per_actor=2, bc_weight=1.0, tau=0.1, actor_lr=1e-3)
    batches = [hand_batch(s) for s in range(5)]
    run_both(cfg, batches, [False, False, True, True, True], monkeypatch)


def test_no_demo_samples_or_a_frozen_encoder_match_drqv2(monkeypatch):
    cfg = LearnerConfig(critic_updates_per_actor=1, bc_weight=1.0, freeze_encoder=True, tau=0.2)
    batch = hand_batch(7)
    batch.from_demos[:] = False  # a bc weight but no demo in the batch: the pure DrQ-v2 actor loss
    run_both(cfg, [batch, hand_batch(8)], [True, True], monkeypatch)


def test_random_shift_reads_the_pixels_drqv2s_grid_sample_reads():
    """The learner's shift by index against drqv2's grid_sample, at the user's 84x84 and pad 4: the
    same draws give the same shifts, and the pixels differ by the grid's float rounding only."""
    from so101_sim2real.policy.augment import random_shift

    frames = torch.randint(0, 256, (32, 6, 84, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cfg = LearnerConfig(aug_pad=4)
    oracle = DrQV2Oracle(tiny_agent(), cfg, seed=11)
    theirs = oracle.aug(frames.float())
    mine = random_shift(frames, 4, torch.Generator().manual_seed(11))
    assert mine.dtype == torch.uint8 and mine.shape == frames.shape
    torch.testing.assert_close(mine.float(), theirs, rtol=0, atol=0)
    assert not torch.equal(mine, frames)  # it did shift


def replay_buffer(seed: int = 5, episodes: int = 3) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(200, (CHANNELS, SIZE, SIZE), STATE_DIM, ACTION_DIM, frame_stack=STACK, n_step=3,
                          gamma=GAMMA, seed=seed)
    for _ in range(episodes):
        buffer.begin_episode()
        for i in range(5):
            buffer.add(Step(rng.integers(0, 256, (CHANNELS, SIZE, SIZE)).astype(np.uint8),
                            rng.normal(size=STATE_DIM).astype(np.float32),
                            rng.uniform(-1, 1, ACTION_DIM).astype(np.float32), float(rng.normal()), i == 4,
                            is_intervention=i == 2))
    return buffer


def test_a_replay_batch_with_ended_episodes_matches_drqv2(monkeypatch):
    """Batches as the buffer builds them: n-step sums, gamma^n, discount 0 where an episode ended."""
    buffer = replay_buffer()
    batches = [buffer.sample(8) for _ in range(3)]
    discounts = np.concatenate([b.discount for b in batches])
    assert (discounts == 0).any() and np.isclose(discounts, GAMMA**3).any()  # both kinds of window present
    cfg = LearnerConfig(critic_updates_per_actor=1, bc_weight=0.5, tau=0.05)
    run_both(cfg, batches, [True, True, True], monkeypatch)


def test_a_frozen_encoder_read_from_the_feature_cache_matches_drqv2_unaugmented(monkeypatch):
    """The fast frozen-encoder learner: features from the cache (computed on a row's first
    sample, read on later ones) give drqv2's update with the encoder frozen and no shift."""
    buffer = replay_buffer(seed=6, episodes=2)
    batches = [buffer.sample(8) for _ in range(4)]  # 8 of ~12 rows a batch: later batches hit the cache
    cfg = LearnerConfig(critic_updates_per_actor=1, bc_weight=0.5, freeze_encoder=True, aug_pad=0, tau=0.05,
                        actor_lr=1e-3, critic_lr=1e-3)
    learner = run_both(cfg, batches, [True, False, True, True], monkeypatch)
    assert learner.cache is not None and learner.cache.hits > 0 and learner.cache.misses > 0


@pytest.mark.skipif(not native_bf16(), reason="bf16 is refused on a CPU without native bf16 (tested in test_learner)")
def test_bf16_autocast_stays_near_drqv2(monkeypatch):
    """bf16 keeps 8 bits of mantissa: losses within 2%, and every gradient pointing where drqv2's
    fp32 one points (cosine >= 0.99; the first AdamW step is the gradient's sign, so steps are
    compared by their gradients)."""
    cfg = LearnerConfig(critic_updates_per_actor=1, bc_weight=1.0, precision="bf16", actor_lr=1e-3)
    learner = Learner(tiny_agent(), cfg, seed=3)
    oracle = DrQV2Oracle(learner.agent, cfg, seed=3)
    batch = hand_batch(0)
    noise = RecordedNoise(1)
    with monkeypatch.context() as m:
        m.setattr(torch, "randn_like", noise)
        got = learner.update(batch)
    want = oracle.update(batch, noise.drawn)
    assert got.critic_loss == pytest.approx(want["critic_loss"], rel=0.02)
    assert got.actor_loss == pytest.approx(want["actor_loss"], rel=0.02)
    theirs = {"encoder": want["encoder_grads"], "critic": want["critic_grads"],
              "actor": [p.grad for p in oracle.actor.parameters()]}
    for name, module in (("encoder", learner.agent.encoder), ("critic", learner.agent.critic),
                         ("actor", learner.agent.actor)):
        mine = torch.cat([p.grad.flatten() for p in module.parameters()])
        should = torch.cat([g.flatten() for g in theirs[name]])
        assert torch.nn.functional.cosine_similarity(mine, should, dim=0) >= 0.99, name
