import pickle
import shutil

import pytest
import torch

from fixtures import robobase_agent_state, robobase_reference_actor, write_robobase_snapshot
from so101_sim2real.errors import CheckpointError
from so101_sim2real.policy.checkpoint import NATIVE_SPEC, NATIVE_WEIGHTS, load_checkpoint, save_native
from so101_sim2real.policy.runtime import build_agent


def _inputs(arch, batch=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 256, (batch, arch.in_channels, *arch.image_size), generator=gen).float()
    return obs, torch.randn(batch, arch.state_dim, generator=gen)


def test_fixture_has_the_robobase_layout():
    sd = robobase_agent_state()
    assert len(sd) == 98
    assert list(sd)[:2] == ["encoder.convs_per_cam.0.0.weight", "encoder.convs_per_cam.0.0.bias"]
    assert sd["actor_model.hidden_state"].shape == (1, 9, 128)
    assert sd["critic.qs.0.main_mlp.0.weight"].shape == (256, 104)


def test_robobase_snapshot_architecture_is_read_from_weights(snapshot):
    ckpt = load_checkpoint(snapshot)
    a = ckpt.arch
    assert ckpt.format == "robobase"
    assert (a.in_channels, a.frames, a.channels_per_frame) == (6, 3, 2)
    assert [c.stride for c in a.convs] == [2, 1, 1, 1]
    assert a.feature_dim == 32 * 35 * 35
    assert (a.state_dim, a.state_dim_per_frame, a.action_dim) == (54, 18, 4)
    assert a.actor.hidden == (256, 256) and a.actor.bottleneck == 50 and a.actor.layer_norm
    assert a.num_critics == 2 and a.has_critic_target and a.critic.extra_input == 4
    assert ckpt.counters["_main_loop_iterations"] == 600000
    assert ckpt.training["stddev_schedule"] == "linear(1.0,0.1,500000)"  # resolved through ${env.stddev_schedule}
    assert ckpt.provenance["observation.frame_stack"] == "cfg: frame_stack"
    assert ckpt.provenance["observation.crop"] == "default"
    assert ckpt.warnings == []


def test_actor_matches_robobase_forward(snapshot):
    ckpt = load_checkpoint(snapshot)
    agent = build_agent(ckpt)
    obs, state = _inputs(ckpt.arch)
    raw = robobase_agent_state()
    with torch.no_grad():
        assert torch.allclose(agent(obs, state), robobase_reference_actor(raw, obs, state), atol=1e-6)


def test_snapshot_convert_native_gives_bit_identical_actions(snapshot, tmp_path):
    source = load_checkpoint(snapshot)
    native = load_checkpoint(save_native(source, tmp_path / "policy"))
    assert native.format == "native" and native.arch == source.arch and native.spec == source.spec
    assert native.provenance == source.provenance
    obs, state = _inputs(source.arch, batch=5, seed=3)
    a, b = build_agent(source), build_agent(native)
    with torch.no_grad():
        assert torch.equal(a(obs, state), b(obs, state))
        fa, fb = a.features(obs, state), b.features(obs, state)
        act = a(obs, state)
        assert torch.equal(a.critic(fa, act), b.critic(fb, act))
        assert torch.equal(a.critic_target(fa, act), b.critic_target(fb, act))


def test_native_loading_needs_no_pickle(snapshot, tmp_path, monkeypatch):
    folder = save_native(load_checkpoint(snapshot), tmp_path / "policy")

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert load_checkpoint(folder).format == "native"


def test_rgb_snapshot_is_described_as_rgb(rgb_snapshot):
    ckpt = load_checkpoint(rgb_snapshot)
    assert (ckpt.arch.in_channels, ckpt.arch.channels_per_frame) == (9, 3)
    assert ckpt.spec.observation.channels == ["r", "g", "b"]
    assert ckpt.provenance["observation.channels"].startswith("weights: encoder.convs.0.weight [32, 9, 3, 3]")
    assert ckpt.warnings == []


def test_seg_depth_config_with_rgb_channels_warns(tmp_path):
    path = write_robobase_snapshot(tmp_path / "odd.pt", robobase_agent_state(c_in=9))  # cfg says seg_depth
    (warning,) = load_checkpoint(path).warnings
    assert "seg+depth" in warning and "3 channels per frame" in warning


def test_leaked_cube_state_is_recognised(leaked_snapshot):
    ckpt = load_checkpoint(leaked_snapshot)
    assert (ckpt.arch.state_dim, ckpt.arch.state_dim_per_frame) == (63, 21)
    assert ckpt.spec.state.size == 21 and ckpt.spec.state.fields[-1].name == "cube_pos"
    assert any("cube position" in w for w in ckpt.warnings)


def test_best_snapshot_warns_it_was_chosen_by_reward(tmp_path):
    path = write_robobase_snapshot(tmp_path / "best_snapshot.pt", best_eval_reward=359.08)
    ckpt = load_checkpoint(path)
    assert ckpt.counters["best_eval_reward"] == pytest.approx(359.08)
    assert any("reward, not success" in w for w in ckpt.warnings)


