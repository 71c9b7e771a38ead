"""Checkpoint formats: RoboBase snapshots, the native format, facebookresearch/drqv2.

Every reader ends in the same :class:`Checkpoint` record: weights in the native key
layout (``networks.py``), the :class:`Hints` the weights cannot state, the spec with
where each value came from, the training counters and config, and what a user should
know about the file (notes and warnings).

- RoboBase snapshot: ``torch.save({"agent": state_dict, "cfg": DictConfig, ...})``.
  Read through the allow-listed unpickler; the config becomes plain data.
- Native (``so101 convert``): a folder with ``weights.safetensors`` and
  ``spec.yaml``. No pickle at all.
- facebookresearch/drqv2: ``{"agent": <pickled agent object>, ...}``. Loading it runs
  code from the file, so it needs ``trust_pickle=True``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from so101_sim2real.errors import CheckpointError, SpecError, UnsafePickleError
from so101_sim2real.files import share_like_the_user, write_folder
from so101_sim2real.policy.architecture import STATE, VIEW, Architecture, Hints, derive_architecture
from so101_sim2real.policy.robobase_cfg import CfgFacts, read_cfg
from so101_sim2real.safe_pickle import to_plain, torch_load
from so101_sim2real.spec import Spec, StateField, default_spec, flatten, load_spec, spec_to_yaml

Format = Literal["robobase", "native", "drqv2"]
NATIVE_WEIGHTS = "weights.safetensors"
NATIVE_SPEC = "spec.yaml"
NATIVE_FORMAT_TAG = "so101-drqv2"
COUNTER_KEYS = ("_pretrain_step", "_main_loop_iterations", "_global_env_episode", "_global_step", "_global_episode")
# Modules whose presence in a pickle means it wants to run system code, not a model.
_SYSTEM_MODULES = {"os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "builtins", "importlib",
                   "runpy", "pty", "code", "ctypes", "webbrowser", "pickle", "marshal", "io", "pathlib"}
# Per-frame state sizes with a known meaning beyond the spec's own.
LEAKED_CUBE_STATE = 21


@dataclass
class Checkpoint:
    """A policy checkpoint in the native layout, plus what is known about it."""

    path: Path
    format: Format
    weights: dict[str, torch.Tensor]
    hints: Hints
    arch: Architecture
    spec: Spec
    provenance: dict[str, str]
    counters: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- reading


def load_checkpoint(path: str | Path, trust_pickle: bool = False, spec_path: str | Path | None = None) -> Checkpoint:
    """Read any supported checkpoint; every failure is a one-line :class:`CheckpointError`.

    ``spec_path`` replaces the packaged default spec as the base the checkpoint's own
    config and weights are applied to (a native checkpoint carries its own spec).
    """
    if not str(path).strip():
        raise CheckpointError("no checkpoint given (an empty path): give a .pt snapshot or a converted folder")
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir() or path.suffix == ".safetensors":
        return _load_native(path)
    base = load_spec(spec_path) if spec_path else default_spec()
    base_source = f"spec file {spec_path}" if spec_path else "default"
    try:
        raw = torch_load(path, trust=trust_pickle)
    except UnsafePickleError as exc:
        raise _explain_refusal(path, exc) from None
    if isinstance(raw, dict) and any(str(k).startswith("encoder.convs_per_cam.") for k in raw):
        raw = {"agent": raw}  # a bare agent state_dict, saved without the snapshot around it
    if not isinstance(raw, dict) or "agent" not in raw:
        found = f"{len(raw)} keys such as {sorted(map(str, raw))[:3]}" if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(
            f"{path}: no 'agent' entry (found {found}); expected a RoboBase or drqv2 snapshot, "
            f"or a folder written by 'so101 convert'"
        )
    agent = raw["agent"]
    if isinstance(agent, Mapping):
        return _from_robobase(path, raw, base, base_source)
    if not trust_pickle:  # an allow-listed container that is not a state_dict (a list, say)
        raise CheckpointError(f"{path}: the agent is a pickled object; pass @trust_pickle if you trust the file")
    return _from_drqv2(path, raw, base, base_source)


def _explain_refusal(path: Path, exc: UnsafePickleError) -> CheckpointError:
    match = re.search(r"'([\w.]+)\.(\w+)'", str(exc))
    module = match.group(1) if match else "?"
    target = f"{module}.{match.group(2)}" if match else "?"
    if module.split(".")[0] in _SYSTEM_MODULES:
        return CheckpointError(
            f"{path}: refused: the pickle tries to call '{target}', which a checkpoint never needs; "
            f"nothing was run. Do not load this file."
        )
    return CheckpointError(
        f"{path}: holds a pickled Python object ('{target}'), as facebookresearch/drqv2 snapshots do; "
        f"loading it runs code from the file, so nothing was run. If you trust the file, pass @trust_pickle."
    )


# ---------------------------------------------------------------------- key mapping


def _layers(src: Mapping[str, torch.Tensor], prefix: str, used: set[str]) -> list[dict[str, torch.Tensor]]:
    """Parameter groups of an ``nn.Sequential`` under ``prefix``, in layer order."""
    groups: dict[int, dict[str, torch.Tensor]] = {}
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.(\w+)$")
    for key, tensor in src.items():
        if m := pattern.match(key):
            groups.setdefault(int(m.group(1)), {})[m.group(2)] = tensor
            used.add(key)
    return [groups[i] for i in sorted(groups)]


def _linear_layers(src: Mapping[str, torch.Tensor], prefix: str, used: set[str]) -> list[dict[str, torch.Tensor]]:
    layers = _layers(src, prefix, used)
    for i, layer in enumerate(layers):
        if "weight" not in layer or layer["weight"].ndim != 2:
            raise CheckpointError(
                f"weights: layer {i} under '{prefix}' is not a Linear layer (a normalisation inside the MLP?); "
                f"DrQ-v2 has none there"
            )
    return layers


def _put_layers(dst: dict[str, torch.Tensor], prefix: str, layers: list[dict[str, torch.Tensor]]) -> None:
    """Write layers as ``prefix.{0,2,4,...}`` (each followed by a parameter-free ReLU)."""
    for k, layer in enumerate(layers):
        for name, tensor in layer.items():
            dst[f"{prefix}{2 * k}.{name}"] = tensor


def _robobase_head(src: Mapping[str, torch.Tensor], src_prefix: str, dst: dict, dst_prefix: str,
                   used: set[str]) -> list[str]:
    """Map one RoboBase ``MLPWithBottleneckFeatures``; returns its input names in order."""
    order: list[str] = []
    pattern = re.compile(re.escape(src_prefix) + r"input_preprocess_modules\.(\w+)\.(\d+)\.(\w+)$")
    for key, tensor in src.items():  # state_dict order is the order the inputs are concatenated
        if m := pattern.match(key):
            name, idx, param = m.groups()
            if name not in order:
                order.append(name)
            dst[f"{dst_prefix}inputs.{name}.{idx}.{param}"] = tensor
            used.add(key)
    _put_layers(dst, f"{dst_prefix}trunk.", _linear_layers(src, src_prefix + "main_mlp.", used))
    out = _linear_layers(src, src_prefix + "out_mlp.", used)
    if len(out) != 1:
        raise CheckpointError(f"weights: expected one output layer under '{src_prefix}out_mlp.', found {len(out)}")
    for name, tensor in out[0].items():
        dst[f"{dst_prefix}out.{name}"] = tensor
    if f"{src_prefix}time_dim_rnn.weight_ih_l0" in src:
        raise CheckpointError(f"weights: '{src_prefix}time_dim_rnn' (frame stack through a GRU) is not supported; "
                              f"train with frame_stack_on_channel: true")
    return order


def robobase_to_native(agent: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], tuple[str, ...], list[str]]:
    """RoboBase agent state_dict -> (native weights, actor input order, notes)."""
    agent = {k: v for k, v in agent.items() if isinstance(v, torch.Tensor)}
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    convs = _layers(agent, "encoder.convs_per_cam.0.", used)
    if not convs:
        raise CheckpointError("weights: no 'encoder.convs_per_cam.0.*' convolutions: not a RoboBase DrQ-v2 agent")
    if any(k.startswith("encoder.convs_per_cam.1.") for k in agent):
        raise CheckpointError("weights: more than one camera encoder; this runtime drives the wrist camera only")
    _put_layers(out, "encoder.convs.", convs)
    actor_src = "actor.actor_model." if any(k.startswith("actor.actor_model.") for k in agent) else "actor_model."
    order = _robobase_head(agent, actor_src, out, "actor.head.", used)
    for name in ("critic", "critic_target"):
        q_ids = sorted({int(m.group(1)) for k in agent if (m := re.match(rf"{name}\.qs\.(\d+)\.", k))})
        for q in q_ids:
            _robobase_head(agent, f"{name}.qs.{q}.", out, f"{name}.qs.{q}.", used)
    hidden = sorted(k for k in agent if k.endswith("hidden_state"))
    used.update(hidden)
    if hidden:
        notes.append(f"ignored {len(hidden)} 'hidden_state' buffers (RNN state, not weights)")
    if actor_src == "actor.actor_model.":
        dup = [k for k in agent if k.startswith("actor_model.")]
        differ = [k for k in dup if not torch.equal(agent[k], agent.get("actor." + k, torch.empty(0)))]
        used.update(dup)
        if dup:
            notes.append(f"'actor_model.*' ({len(dup)} tensors) duplicates 'actor.actor_model.*'; "
                         f"the actor's copy is used")
        if differ:
            raise CheckpointError(f"weights: '{differ[0]}' differs from 'actor.{differ[0]}'; the two copies of the "
                                  f"actor must be identical in a RoboBase snapshot")
    unknown = [k for k in agent if k not in used]
    if unknown:
        raise CheckpointError(f"weights: unexpected '{unknown[0]}' ({len(unknown)} unknown keys): "
                              f"not a RoboBase DrQ-v2 layout this runtime knows")
    return out, tuple(order), notes


def _module_state(obj: Any, name: str) -> dict[str, torch.Tensor]:
    module = getattr(obj, name, None)
    if not isinstance(module, nn.Module):
        return {}
    return dict(module.state_dict())


def drqv2_to_native(agent: Any) -> dict[str, torch.Tensor]:
    """facebookresearch/drqv2 agent object -> native weights.

    That agent has one trunk per network (Linear-LayerNorm-Tanh on the conv
    features) and no state input; a shared critic trunk is copied into each Q head,
    which gives the same Q values.
    """
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    enc = _module_state(agent, "encoder")
    if not enc:
        raise CheckpointError("the pickled agent has no 'encoder' module: not a facebookresearch/drqv2 agent")
    _put_layers(out, "encoder.convs.", _layers(enc, "convnet.", used))
    actor = _module_state(agent, "actor")
    policy = _linear_layers(actor, "policy.", used)
    for name, t in actor.items():
        if name.startswith("trunk."):
            out[f"actor.head.inputs.{VIEW}.{name[len('trunk.'):]}"] = t
    _put_layers(out, "actor.head.trunk.", policy[:-1])
    for name, t in policy[-1].items():
        out[f"actor.head.out.{name}"] = t
    for critic_name in ("critic", "critic_target"):
        critic = _module_state(agent, critic_name)
        for q, q_name in enumerate(("Q1", "Q2")):
            layers = _linear_layers(critic, f"{q_name}.", used)
            if not layers:
                continue
            prefix = f"{critic_name}.qs.{q}."
            for name, t in critic.items():
                if name.startswith("trunk."):
                    out[f"{prefix}inputs.{VIEW}.{name[len('trunk.'):]}"] = t.clone()
            _put_layers(out, prefix + "trunk.", layers[:-1])
            for name, t in layers[-1].items():
                out[f"{prefix}out.{name}"] = t
    return out


# ----------------------------------------------------------------- spec and hints


@dataclass
class _SpecBuilder:
    """Collects overrides to a base spec with the source of each value."""

    spec: Spec
    provenance: dict[str, str]

    @classmethod
    def start(cls, base: Spec, source: str) -> _SpecBuilder:
        return cls(base, {path: source for path in flatten(base.to_dict())})

    def set(self, path: str, value: Any, source: str) -> None:
        try:
            self.spec = self.spec.replace(path, value, source)
        except SpecError as exc:
            raise CheckpointError(str(exc)) from None
        old = self.provenance
        self.provenance = {
            p: source if p == path or p.startswith((path + ".", path + "[")) else old.get(p, source)
            for p in flatten(self.spec.to_dict())
        }


def _channels_for(count: int) -> list[str] | None:
    return {1: ["gray"], 2: ["seg", "disparity"], 3: ["r", "g", "b"]}.get(count)


def _complete(path: Path, fmt: Format, weights: dict[str, torch.Tensor], builder: _SpecBuilder,
              hints: Hints, facts: CfgFacts | None, notes: list[str], counters: dict[str, Any],
              claims_seg_depth: bool = False) -> Checkpoint:
    """Derive the architecture, fill the spec from the weights, collect warnings.

    ``claims_seg_depth``: a user's spec file says seg+depth (the packaged default is
    only a starting point, so it claims nothing).
    """
    arch = derive_architecture(weights, hints)
    warnings: list[str] = []
    spec = builder.spec
    conv_key = f"weights: encoder.convs.0.weight {list(weights['encoder.convs.0.weight'].shape)}"
    per_frame = arch.channels_per_frame
    if per_frame != spec.channels_per_frame:
        channels = _channels_for(per_frame)
        if channels is None:
            raise CheckpointError(f"{path}: {arch.in_channels} input channels / {arch.frames} frames = {per_frame} "
                                  f"channels per frame, which no known observation has; pass @spec with its layout")
        builder.set("observation.channels", channels, conv_key)
    if (claims_seg_depth or (facts is not None and facts.seg_depth)) and per_frame != 2:
        warnings.append(f"the config says seg+depth, but the encoder takes {per_frame} channels per frame "
                        f"({arch.in_channels} / {arch.frames} frames): a seg+depth policy has 2 (seg, disparity)")
    if arch.action_dim != spec.action.dim:
        builder.set("action.dim", arch.action_dim, f"weights: actor.head.out.weight {[arch.action_dim, '*']}")
    if arch.state_dim_per_frame != spec.state.size:
        n = arch.state_dim_per_frame
        fields = list(builder.spec.to_dict()["state"]["fields"])
        if n == LEAKED_CUBE_STATE and spec.state.size == 18:
            fields.append(asdict(StateField("cube_pos", 3, "m", "privileged cube position (not on a real robot)")))
            warnings.append(f"state is {n} per frame ({arch.state_dim} stacked): 18 + 3, the privileged cube position "
                            f"leaked into the state; a real robot cannot provide it")
        elif n == 0:
            fields = []
        else:
            fields = [{"name": "unknown", "size": n, "unit": "?", "source": "read off the weights"}]
            warnings.append(f"state is {n} per frame, the spec describes {spec.state.size}: "
                            f"pass @spec with its layout")
        builder.set("state.fields", fields, f"weights: actor.head.inputs.{STATE}.0.weight [*, {arch.state_dim}]")
    final = builder.spec
    if final.is_seg_depth and final.observation.disparity.normalise_region == "crop":
        warnings.append("the spec normalises disparity over the crop, but the pick-101 training observations were "
                        "normalised over the full 640x480 frame (specs from 'so101 convert' before the twin-fidelity "
                        "work said crop): if this policy was trained there, set observation.disparity."
                        "normalise_region: full_frame in its spec.yaml")
    if "best_eval_reward" in counters:
        warnings.append("best_snapshot: chosen by mean eval reward, not success rate; evaluate the candidates' success "
                        "rate before trusting it")
    return Checkpoint(path=path, format=fmt, weights=weights, hints=hints, arch=arch, spec=builder.spec,
                      provenance=builder.provenance, counters=counters,
                      training=facts.training if facts else {}, notes=notes + (facts.notes if facts else []),
                      warnings=warnings)


def _counters(raw: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: to_plain(raw[k]) for k in COUNTER_KEYS if k in raw}
    if "best_eval_reward" in raw:
        out["best_eval_reward"] = to_plain(raw["best_eval_reward"])
    return out


def _from_robobase(path: Path, raw: dict, base: Spec, base_source: str) -> Checkpoint:
    weights, order, notes = robobase_to_native(raw["agent"])
    builder = _SpecBuilder.start(base, base_source)
    facts = read_cfg(to_plain(raw.get("cfg")))
    for spec_path, (value, source) in facts.spec_values.items():
        builder.set(spec_path, value, source)
    if facts.cfg is None:
        notes.append("no training config in the snapshot: frame stack and image size come from the spec")
    obs = builder.spec.observation
    hints = Hints(frames=obs.frame_stack, image_size=obs.image_size, downsample_convs=facts.downsample_convs,
                  bottleneck_tanh=facts.bottleneck_tanh, input_order=order)
    return _complete(path, "robobase", weights, builder, hints, facts, notes, _counters(raw),
                     claims_seg_depth=base_source != "default" and base.is_seg_depth)


def _from_drqv2(path: Path, raw: dict, base: Spec, base_source: str) -> Checkpoint:
    weights = drqv2_to_native(raw["agent"])
    builder = _SpecBuilder.start(base, base_source)
    obs = builder.spec.observation
    hints = Hints(frames=obs.frame_stack, image_size=obs.image_size, input_order=(VIEW,))
    notes = ["facebookresearch/drqv2 snapshot loaded with @trust_pickle; its critic trunk was copied into each Q head",
             "frame stack and image size come from the spec (the snapshot has no config)"]
    return _complete(path, "drqv2", weights, builder, hints, None, notes, _counters(raw),
                     claims_seg_depth=base_source != "default" and base.is_seg_depth)


# --------------------------------------------------------------------- native format


def _load_native(path: Path) -> Checkpoint:
    folder = path if path.is_dir() else path.parent
    weights_path = path if path.suffix == ".safetensors" else folder / NATIVE_WEIGHTS
    spec_path = folder / NATIVE_SPEC
    for needed in (weights_path, spec_path):
        if not needed.exists():
            raise CheckpointError(f"{folder}: missing {needed.name}; a native checkpoint is a folder written by "
                                  f"'so101 convert' with {NATIVE_WEIGHTS} and {NATIVE_SPEC}")
    try:
        weights = load_file(str(weights_path))
        with safe_open(str(weights_path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file (truncated?): {exc}") from None
    if meta.get("format") != NATIVE_FORMAT_TAG:
        raise CheckpointError(f"{weights_path}: not written by 'so101 convert' (format tag {meta.get('format')!r})")
    spec = load_spec(spec_path)
    info = json.loads(meta.get("so101", "{}"))
    hints = Hints(frames=spec.observation.frame_stack, image_size=spec.observation.image_size,
                  downsample_convs=int(info.get("downsample_convs", 1)),
                  bottleneck_tanh=bool(info.get("bottleneck_tanh", True)),
                  input_order=tuple(info.get("input_order", (VIEW, STATE))))
    provenance = info.get("provenance") or {p: "spec.yaml" for p in flatten(spec.to_dict())}
    builder = _SpecBuilder(spec, provenance)
    ckpt = _complete(path, "native", weights, builder, hints, None, [], info.get("counters", {}))
    ckpt.training = info.get("training", {})
    origin = f"converted from {info.get('source_format', '?')} '{info.get('source', '?')}'"
    ckpt.notes = [origin] + info.get("notes", [])
    ckpt.warnings += [w for w in info.get("warnings", []) if w not in ckpt.warnings]
    return ckpt


def save_native(ckpt: Checkpoint, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write ``ckpt`` as ``out_dir/{weights.safetensors, spec.yaml}``; never half-written."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise CheckpointError(f"{out_dir}: already exists; choose another @out or pass @force")
    info = {
        "source": str(ckpt.path), "source_format": ckpt.format, "counters": ckpt.counters,
        "training": ckpt.training, "input_order": list(ckpt.hints.input_order),
        "downsample_convs": ckpt.hints.downsample_convs, "bottleneck_tanh": ckpt.hints.bottleneck_tanh,
        "provenance": ckpt.provenance, "warnings": ckpt.warnings, "notes": ckpt.notes,
    }
    meta = {"format": NATIVE_FORMAT_TAG, "so101": json.dumps(info, default=str)}

    def write(folder: Path) -> None:
        tensors = {k: v.detach().contiguous().clone() for k, v in ckpt.weights.items()}
        save_file(tensors, str(folder / NATIVE_WEIGHTS), metadata=meta)
        share_like_the_user(folder / NATIVE_WEIGHTS)  # others on the robot's PC may read a policy
        (folder / NATIVE_SPEC).write_text(spec_to_yaml(ckpt.spec))

    return write_folder(out_dir, write, overwrite=True)
