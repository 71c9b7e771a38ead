"""What ``so101 inspect`` says about a checkpoint, as plain data and as text."""

from __future__ import annotations

import re
from typing import Any

from so101_sim2real.policy.architecture import Architecture, HeadArch
from so101_sim2real.policy.checkpoint import Checkpoint
from so101_sim2real.spec import flatten

MODULES = ("encoder", "actor", "critic", "critic_target")


def parameter_counts(ckpt: Checkpoint) -> dict[str, int]:
    counts = {m: 0 for m in MODULES}
    for key, tensor in ckpt.weights.items():
        counts[key.split(".")[0]] = counts.get(key.split(".")[0], 0) + tensor.numel()
    counts = {m: n for m, n in counts.items() if n}
    counts["total"] = sum(counts.values())
    return counts


def _head(head: HeadArch | None) -> dict[str, Any] | None:
    if head is None:
        return None
    return {
        "inputs": {name: n for name, n in head.inputs},
        "bottleneck": head.bottleneck,
        "bottleneck_layer_norm": head.layer_norm,
        "bottleneck_tanh": head.tanh,
        "hidden": list(head.hidden),
        "extra_input": head.extra_input,
        "out_features": head.out_features,
    }


def architecture_dict(arch: Architecture) -> dict[str, Any]:
    return {
        "image_size": list(arch.image_size),
        "frames": arch.frames,
        "channels_per_frame": arch.channels_per_frame,
        "in_channels": arch.in_channels,
        "convs": [{"in": c.in_channels, "out": c.out_channels, "kernel": c.kernel, "stride": c.stride}
                  for c in arch.convs],
        "conv_output": [arch.convs[-1].out_channels, *arch.conv_output_hw()],
        "feature_dim": arch.feature_dim,
        "state_per_frame": arch.state_dim_per_frame,
        "state_stacked": arch.state_dim,
        "action_dim": arch.action_dim,
        "actor": _head(arch.actor),
        "critic": _head(arch.critic),
        "num_critics": arch.num_critics,
        "critic_target": arch.has_critic_target,
    }


def describe(ckpt: Checkpoint) -> dict[str, Any]:
    """Everything inspect reports, JSON-ready."""
    from so101_sim2real.simulator import installed_mujoco, mujoco_warning

    spec = ckpt.spec.to_dict()
    version_warning = mujoco_warning(ckpt.spec)
    return {
        "path": str(ckpt.path),
        "format": ckpt.format,
        "architecture": architecture_dict(ckpt.arch),
        "parameters": parameter_counts(ckpt),
        "spec": spec,
        "spec_sources": {path: ckpt.provenance.get(path, "?") for path in flatten(spec)},
        "counters": ckpt.counters,
        "training": ckpt.training,
        "notes": ckpt.notes,
        "simulator": {"trained": ckpt.spec.simulator.version, "installed": installed_mujoco(),
                      "kinematics": ckpt.spec.action.ik.pose_from},
        "warnings": ckpt.warnings + ([version_warning] if version_warning else []),
    }


KINEMATICS = {
    "live_physics": "IK and state read the live physics (as trained; the twin does so, a real arm uses FK "
                    "of its measured joints)",
    "measured_joints": "IK and state from FK of the measured joints (twin and real arm alike)",
}

FORMAT_NAMES = {
    "robobase": "RoboBase DrQ-v2 snapshot (read without running pickled code)",
    "native": "so101 native (safetensors + spec.yaml)",
    "drqv2": "facebookresearch/drqv2 snapshot (loaded with @trust_pickle)",
}


def _fmt_head(name: str, head: dict[str, Any] | None) -> list[str]:
    if head is None:
        return [f"  {name:<14} none"]
    inputs = " + ".join(f"{k}[{n}]" for k, n in head["inputs"].items())
    bneck = "Linear" + ("-LayerNorm" if head["bottleneck_layer_norm"] else "")
    bneck += "-Tanh" if head["bottleneck_tanh"] else ""
    extra = f" + raw[{head['extra_input']}]" if head["extra_input"] else ""
    hidden = " -> ".join(str(h) for h in head["hidden"])
    return [f"  {name:<14} {inputs} -> {bneck}({head['bottleneck']}) each{extra} -> MLP {hidden} -> "
            f"{head['out_features']}"]


def render_text(report: dict[str, Any]) -> str:
    """Human-readable inspect output."""
    a = report["architecture"]
    lines = [f"{report['path']}", f"  format         {FORMAT_NAMES[report['format']]}", "", "architecture"]
    convs = ", ".join(f"{c['in']}->{c['out']} k{c['kernel']} s{c['stride']}" for c in a["convs"])
    lines += [
        f"  input          {a['frames']} frames x {a['channels_per_frame']} channels x "
        f"{a['image_size'][0]}x{a['image_size'][1]} = {a['in_channels']} channels, oldest frame first",
        f"  encoder        {convs} -> {'x'.join(map(str, a['conv_output']))} = {a['feature_dim']} features",
        f"  state          {a['state_per_frame']} per frame x {a['frames']} = {a['state_stacked']}"
        if a["state_stacked"] else "  state          none (the policy takes no proprioceptive state)",
        f"  action         {a['action_dim']}",
    ]
    lines += _fmt_head("actor", a["actor"])
    critic = _fmt_head("critic", a["critic"])
    if a["critic"]:
        critic[0] += f" (x{a['num_critics']}{', with targets' if a['critic_target'] else ''})"
    lines += critic
    lines += ["", "parameters"]
    lines += [f"  {name:<14} {n:,}" for name, n in report["parameters"].items()]
    lines += ["", "spec (value <- where it came from)"]
    sources = report["spec_sources"]
    rows = []
    for path, value in flatten(report["spec"]).items():
        if m := re.match(r"(state\.fields\[\d+\])\.(\w+)$", path):  # one row per state field
            if m.group(2) != "name":
                continue
            f = report["spec"]["state"]["fields"][int(path.split("[")[1].split("]")[0])]
            value, path = f"{f['name']}: {f['size']} {f['unit']} ({f['source']})", m.group(1)
            source = sources.get(f"{path}.size", "?")
        else:
            source = sources.get(path, "?")
        rows.append((path, str(value), source))
    width = max(len(r[0]) for r in rows)
    lines += [f"  {p:<{width}}  {v:<28} <- {s}" for p, v, s in rows]
    if report["counters"]:
        lines += ["", "training counters"]
        lines += [f"  {k:<22} {v}" for k, v in report["counters"].items()]
    if report["training"]:
        lines += ["", "training config"]
        lines += [f"  {k:<22} {v}" for k, v in report["training"].items()]
    sim = report["simulator"]
    trained = sim["trained"] or "not recorded"
    lines += ["", "simulator", f"  MuJoCo         trained under {trained}, installed {sim['installed']}",
              f"  kinematics     {KINEMATICS[sim['kinematics']]}"]
    if report["notes"]:
        lines += ["", "notes"] + [f"  - {n}" for n in report["notes"]]
    lines += ["", "warnings" if report["warnings"] else "warnings: none"]
    lines += [f"  ! {w}" for w in report["warnings"]]
    return "\n".join(lines)
