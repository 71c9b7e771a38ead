"""The stand-in world: the twin made to differ from training the way the real SO-101 does.

The twin is the user's training simulator and stays exactly that (the golden traces hold).
The stand-in is a separate world built on it, for proving things "on the real arm" when
there is none: a set of named **gaps**, each with an amount. Four kinds:

- the picture (rendered): light, materials, a distractor on the table, and what the
  camera does to light: exposure, gain, white balance, sensor noise, motion blur, JPEG,
  lens distortion;
- the camera: its mount off the CAD pose, its focal length and principal point off the
  spec's;
- the arm: joint zero offsets, backlash, the servo position loop's compliance (a sag that
  grows with load), a maximum speed, latency from the camera's exposure to the command,
  the gripper's stiffness;
- the cube: size, mass, friction; and the loop's period.

Default amounts come from the anchors: ManiSkill's lerobot-sim2real (camera +-2.5 cm,
fov +-2 deg, cube 2.2-2.8 cm, friction 0.1-0.5), Squint's SO-101 wrist camera (+-2 mm,
+-1 deg, fov 71 +-1 deg, ambient 0.2-0.5, gripper stiffness 500-2000 and damping 50-200,
cube 2.2-2.8 cm, friction 0.1-0.5) and the user's own table of gaps (docs/standin.md).
A world is a YAML file (``configs/standin.yaml``: every field documented); a gap named
with no amounts takes its defaults, and :meth:`StandIn.alone` is one gap by itself.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from so101_sim2real.errors import So101Error, did_you_mean
from so101_sim2real.records import read_yaml

# ---------------------------------------------------------------------------- the gaps


@dataclass(frozen=True)
class Lighting:
    """One key light instead of the twin's overhead light and bright headlight."""

    azimuth_deg: float = 35.0  # where the light comes from, around the vertical (0: from +x, the arm's front)
    elevation_deg: float = 50.0  # above the table
    intensity: float = 0.45  # diffuse, 0-1 (the twin: 0.6 headlight + its overhead light)
    colour: tuple[float, float, float] = (1.0, 0.9, 0.78)  # a warm room light
    ambient: float = 0.25  # Squint's range 0.2-0.5 (the twin: 0.3)


@dataclass(frozen=True)
class Materials:
    """A wooden table instead of the checker floor; the cube a duller red."""

    table_rgb: tuple[float, float, float] = (0.52, 0.40, 0.30)
    table_grain: float = 0.06  # contrast of the table's second tone (0: one flat colour)
    cube_rgb: tuple[float, float, float] = (0.78, 0.14, 0.11)
    cube_specular: float = 0.4


@dataclass(frozen=True)
class Distractor:
    """Another object on the table, where the policy never saw one."""

    xy_m: tuple[float, float] = (0.30, 0.13)
    size_m: float = 0.035  # edge of a box
    rgb: tuple[float, float, float] = (0.15, 0.30, 0.80)


@dataclass(frozen=True)
class Exposure:
    """The camera's automatic exposure, gain and white balance, off the render's."""

    scale: float = 1.2  # exposure time against the render's
    gain: float = 1.1  # analogue gain: brightens signal and noise alike
    white_balance: tuple[float, float, float] = (1.08, 1.0, 0.88)  # R, G, B multipliers


@dataclass(frozen=True)
class SensorNoise:
    """Read and shot noise of a small sensor."""

    std: float = 3.0  # Gaussian, in 8-bit levels at gain 1


@dataclass(frozen=True)
class MotionBlur:
    """The scene moves during the exposure when the wrist turns."""

    exposure_ms: float = 12.0


@dataclass(frozen=True)
class Jpeg:
    """A USB camera's MJPEG compression."""

    quality: int = 70


@dataclass(frozen=True)
class LensDistortion:
    """The lens, as ``so101 calibrate camera`` fits it (OpenCV's pinhole model)."""

    coefficients: tuple[float, float, float, float, float] = (-0.06, 0.02, 0.0, 0.0, 0.0)  # k1, k2, p1, p2, k3


@dataclass(frozen=True)
class CameraMount:
    """The wrist camera's mount, off its CAD pose."""

    shift_mm: tuple[float, float, float] = (2.0, -1.5, 1.5)  # Squint: +-2 mm
    tilt_deg: tuple[float, float, float] = (1.0, -1.0, 0.5)  # Squint: +-1 deg


@dataclass(frozen=True)
class Intrinsics:
    """Focal length and principal point off the spec's (a real lens and sensor)."""

    focal_scale: float = 1.02  # fov 71 +-1 deg is about +-1.5% of the focal length
    principal_offset_px: tuple[float, float] = (6.0, -4.0)  # at 640x480


@dataclass(frozen=True)
class JointOffsets:
    """Calibration error: each joint's zero where the calibration thinks it is not."""

    deg: tuple[float, float, float, float, float, float] = (1.5, -1.0, 2.0, -1.5, 1.0, 0.0)


@dataclass(frozen=True)
class Backlash:
    """Play in each servo's gears: a reversal moves the horn this much later."""

    deg: tuple[float, float, float, float, float, float] = (0.5, 0.7, 0.7, 0.9, 0.9, 1.0)


