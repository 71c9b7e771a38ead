"""The spec: every convention that crosses the sim/real boundary, in one typed object.

A spec travels beside every policy as YAML. The observation pipeline, the state
builder, the controller and the sim twin all read their numbers from here, so a
mismatch between sim and real has exactly one place to live (and to be seen).
The numbers of the user's training task live in ``specs/so101_lift_cube.yaml``
inside this package; nothing else in the code holds them.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from so101_sim2real.errors import SpecError, did_you_mean
from so101_sim2real.records import parse_yaml

SPEC_VERSION = 1
SOURCE_SIZE = (480, 640)  # (H, W) of the wrist camera; the packaged spec says the same (tested)
DEFAULT_SPEC_NAME = "so101_lift_cube.yaml"

Interpolation = Literal["nearest", "area", "linear", "cubic"]
CHANNEL_KINDS = ("seg", "disparity", "depth", "r", "g", "b", "gray")


@dataclass(frozen=True)
class SegmentationSpec:
    """Class table of the seg channel: ids as the policy saw them in sim."""

    classes: list[str]
    real_classes: list[str]
    real_to_sim: list[int]  # index = real model id, value = sim id
    interpolation: Interpolation = "nearest"


@dataclass(frozen=True)
class DisparitySpec:
    """How depth becomes the disparity channel (near = 255, far = 0)."""

    rule: Literal["inverse_depth"] = "inverse_depth"
    epsilon_m: float = 1e-3
    normalise: Literal["per_frame_minmax"] = "per_frame_minmax"
    # "full_frame": min-max over the whole source image before cropping, which is how
    # the user's training observations were made; "crop": over the cropped region only
    # (what their first real pipeline did, a mismatch the policy never saw).
    normalise_region: Literal["crop", "full_frame"] = "full_frame"
    interpolation: Interpolation = "area"
    near: Literal["high"] = "high"


@dataclass(frozen=True)
class ObservationSpec:
    """Pixel observation: one frame is ``channels`` x ``image_size``, stacked in time."""

    source_size: tuple[int, int]  # (H, W) of the wrist camera image
    crop: Literal["center_square", "none"]
    image_size: tuple[int, int]  # (H, W) fed to the policy
    frame_stack: int
    stack_order: Literal["oldest_first"]
    channels: list[str]
    value_range: tuple[int, int]  # the encoder divides by 255 itself
    segmentation: SegmentationSpec
    disparity: DisparitySpec


@dataclass(frozen=True)
class StateField:
    """One block of the proprioceptive state vector."""

    name: str
    size: int
    unit: str
    source: str = ""


@dataclass(frozen=True)
class StateSpec:
    """Per-frame proprioceptive state, in the sim's units (not normalised)."""

    fields: list[StateField]
    tcp_site: str
    rpy_convention: Literal["extrinsic_xyz"]
    velocity_on_robot: Literal["finite_difference"] = "finite_difference"

    @property
    def size(self) -> int:
        return sum(f.size for f in self.fields)


@dataclass(frozen=True)
class Workspace:
    """Axis-aligned box (metres, robot base frame) the end-effector target stays in."""

    x: tuple[float, float]
    y: tuple[float, float]
    z: tuple[float, float]


@dataclass(frozen=True)
class GripperMapping:
    """Action in [-1, 1] -> gripper joint radians: (a + 1) / 2 * (high - low) + low."""

    low_rad: float
    high_rad: float

    def to_rad(self, action: float) -> float:
        a = min(max(float(action), -1.0), 1.0)
        return (a + 1.0) / 2.0 * (self.high_rad - self.low_rad) + self.low_rad


@dataclass(frozen=True)
class IKSpec:
    """Damped least-squares IK on ``site``, as the sim ran it."""

    site: str
    damping: float
    max_dq_rad: float
    gain: float
    # Where FK (the state's TCP) and the IK step read the arm's pose. "live_physics": the
    # simulator's state as its last physics step left it (what the training env did;
    # the twin only). "measured_joints": FK of the joint reading (all a real arm has).
    pose_from: Literal["live_physics", "measured_joints"] = "live_physics"


@dataclass(frozen=True)
class ActionSpec:
    """What the policy's action vector means and how it reaches the joints."""

    type: Literal["ee_delta_xyz_gripper"]
    dim: int
    xyz_scale_m: float
    frame: Literal["base"]
    target: Literal["accumulate"]
    workspace: Workspace
    gripper: GripperMapping
    ik: IKSpec
    wrist: Literal["free", "locked"]


@dataclass(frozen=True)
class ControlSpec:
    """Timing of one policy step as trained."""

    physics_timestep_s: float
    substeps: int
    action_repeat: int = 1

    @property
    def period_s(self) -> float:
        return self.physics_timestep_s * self.substeps * self.action_repeat


