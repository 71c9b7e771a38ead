"""A RoboBase DrQ-v2 snapshot with random weights, in the user's exact layout.

Built key by key as RoboBase's DrQ-v2 agent registers its modules (encoder, actor_model,
actor.actor_model, critic, critic_target; the RNN ``hidden_state`` buffer before each MLP's
layers), independently of the toolkit's own networks (policy/networks.py), so that reading it
is a real test of the mapping. ``scripts/make_example_snapshot.py`` writes one for a person to
try every command without a trained policy; the tests write theirs here too.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch


def _linear(gen: torch.Generator, out_f: int, in_f: int) -> dict[str, torch.Tensor]:
    return {"weight": torch.randn(out_f, in_f, generator=gen) * (1.0 / in_f**0.5),
            "bias": torch.randn(out_f, generator=gen) * 0.1}


def _layer_norm(gen: torch.Generator, n: int) -> dict[str, torch.Tensor]:
    return {"weight": 1.0 + 0.1 * torch.randn(n, generator=gen), "bias": 0.1 * torch.randn(n, generator=gen)}


def _mlp(gen: torch.Generator, inputs: dict[str, int], extra: int, bottleneck: int, hidden: tuple[int, ...],
         out: int) -> OrderedDict:
    """One RoboBase ``MLPWithBottleneckFeatures`` state_dict (num_envs=9, rnn 128)."""
    sd: OrderedDict = OrderedDict()
    sd["hidden_state"] = torch.zeros(1, 9, 128)
    for name, n in inputs.items():
        for p, t in _linear(gen, bottleneck, n).items():
            sd[f"input_preprocess_modules.{name}.0.{p}"] = t
        for p, t in _layer_norm(gen, bottleneck).items():
            sd[f"input_preprocess_modules.{name}.1.{p}"] = t
    width = bottleneck * len(inputs) + extra
    for i, h in enumerate(hidden):  # Linear, Identity norm, ReLU -> indices 0, 3, ...
        for p, t in _linear(gen, h, width).items():
            sd[f"main_mlp.{3 * i}.{p}"] = t
        width = h
    for p, t in _linear(gen, out, width).items():
        sd[f"out_mlp.0.{p}"] = t
    return sd


def robobase_agent_state(c_in: int = 6, state_dim: int = 54, action_dim: int = 4, hidden: tuple[int, ...] = (256, 256),
                         bottleneck: int = 50, channels: int = 32, num_critics: int = 2, seed: int = 0) -> OrderedDict:
    """A RoboBase DrQ-v2 agent ``state_dict`` for 84x84 inputs."""
    gen = torch.Generator().manual_seed(seed)
    sd: OrderedDict = OrderedDict()
    in_ch = c_in
    for i in range(4):  # Conv, Identity norm, ReLU -> indices 0, 3, 6, 9
        sd[f"encoder.convs_per_cam.0.{3 * i}.weight"] = torch.randn(channels, in_ch, 3, 3, generator=gen) * (
            2.0 / (in_ch * 9)) ** 0.5
        sd[f"encoder.convs_per_cam.0.{3 * i}.bias"] = torch.randn(channels, generator=gen) * 0.05
        in_ch = channels
    inputs = {"fused_view_feats": channels * 35 * 35}
    if state_dim:
        inputs["low_dim_obs"] = state_dim
    actor = _mlp(gen, inputs, 0, bottleneck, hidden, action_dim)
    for k, t in actor.items():
        sd[f"actor_model.{k}"] = t
    for k, t in actor.items():  # the same tensors, registered a second time
        sd[f"actor.actor_model.{k}"] = t
    critics = [_mlp(gen, inputs, action_dim, bottleneck, hidden, 1) for _ in range(num_critics)]
    for prefix in ("critic", "critic_target"):
        for q, critic in enumerate(critics):
            for k, t in critic.items():
                sd[f"{prefix}.qs.{q}.{k}"] = t.clone()
    return sd


def robobase_cfg(frame_stack: int = 3, obs_type: str = "seg_depth", extra: dict | None = None) -> Any:
    """A RoboBase training config as an OmegaConf DictConfig (with interpolations); needs omegaconf
    (the dev extra), as RoboBase pickles its config with it."""
    from omegaconf import OmegaConf

    data = {
        "num_train_envs": 1, "replay_size_before_train": 2000, "num_train_frames": 1200000,
        "update_every_steps": 2, "num_explore_steps": 2000, "batch_size": 256,
        "pixels": True, "visual_observation_shape": [84, 84], "frame_stack": frame_stack,
        "frame_stack_on_channel": True, "action_repeat": 2, "action_sequence": 1,
        "replay": {"size": 100000, "gamma": 0.99, "nstep": 3},
        "env": {"env_name": "so101_lift_cube", "obs_type": obs_type, "episode_length": 200,
                "lock_wrist": False, "stddev_schedule": "linear(1.0,0.1,500000)"},
        "method": {
            "_target_": "robobase.method.drqv2.DrQV2", "num_explore_steps": "${num_explore_steps}",
            "actor_lr": 1e-4, "critic_lr": 1e-4, "encoder_lr": 1e-4, "weight_decay": 0.0,
            "num_critics": 2, "critic_target_tau": 0.01, "stddev_schedule": "${env.stddev_schedule}",
            "stddev_clip": 0.3, "use_augmentation": True,
            "actor_model": {"keys_to_bottleneck": ["fused_view_feats", "low_dim_obs", "time_obs"],
                            "bottleneck_size": 50, "norm_after_bottleneck": True, "tanh_after_bottleneck": True,
                            "mlp_nodes": [256, 256]},
            "encoder_model": {"num_downsample_convs": 1, "num_post_downsample_convs": 3, "channels": 32,
                              "kernel_size": 3},
        },
        "wandb": {"use": False, "project": "${oc.env:USER}RoboBase"},
    }
    if extra:
        data.update(extra)
    return OmegaConf.create(data)


def write_robobase_snapshot(path: Path, agent: OrderedDict | None = None, cfg: Any = None,
                            best_eval_reward: float | None = None) -> Path:
    """``torch.save`` a snapshot exactly as RoboBase's workspace does."""
    payload = {
        "agent": agent if agent is not None else robobase_agent_state(),
        "cfg": cfg if cfg is not None else robobase_cfg(),
        "_pretrain_step": 0,
        "_main_loop_iterations": 600000,
        "_global_env_episode": 3000,
    }
    if best_eval_reward is not None:
        payload["best_eval_reward"] = best_eval_reward
    torch.save(payload, path)
    return path