@dataclass(frozen=True)
class Compliance:
    """The STS3215 position loop (P 16) is softer than the twin's actuators: it sags under
    gravity, more the more it carries."""

    stiffness_scale: float = 0.15  # the arm actuators' kp (and kv) against the twin's: 0.2 deg sag at the shoulder


@dataclass(frozen=True)
class MaxSpeed:
    """The servos' top speed under load (no-load: ~0.22 s per 60 deg at 7.4 V)."""

    deg_s: float = 180.0


@dataclass(frozen=True)
class Latency:
    """From the camera's exposure to the command reaching the servos (the user's table: ~100 ms)."""

    ms: float = 100.0


@dataclass(frozen=True)
class Gripper:
    """The gripper's stiffness and damping (Squint: 500-2000 and 50-200 across its range)."""

    stiffness_scale: float = 0.6
    damping_scale: float = 1.5


@dataclass(frozen=True)
class Cube:
    """The user's printed cube, not the simulator's 3 cm one."""

    size_m: float = 0.025  # anchors: 2.2-2.8 cm (the twin: 3.0)
    mass_kg: float = 0.025
    friction: float = 0.3  # anchors: 0.1-0.5 (the twin: 0.5)


@dataclass(frozen=True)
class Period:
    """The control period the real loop sustains (camera and two networks on a CPU)."""

    ms: float = 100.0


GAPS: dict[str, type] = {
    "lighting": Lighting, "materials": Materials, "distractor": Distractor, "exposure": Exposure,
    "sensor_noise": SensorNoise, "motion_blur": MotionBlur, "jpeg": Jpeg, "lens_distortion": LensDistortion,
    "camera_mount": CameraMount, "intrinsics": Intrinsics,
    "joint_offsets": JointOffsets, "backlash": Backlash, "compliance": Compliance, "max_speed": MaxSpeed,
    "latency": Latency, "gripper": Gripper,
    "cube": Cube, "period": Period,
}
KINDS = {"picture": ("lighting", "materials", "distractor", "exposure", "sensor_noise", "motion_blur", "jpeg",
                     "lens_distortion"),
         "camera": ("camera_mount", "intrinsics"),
         "arm": ("joint_offsets", "backlash", "compliance", "max_speed", "latency", "gripper"),
         "cube and loop": ("cube", "period")}

# ---------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class StandIn:
    """A stand-in world: the gaps it has (name -> amounts) and the seed of its noise."""

    gaps: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __hash__(self) -> int:
        return hash((tuple(sorted((k, v) for k, v in self.gaps.items())), self.seed))

    def has(self, name: str) -> bool:
        return name in self.gaps

    def get(self, name: str) -> Any:
        """The amounts of gap ``name``; None when the world does not have it."""
        return self.gaps.get(name)

    def alone(self, name: str) -> StandIn:
        """This world's gap ``name`` by itself (its default amount when this world lacks it)."""
        if name not in GAPS:
            raise So101Error(f"stand-in gap {name}: unknown{did_you_mean(name, GAPS)}")
        return StandIn({name: self.gaps.get(name, GAPS[name]())}, self.seed)

    @property
    def period_s(self) -> float | None:
        period = self.get("period")
        return None if period is None else period.ms / 1000.0

    def summary(self) -> str:
        """A few words: the stand-in's gap names (:meth:`describe` has their amounts)."""
        if not self.gaps:
            return "stand-in with no gaps (the twin)"
        return f"stand-in world ({len(self.gaps)} gaps: {', '.join(self.gaps)}; seed {self.seed})"

    def describe(self) -> str:
        """One line: the stand-in's gaps and amounts."""
        if not self.gaps:
            return "stand-in with no gaps (the twin)"
        return "stand-in: " + "; ".join(f"{name} {_amounts(gap)}" for name, gap in self.gaps.items())

    def to_dict(self) -> dict:
        """The YAML form (what a recording and a run folder keep)."""
        return {"seed": self.seed, "gaps": {name: _plain(dataclasses.asdict(gap)) for name, gap in self.gaps.items()}}


def default_standin(seed: int = 0) -> StandIn:
    """Every gap at its default amount."""
    return StandIn({name: cls() for name, cls in GAPS.items()}, seed)


def _amounts(gap: Any) -> str:
    def shown(v: Any) -> str:
        return "(" + ", ".join(f"{x:g}" for x in v) + ")" if isinstance(v, tuple) else f"{v:g}"

    return ", ".join(f"{f.name} {shown(getattr(gap, f.name))}" for f in dataclasses.fields(gap))