@dataclass(frozen=True)
class EpisodeSpec:
    max_steps: int
    task: str = "Pick up the cube and lift it."  # what a person would say the episode is for (datasets, cards)


@dataclass(frozen=True)
class SimulatorSpec:
    """The simulator the policy was trained in: contact outcomes depend on its version."""

    engine: Literal["mujoco"] = "mujoco"
    version: str | None = None  # e.g. "3.4.0"; None: not known


@dataclass(frozen=True)
class Spec:
    """The whole contract between a policy and the world it runs in."""

    spec_version: int
    name: str
    observation: ObservationSpec
    state: StateSpec
    action: ActionSpec
    control: ControlSpec
    episode: EpisodeSpec
    simulator: SimulatorSpec = SimulatorSpec()

    @property
    def channels_per_frame(self) -> int:
        return len(self.observation.channels)

    @property
    def is_seg_depth(self) -> bool:
        return "seg" in self.observation.channels

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def replace(self, path: str, value: Any, source: str = "<override>") -> Spec:
        """A copy with the dotted ``path`` set to ``value``, validated like a file."""
        data = self.to_dict()
        node = data
        keys = path.split(".")
        for depth, key in enumerate(keys):
            if not isinstance(node, dict) or key not in node:
                hint = did_you_mean(key, node if isinstance(node, dict) else [])
                raise SpecError(f"{source}: unknown spec field '{'.'.join(keys[:depth + 1])}'{hint}")
            if depth < len(keys) - 1:
                node = node[key]
        node[keys[-1]] = value
        return spec_from_dict(data, source)


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------
# typed construction with errors that name the file, the field and what was expected


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if origin is tuple:
            return f"a list of {len(args)} {_describe(args[0])}s"
        return f"a list of {_describe(args[0])}s"
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(tp))
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp, str(tp))