def test_snapshot_without_config_takes_frames_from_the_spec(tmp_path):
    path = tmp_path / "nocfg.pt"
    torch.save({"agent": robobase_agent_state()}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.arch.frames == 3 and ckpt.provenance["observation.frame_stack"] == "default"
    assert any("no training config" in n for n in ckpt.notes)


def test_wrong_shape_names_the_key(tmp_path):
    sd = robobase_agent_state()
    sd["actor.actor_model.main_mlp.0.weight"] = torch.zeros(256, 99)
    sd["actor_model.main_mlp.0.weight"] = sd["actor.actor_model.main_mlp.0.weight"]
    path = write_robobase_snapshot(tmp_path / "bad.pt", sd)
    expected = r"'actor.head.trunk.0.weight' has shape \[256, 99\], expected \[\*, 100\]"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)


def test_image_size_that_does_not_fit_the_weights_is_an_error(tmp_path):
    from fixtures import robobase_cfg

    cfg = robobase_cfg(extra={"visual_observation_shape": [64, 64]})
    path = write_robobase_snapshot(tmp_path / "small.pt", cfg=cfg)
    with pytest.raises(CheckpointError, match="takes 39200 features, but 4 convs on 64x64 images give 32x25x25"):
        load_checkpoint(path)


def test_extra_layer_norm_in_the_mlp_is_refused(tmp_path):
    sd = robobase_agent_state()
    for prefix in ("actor_model.", "actor.actor_model."):
        sd[f"{prefix}main_mlp.1.weight"] = torch.ones(256)
        sd[f"{prefix}main_mlp.1.bias"] = torch.zeros(256)
    path = write_robobase_snapshot(tmp_path / "ln.pt", sd)
    with pytest.raises(CheckpointError, match="not a Linear layer"):
        load_checkpoint(path)


def test_diverging_actor_copies_are_refused(tmp_path):
    sd = robobase_agent_state()
    sd["actor_model.out_mlp.0.bias"] = sd["actor_model.out_mlp.0.bias"] + 1
    path = write_robobase_snapshot(tmp_path / "tampered.pt", sd)
    with pytest.raises(CheckpointError, match="differs from 'actor.actor_model.out_mlp.0.bias'"):
        load_checkpoint(path)


def test_unknown_keys_are_refused(tmp_path):
    sd = robobase_agent_state()
    sd["encoder.extra.weight"] = torch.zeros(1)
    path = write_robobase_snapshot(tmp_path / "extra.pt", sd)
    with pytest.raises(CheckpointError, match="unexpected 'encoder.extra.weight'"):
        load_checkpoint(path)


def test_drqv2_needs_trust_and_then_matches_the_original(drqv2_snapshot):
    path, original = drqv2_snapshot
    with pytest.raises(CheckpointError, match=r"'drqv2.DrQV2Agent'.*pass trust_pickle"):
        load_checkpoint(path)
    ckpt = load_checkpoint(path, trust_pickle=True)
    assert ckpt.format == "drqv2"
    assert (ckpt.arch.in_channels, ckpt.arch.state_dim, ckpt.arch.actor.hidden) == (9, 0, (64, 64))
    assert ckpt.spec.observation.channels == ["r", "g", "b"]
    agent = build_agent(ckpt)
    obs = torch.randint(0, 256, (2, 9, 84, 84)).float()
    with torch.no_grad():
        assert torch.equal(agent(obs), original.act_mean(obs))
        q1, q2 = original.critic(original.encoder(obs), agent(obs))
        assert torch.allclose(agent.critic(agent.features(obs, None), agent(obs)), torch.cat([q1, q2], -1))


def test_native_folder_missing_spec(snapshot, tmp_path):
    folder = save_native(load_checkpoint(snapshot), tmp_path / "policy")
    (folder / NATIVE_SPEC).unlink()
    with pytest.raises(CheckpointError, match="missing spec.yaml"):
        load_checkpoint(folder)


def test_native_truncated_weights(snapshot, tmp_path):
    folder = save_native(load_checkpoint(snapshot), tmp_path / "policy")
    data = (folder / NATIVE_WEIGHTS).read_bytes()
    (folder / NATIVE_WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(folder)


def test_convert_never_overwrites_without_force(snapshot, tmp_path):
    ckpt = load_checkpoint(snapshot)
    folder = save_native(ckpt, tmp_path / "policy")
    before = (folder / NATIVE_WEIGHTS).read_bytes()
    with pytest.raises(CheckpointError, match="already exists"):
        save_native(ckpt, folder)
    assert (folder / NATIVE_WEIGHTS).read_bytes() == before
    save_native(ckpt, folder, overwrite=True)
    assert load_checkpoint(folder).arch == ckpt.arch
    shutil.rmtree(folder)


def test_bare_agent_state_dict_is_read_as_robobase(tmp_path):
    path = tmp_path / "agent_only.pt"
    torch.save(robobase_agent_state(), path)
    ckpt = load_checkpoint(path)
    assert ckpt.format == "robobase" and ckpt.arch.state_dim == 54
    assert any("no training config" in n for n in ckpt.notes)


def test_a_file_that_is_no_policy_says_what_it_holds(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match=r"no 'agent' entry \(found 2 keys such as \['epoch', 'model'\]\)"):
        load_checkpoint(path)