def _plain(data: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

# ---------------------------------------------------------------------------- reading one


def load_standin(path: str | Path) -> StandIn:
    """A stand-in world from a YAML file, with one-line errors."""
    return standin_from_dict(read_yaml(path, "stand-in world"), str(path))


def standin_from_dict(data: Any, source: str = "stand-in") -> StandIn:
    """``{seed: N, gaps: {NAME: {AMOUNT: VALUE, ...} or {} or null, ...}}`` checked."""
    if not isinstance(data, dict):
        raise So101Error(f"{source}: expected a mapping with 'gaps' (and 'seed'), got {data!r}")
    for key in data:
        if key not in ("seed", "gaps"):
            raise So101Error(f"{source}: {key}: unknown{did_you_mean(str(key), ['seed', 'gaps'])} (a stand-in world "
                             f"has 'seed' and 'gaps'; a perturbed twin's file goes to @perturb)")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise So101Error(f"{source}: seed: expected a whole number, got {seed!r}")
    gaps = data.get("gaps") or {}
    if not isinstance(gaps, dict):
        raise So101Error(f"{source}: gaps: expected a mapping of gap names to their amounts, got {gaps!r}")
    out = {}
    for name, amounts in gaps.items():
        if name not in GAPS:
            raise So101Error(f"{source}: gaps.{name}: unknown gap{did_you_mean(str(name), GAPS)} "
                             f"(gaps: {', '.join(GAPS)})")
        out[name] = _gap(GAPS[name], amounts, f"{source}: gaps.{name}")
    return StandIn(out, seed)


def check_gap(name: str, amounts: Any, where: str) -> Any:
    """The gap ``name`` at ``amounts`` (a mapping), checked as a world file's are (one-line errors)."""
    if name not in GAPS:
        raise So101Error(f"{where}: {name}: unknown stand-in gap{did_you_mean(name, GAPS)}")
    return _gap(GAPS[name], amounts, where)


def _gap(cls: type, amounts: Any, where: str) -> Any:
    if amounts is None:
        return cls()
    if not isinstance(amounts, dict):
        raise So101Error(f"{where}: expected a mapping of amounts (or nothing, for the defaults), got {amounts!r}")
    defaults = cls()
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in amounts.items():
        if key not in names:
            raise So101Error(f"{where}.{key}: unknown{did_you_mean(str(key), names)} (amounts: {', '.join(names)})")
        values[key] = _amount(getattr(defaults, key), value, f"{where}.{key}")
    gap = cls(**values)
    _check(gap, where)
    return gap


def _amount(default: Any, value: Any, where: str) -> Any:
    def number(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise So101Error(f"{where}: expected a number, got {v!r}")
        return float(v)

    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise So101Error(f"{where}: expected {len(default)} numbers, got {value!r}")
        return tuple(number(v) for v in value)
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise So101Error(f"{where}: expected a whole number, got {value!r}")
        return value
    return number(value)


_POSITIVE = {("Exposure", "scale"), ("Exposure", "gain"), ("Compliance", "stiffness_scale"),
             ("Gripper", "stiffness_scale"), ("Gripper", "damping_scale"), ("Cube", "size_m"), ("Cube", "mass_kg"),
             ("Period", "ms"), ("MaxSpeed", "deg_s"), ("Intrinsics", "focal_scale"), ("Distractor", "size_m")}


def _check(gap: Any, where: str) -> None:
    """Amounts that would break the world (a negative mass, a zero period), refused in one line."""
    kind = type(gap).__name__
    for f in dataclasses.fields(gap):
        value = getattr(gap, f.name)
        values = value if isinstance(value, tuple) else (value,)
        if (kind, f.name) in _POSITIVE and any(v <= 0 for v in values):
            raise So101Error(f"{where}.{f.name}: must be positive, got {value}")
        if f.name.endswith(("rgb", "colour")) and any(not 0 <= v <= 1 for v in values):
            raise So101Error(f"{where}.{f.name}: each channel in [0, 1], got {value}")
    checks = {"Jpeg": (lambda g: 1 <= g.quality <= 100, "quality: 1-100"),
              "SensorNoise": (lambda g: g.std >= 0, "std: >= 0"),
              "MotionBlur": (lambda g: g.exposure_ms >= 0, "exposure_ms: >= 0"),
              "Latency": (lambda g: g.ms >= 0, "ms: >= 0"),
              "Backlash": (lambda g: min(g.deg) >= 0, "deg: each >= 0"),
              "Lighting": (lambda g: 0 <= g.intensity <= 1 and 0 <= g.ambient <= 1, "intensity and ambient in [0, 1]"),
              "Cube": (lambda g: g.friction > 0 and g.size_m < 0.06, "friction > 0 and size_m under 6 cm"),
              "Materials": (lambda g: 0 <= g.table_grain <= 1 and 0 <= g.cube_specular <= 1,
                            "table_grain and cube_specular in [0, 1]")}
    ok, rule = checks.get(kind, (lambda g: True, ""))
    if not ok(gap):
        raise So101Error(f"{where}: out of range ({rule})")


def with_gaps(world: StandIn, **gaps: Any) -> StandIn:
    """``world`` with gaps added or replaced (name=amounts)."""
    return replace(world, gaps={**world.gaps, **gaps})


def joint_array(values: tuple[float, ...]) -> np.ndarray:
    """Per-joint degrees as radians, in the arm's joint order."""
    return np.deg2rad(np.asarray(values, dtype=np.float64))
