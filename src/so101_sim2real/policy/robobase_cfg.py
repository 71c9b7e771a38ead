"""What a RoboBase training config says about the policy's conventions.

The config arrives as plain data (see ``safe_pickle.to_plain``). Only keys RoboBase
and the user's pick-101 task are known to use are read; each value that lands in the
spec is returned with the config key it came from, so ``so101 inspect`` can say so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from so101_sim2real.errors import CheckpointError

_REF = re.compile(r"^\$\{([\w.]+)\}$")

# cfg key -> training fact shown by inspect (and used by fine-tuning later)
_TRAINING_KEYS = {
    "batch_size": "batch_size",
    "replay.size": "replay_size",
    "replay.nstep": "nstep",
    "replay.gamma": "gamma",
    "update_every_steps": "update_every_steps",
    "num_train_frames": "num_train_frames",
    "action_repeat": "action_repeat",
    "method.actor_lr": "actor_lr",
    "method.critic_lr": "critic_lr",
    "method.encoder_lr": "encoder_lr",
    "method.weight_decay": "weight_decay",
    "method.critic_target_tau": "critic_target_tau",
    "method.num_critics": "num_critics",
    "method.stddev_schedule": "stddev_schedule",
    "method.stddev_clip": "stddev_clip",
    "method.use_augmentation": "use_augmentation",
}


@dataclass
class CfgFacts:
    """Facts read from a training config; empty when there is none."""

    cfg: dict[str, Any] | None
    spec_values: dict[str, tuple[Any, str]] = field(default_factory=dict)  # spec path -> (value, source)
    downsample_convs: int = 1
    bottleneck_tanh: bool = True
    seg_depth: bool | None = None
    training: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def lookup(cfg: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """``cfg["a"]["b"]`` for ``"a.b"``, following whole-value ``${x.y}`` references."""
    node: Any = cfg
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    seen = 0
    while isinstance(node, str) and (m := _REF.match(node)) and seen < 8:
        node = lookup(cfg, m.group(1), default)
        seen += 1
    return node


def _obs_kind(cfg: dict[str, Any]) -> bool | None:
    """True for seg+depth, False for RGB, None when the config does not say."""
    env = cfg.get("env")
    if not isinstance(env, dict):
        return None
    words = " ".join(str(v).lower() for k, v in env.items() if isinstance(v, (str, bool)) and
                     any(t in k.lower() for t in ("obs", "name", "image", "mode", "type", "task")))
    if "seg" in words and "depth" in words:
        return True
    if "rgb" in words:
        return False
    return None


def read_cfg(cfg: Any) -> CfgFacts:
    """Read a RoboBase config (plain data) into :class:`CfgFacts`."""
    if not isinstance(cfg, dict):
        return CfgFacts(cfg=None)
    facts = CfgFacts(cfg=cfg)
    if lookup(cfg, "frame_stack_on_channel", True) is False:
        raise CheckpointError("cfg: frame_stack_on_channel is false (frames through a GRU); only channel stacking "
                              "is supported")
    if (seq := lookup(cfg, "action_sequence", 1)) not in (1, None):
        raise CheckpointError(f"cfg: action_sequence is {seq}; only single-step actions are supported")
    if isinstance(fs := lookup(cfg, "frame_stack"), int):
        facts.spec_values["observation.frame_stack"] = (fs, "cfg: frame_stack")
    shape = lookup(cfg, "visual_observation_shape")
    if isinstance(shape, list) and len(shape) == 2:
        facts.spec_values["observation.image_size"] = (shape, "cfg: visual_observation_shape")
    for key in ("env.episode_length", "env.max_episode_steps"):
        if isinstance(steps := lookup(cfg, key), int):
            facts.spec_values["episode.max_steps"] = (steps, f"cfg: {key}")
            break
    if isinstance(lock := lookup(cfg, "env.lock_wrist"), bool):
        facts.spec_values["action.wrist"] = ("locked" if lock else "free", "cfg: env.lock_wrist")
    facts.downsample_convs = int(lookup(cfg, "method.encoder_model.num_downsample_convs", 1))
    facts.bottleneck_tanh = bool(lookup(cfg, "method.actor_model.tanh_after_bottleneck", True))
    facts.seg_depth = _obs_kind(cfg)
    facts.training = {name: v for key, name in _TRAINING_KEYS.items() if (v := lookup(cfg, key)) is not None}
    repeat = lookup(cfg, "action_repeat", 1)
    if isinstance(repeat, int) and repeat > 1:
        facts.notes.append(f"cfg action_repeat={repeat}: in the pick-101 env this was bookkeeping only (actions were "
                           f"not repeated), so snapshot numbers count frames = {repeat} x transitions")
    return facts
