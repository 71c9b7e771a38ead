"""The DrQ-v2 learner on the user's network: augmentation, critic, actor, targets, publishing."""

import numpy as np
import pytest
import torch

from so101_sim2real.hilserl.exploration import noisy_action
from so101_sim2real.hilserl.learner import Learner, LearnerConfig, random_shift
from so101_sim2real.hilserl.replay import ReplayBuffer, Step
from so101_sim2real.policy.checkpoint import load_checkpoint
from so101_sim2real.policy.runtime import build_agent


@pytest.fixture(scope="module")
def agent(snapshot):
    return build_agent(load_checkpoint(snapshot))


def filled_buffer(seed: int = 0, episodes: int = 3, demo: bool = True) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(500, (2, 84, 84), 18, 4, seed=seed)
    for _ in range(episodes):
        buffer.begin_episode()
        for i in range(12):
            frame = np.stack([rng.integers(0, 5, (84, 84)), rng.integers(0, 256, (84, 84))]).astype(np.uint8)
            buffer.add(Step(frame, rng.normal(size=18).astype(np.float32),
                            rng.uniform(-1, 1, 4).astype(np.float32), float(rng.normal()), i == 11,
                            is_intervention=demo and 4 <= i < 8))
    return buffer


def params(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


def test_random_shift_moves_whole_pixels_within_the_pad():
    x = torch.zeros(64, 1, 84, 84)
    x[:, 0, 40, 40] = 1.0
    out = random_shift(x, 4, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for img in out[:, 0]:
        ys, xs = torch.nonzero(img > 0.999, as_tuple=True)  # bilinear at integer offsets: an exact copy
        assert len(ys) == 1 and abs(int(ys[0]) - 40) <= 4 and abs(int(xs[0]) - 40) <= 4
        assert float(img.sum()) == pytest.approx(1.0)
    assert len({tuple(torch.nonzero(img)[0].tolist()) for img in out[:, 0]}) > 10  # shifts differ per sample


def test_noisy_actions_stay_in_range_with_clipped_noise():
    mean = torch.tensor([[0.0, 0.99, -0.99, 0.5]]).repeat(2000, 1)
    a = noisy_action(mean, std=1.0, clip=0.3, standard_normal=torch.randn_like(mean))
    assert float(a.abs().max()) < 1.0 and float((a - mean).abs().max()) <= 0.3 + 1e-6


def test_an_update_moves_the_critic_and_encoder_then_the_actor_on_its_turn(agent):
    learner = Learner(agent, LearnerConfig(batch_size=8, critic_updates_per_actor=2))
    buffer = filled_buffer()
    a = learner.agent
    enc, actor, target = params(a.encoder), params(a.actor), params(a.critic_target)
    m = learner.update(buffer.sample(8))
    assert m.actor_loss is None  # the first of every two updates moves the critic only
    assert not torch.equal(enc, params(a.encoder)) and torch.equal(actor, params(a.actor))
    step = params(a.critic_target) - target
    assert 0 < float(step.abs().max()) < 0.05  # the targets follow by tau, not all the way
    m = learner.update(buffer.sample(8))
    assert m.actor_loss is not None and not torch.equal(actor, params(a.actor))


def test_the_warm_up_trains_the_critic_only(agent):
    learner = Learner(agent, LearnerConfig(batch_size=8, critic_updates_per_actor=1))
    buffer = filled_buffer()
    actor = params(learner.agent.actor)
    for _ in range(3):
        assert learner.update(buffer.sample(8), train_actor=False).actor_loss is None
    assert torch.equal(actor, params(learner.agent.actor))


def test_critics_are_reinitialised_and_the_sim_encoder_and_actor_kept(agent):
    learner = Learner(agent, LearnerConfig())
    assert torch.equal(params(learner.agent.actor), params(agent.actor))
    assert torch.equal(params(learner.agent.encoder), params(agent.encoder))
    assert not torch.equal(params(learner.agent.critic), params(agent.critic))
    assert torch.equal(params(learner.agent.critic_target), params(learner.agent.critic))
    kept = Learner(agent, LearnerConfig(reinit_critics=False))
    assert torch.equal(params(kept.agent.critic), params(agent.critic))


def test_a_frozen_encoder_does_not_move(agent):
    learner = Learner(agent, LearnerConfig(freeze_encoder=True, critic_updates_per_actor=1))
    buffer = filled_buffer()
    enc = params(learner.agent.encoder)
    for _ in range(2):
        learner.update(buffer.sample(8))
    assert torch.equal(enc, params(learner.agent.encoder))


@pytest.mark.slow
def test_the_bc_term_pulls_the_actor_toward_demo_actions(agent):
    learner = Learner(agent, LearnerConfig(bc_weight=10.0, critic_updates_per_actor=1, actor_lr=1e-3))
    batch = filled_buffer().sample(16)
    losses = [learner.update(batch).bc_loss for _ in range(12)]
    assert losses[0] is not None and losses[-1] < 0.7 * losses[0]


@pytest.mark.slow
def test_the_critic_loss_falls_on_a_fixed_batch(agent):
    torch.manual_seed(0)
    learner = Learner(agent, LearnerConfig(critic_updates_per_actor=1000))
    batch = filled_buffer(seed=3).sample(16)
    losses = [learner.update(batch).critic_loss for _ in range(25)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_published_weights_are_the_encoder_and_the_actor_together(agent):
    learner = Learner(agent, LearnerConfig(critic_updates_per_actor=1))
    learner.update(filled_buffer().sample(8))
    weights = learner.policy_weights()
    assert {k.split(".")[0] for k in weights} == {"encoder", "actor"}
    fresh = build_agent(load_checkpoint_like(agent))
    fresh.load_state_dict(weights, strict=False)
    obs = torch.randint(0, 5, (2, 6, 84, 84)).float()
    state = torch.randn(2, 54)
    learner.agent.eval()
    assert torch.allclose(fresh(obs, state), learner.agent(obs, state))


def load_checkpoint_like(agent):
    """A checkpoint-shaped object for build_agent from an agent's own weights."""
    class _Ckpt:
        arch = agent.arch
        weights = agent.state_dict()
    return _Ckpt()


def test_a_checkpoint_without_critics_is_refused(agent):
    import copy

    bare = copy.deepcopy(agent)
    bare.critic = None
    with pytest.raises(ValueError, match="no critics"):
        Learner(bare)


@pytest.mark.slow
def test_behaviour_cloning_fits_the_demo_actions_and_leaves_the_critics(agent):
    import copy

    from so101_sim2real.hilserl.bc import behaviour_clone

    rng = np.random.default_rng(3)
    buffer = ReplayBuffer(500, (2, 84, 84), 18, 4, seed=0)
    buffer.begin_episode()
    for i in range(40):
        state = rng.normal(size=18).astype(np.float32)
        frame = np.stack([rng.integers(0, 5, (84, 84)), rng.integers(0, 256, (84, 84))]).astype(np.uint8)
        buffer.add(Step(frame, state, np.tanh(state[:4]), 0.0, i == 39))
    a = copy.deepcopy(agent)
    critic, actor = params(a.critic), params(a.actor)
    losses = behaviour_clone(a, buffer, updates=40, batch_size=16, lr=1e-3)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert torch.equal(params(a.critic), critic) and not torch.equal(params(a.actor), actor)
    assert not a.training  # handed back ready to act


def test_the_bc_objective_moves_the_encoder_and_actor_toward_demo_actions_only(agent):
    """The benchmark's control: behaviour cloning alone, on the batch's demo samples; critics untouched."""
    learner = Learner(agent, LearnerConfig(objective="bc", actor_lr=1e-3, encoder_lr=1e-3))
    a = learner.agent
    batch = filled_buffer().sample(16)
    critic, target, enc = params(a.critic), params(a.critic_target), params(a.encoder)
    losses = [learner.update(batch).bc_loss for _ in range(6)]
    assert losses[-1] < losses[0]
    assert torch.equal(params(a.critic), critic) and torch.equal(params(a.critic_target), target)
    assert not torch.equal(params(a.encoder), enc)
    online_only = filled_buffer(demo=False).sample(8)
    actor = params(a.actor)
    metrics = learner.update(online_only)  # no demo sample: nothing to clone, nothing moves
    assert metrics.bc_loss is None and torch.equal(params(a.actor), actor)


def test_number_formats_the_device_would_emulate_are_refused(agent, monkeypatch):
    from so101_sim2real.errors import So101Error
    from so101_sim2real.hilserl import learner as learner_module

    with pytest.raises(So101Error, match="fp16 needs a GPU"):
        Learner(agent, LearnerConfig(precision="fp16"))
    with pytest.raises(So101Error, match="choose fp32, bf16, fp16"):
        Learner(agent, LearnerConfig(precision="fp8"))
    monkeypatch.setattr(learner_module, "native_bf16", lambda: False)
    with pytest.raises(So101Error, match="no native bf16"):
        Learner(agent, LearnerConfig(precision="bf16"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(So101Error, match="this GPU has no bf16"):
        learner_module.check_precision("bf16", torch.device("cuda"))
    learner_module.check_precision("fp16", torch.device("cuda"))  # a GPU's: accepted (its loss scaling)
    with pytest.raises(So101Error, match="objective"):
        Learner(agent, LearnerConfig(objective="ppo"))


def test_a_frozen_encoder_runs_once_per_stored_stack(agent):
    """With the feature cache, the encoder sees each row's stack once; later samples read it."""
    learner = Learner(agent, LearnerConfig(freeze_encoder=True, critic_updates_per_actor=1))
    calls = []
    learner.agent.encoder.register_forward_hook(lambda module, inputs, out: calls.append(len(inputs[0])))
    buffer = filled_buffer(episodes=1)  # 12 rows
    for _ in range(6):
        learner.update(buffer.sample(16))
    assert learner.cache is not None
    assert sum(calls) == learner.cache.misses <= 2 * 12  # each row at most once per store it is in
    assert learner.cache.hits > learner.cache.misses