def _build(tp: Any, value: Any, where: str, source: str) -> Any:
    def fail() -> typing.NoReturn:
        raise SpecError(f"{source}: {where}: expected {_describe(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            fail()
        return value
    if origin is list:
        if not isinstance(value, list):
            fail()
        (item,) = typing.get_args(tp)
        return [_build(item, v, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            fail()
        return tuple(_build(a, v, f"{where}[{i}]", source) for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            if option is type(None) and value is None:
                return None
        return _build(next(a for a in typing.get_args(tp) if a is not type(None)), value, where, source)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):  # a spec section's class, never an instance
        if not isinstance(value, dict):
            fail()
        return _build_dataclass(tp, value, where, source)
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail()
        return value
    raise TypeError(f"spec type {tp!r} not supported")  # a bug in this module, not input


def _build_dataclass(cls: type, data: dict, where: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            hint = did_you_mean(key, names, f" (known: {', '.join(names)})")
            raise SpecError(f"{source}: {_join(where, key)}: unknown field{hint}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _build(hints[f.name], data[f.name], _join(where, f.name), source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SpecError(f"{source}: {_join(where, f.name)}: missing, expected {_describe(hints[f.name])}")
    return cls(**kwargs)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def _check(spec: Spec, source: str) -> None:
    """Cross-field rules a type alone cannot say."""

    def bad(where: str, expected: str, got: Any) -> typing.NoReturn:
        raise SpecError(f"{source}: {where}: expected {expected}, got {got!r}")

    obs = spec.observation
    if spec.spec_version != SPEC_VERSION:
        bad("spec_version", f"{SPEC_VERSION}", spec.spec_version)
    for name, size in (("source_size", obs.source_size), ("image_size", obs.image_size)):
        if min(size) <= 0:
            bad(f"observation.{name}", "positive (H, W)", list(size))
    if obs.frame_stack < 1:
        bad("observation.frame_stack", "an integer >= 1", obs.frame_stack)
    for i, ch in enumerate(obs.channels):
        if ch not in CHANNEL_KINDS:
            bad(f"observation.channels[{i}]", "one of " + ", ".join(CHANNEL_KINDS), ch)
    if not obs.channels:
        bad("observation.channels", "at least one channel", obs.channels)
    if tuple(obs.value_range) != (0, 255):
        bad("observation.value_range", "[0, 255] (the encoder divides by 255 itself)", list(obs.value_range))
    seg = obs.segmentation
    if len(seg.real_to_sim) != len(seg.real_classes):
        expected = f"{len(seg.real_classes)} entries (one per real class)"
        bad("observation.segmentation.real_to_sim", expected, seg.real_to_sim)
    for i, sim_id in enumerate(seg.real_to_sim):
        if not 0 <= sim_id < len(seg.classes):
            bad(f"observation.segmentation.real_to_sim[{i}]", f"a sim id in 0..{len(seg.classes) - 1}", sim_id)
    if not 0 < obs.disparity.epsilon_m <= 1:
        bad("observation.disparity.epsilon_m", "a positive number", obs.disparity.epsilon_m)
    for i, f in enumerate(spec.state.fields):
        if f.size < 1:
            bad(f"state.fields[{i}].size", "an integer >= 1", f.size)
    act = spec.action
    if act.dim < 1:
        bad("action.dim", "an integer >= 1", act.dim)
    for axis in ("x", "y", "z"):
        lo, hi = getattr(act.workspace, axis)
        if not lo < hi:
            bad(f"action.workspace.{axis}", "[low, high] with low < high", [lo, hi])
    if not act.gripper.low_rad < act.gripper.high_rad:
        bad("action.gripper", "low_rad < high_rad", [act.gripper.low_rad, act.gripper.high_rad])
    if not 0 < act.xyz_scale_m <= 0.1:
        bad("action.xyz_scale_m", "metres per unit action in (0, 0.1] (the policy trained with 0.02)", act.xyz_scale_m)
    ik = act.ik
    if not 0 <= ik.damping <= 10:
        bad("action.ik.damping", "a damping in [0, 10]", ik.damping)
    if not 0 < ik.max_dq_rad <= 3.2:
        bad("action.ik.max_dq_rad", "a step limit in (0, 3.2] rad", ik.max_dq_rad)
    if not 0 < ik.gain <= 1:
        bad("action.ik.gain", "a gain in (0, 1]", ik.gain)
    ctl = spec.control
    if not 0 < ctl.physics_timestep_s <= 0.05:
        bad("control.physics_timestep_s", "a timestep in (0, 0.05] s", ctl.physics_timestep_s)
    if ctl.substeps < 1 or ctl.action_repeat < 1:
        bad("control", "substeps >= 1 and action_repeat >= 1", spec.to_dict()["control"])
    if spec.episode.max_steps < 1:
        bad("episode.max_steps", "an integer >= 1", spec.episode.max_steps)
    if spec.state.tcp_site != act.ik.site:  # one site feeds both: the state's TCP is the IK's pose
        bad("state.tcp_site", f"the IK site '{act.ik.site}' (the state's TCP is read where the IK acts)",
            spec.state.tcp_site)
    version = spec.simulator.version
    if version is not None and not re.fullmatch(r"\d+\.\d+\.\d+", version):
        bad("simulator.version", "a MuJoCo version like \"3.4.0\" (quoted in YAML)", version)


def spec_from_dict(data: Any, source: str = "<spec>") -> Spec:
    """Build and validate a :class:`Spec`; ``source`` names the file in errors."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    spec = _build_dataclass(Spec, data, "", source)
    _check(spec, source)
    return spec


def load_spec(path: str | Path) -> Spec:
    """Read a spec YAML file; any problem is a one-line :class:`SpecError`."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec file ({exc.strerror})") from None
    return spec_from_text(text, str(path))


def spec_from_text(text: str, source: str) -> Spec:
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: {yaml_problem(exc)}") from None
    return spec_from_dict(data, source)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: what and where (PyYAML's own message spans several)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or "invalid YAML"
    return f"YAML error{where}: {problem}"


def default_spec_text() -> str:
    return resources.files("so101_sim2real.specs").joinpath(DEFAULT_SPEC_NAME).read_text()


def default_spec() -> Spec:
    """The user's training task (lift-cube, seg + disparity), as shipped."""
    return spec_from_text(default_spec_text(), f"<package>/specs/{DEFAULT_SPEC_NAME}")


def spec_to_yaml(spec: Spec) -> str:
    return yaml.safe_dump(spec.to_dict(), sort_keys=False, default_flow_style=None)


def save_spec(spec: Spec, path: str | Path) -> None:
    Path(path).write_text(spec_to_yaml(spec))


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted paths of every leaf (lists of scalars count as leaves)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = _join(prefix, key)
        if isinstance(value, dict):
            out.update(flatten(value, path))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for i, item in enumerate(value):
                out.update(flatten(item, f"{path}[{i}]"))
        else:
            out[path] = value
    return out


__all__ = [
    "ActionSpec",
    "ControlSpec",
    "DisparitySpec",
    "EpisodeSpec",
    "ObservationSpec",
    "SegmentationSpec",
    "SimulatorSpec",
    "Spec",
    "StateField",
    "StateSpec",
    "default_spec",
    "flatten",
    "load_spec",
    "save_spec",
    "spec_from_dict",
    "spec_to_yaml",
]
