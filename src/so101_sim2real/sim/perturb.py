"""A perturbed twin: the sim made to differ from training the way a real arm does.

A stand-in for the real SO-101 when there is none, so that fine-tuning can be tried,
measured and repeated: a slower control period (a real loop of camera + two networks
on a CPU runs near 10 Hz, not the sim's 50 Hz), the wrist camera mounted a few
millimetres and degrees off its CAD pose, and perception that is noisy where real
networks are: class boundaries and disparity. Every value is in :class:`Perturbation`;
the zero perturbation is the nominal twin.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from so101_sim2real.errors import So101Error, did_you_mean
from so101_sim2real.interfaces import JointState, Perceived, Perception, Robot
from so101_sim2real.records import parse_yaml
from so101_sim2real.sim.scene import SceneConfig
from so101_sim2real.spec import yaml_problem


@dataclass(frozen=True)
class Perturbation:
    """How the perturbed twin differs from the nominal one."""

    period_s: float | None = None  # the control period; None: the spec's (20 ms)
    camera_shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)  # added to the camera's mount position
    camera_tilt_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)  # added to its mount's euler angles
    camera_fovy_deg: float = 0.0  # added to the camera's vertical field of view
    seg_edge_flip: float = 0.0  # chance that a pixel on a class boundary takes a neighbour's class
    seg_erode_px: int = 0  # the cube and fingers lose this many boundary pixels to what is around them
    cube_dropout: float = 0.0  # chance that a cube pixel is read as the table (a net missing parts of the cube)
    disparity_noise: float = 0.0  # std of Gaussian noise on the disparity channel, in uint8 levels
    disparity_region: str | None = None  # normalise disparity over "crop" or "full_frame"; None: as trained
    joint_offset_deg: tuple[float, ...] = (0.0,) * 6  # calibration error: read = true + offset, reached = sent - offset
    seed: int = 0  # of the perception noise

    @property
    def is_nominal(self) -> bool:
        return self == Perturbation()

    @property
    def noisy_perception(self) -> bool:
        return bool(self.seg_edge_flip or self.seg_erode_px or self.cube_dropout or self.disparity_noise)

    def scene(self, base: SceneConfig | None = None) -> SceneConfig:
        """The scene with the camera moved."""
        base = base or SceneConfig()
        x, y, z = (p + d / 1000.0 for p, d in zip(base.camera_pos, self.camera_shift_mm, strict=True))
        rx, ry, rz = (e + np.deg2rad(d) for e, d in zip(base.camera_euler, self.camera_tilt_deg, strict=True))
        return replace(base, camera_pos=(x, y, z), camera_euler=(rx, ry, rz),
                       camera_fovy=base.camera_fovy + self.camera_fovy_deg)

    def describe(self) -> str:
        if self.is_nominal:
            return "nominal twin"
        parts = []
        if self.period_s is not None:
            parts.append(f"period {self.period_s * 1000:.0f} ms")
        if any(self.camera_shift_mm) or any(self.camera_tilt_deg):
            shift = ", ".join(f"{v:.3g}" for v in self.camera_shift_mm)
            tilt = ", ".join(f"{v:.3g}" for v in self.camera_tilt_deg)
            parts.append(f"camera moved ({shift}) mm, tilted ({tilt}) deg")
        if self.camera_fovy_deg:
            parts.append(f"fovy {self.camera_fovy_deg:+g} deg")
        if self.seg_edge_flip:
            parts.append(f"seg edges flip p={self.seg_edge_flip:g}")
        if self.seg_erode_px:
            parts.append(f"cube and fingers eroded {self.seg_erode_px} px")
        if self.cube_dropout:
            parts.append(f"cube pixels missed p={self.cube_dropout:g}")
        if self.disparity_noise:
            parts.append(f"disparity noise std {self.disparity_noise:g}")
        if self.disparity_region:
            parts.append(f"disparity normalised over {self.disparity_region}")
        if any(self.joint_offset_deg):
            parts.append(f"joint offsets ({', '.join(f'{v:g}' for v in self.joint_offset_deg)}) deg")
        return "perturbed twin: " + "; ".join(parts)


class OffsetRobot:
    """The twin's arm read through a calibration that is off by ``offset_rad`` per joint: it reports
    true + offset, and a target sent lands at target - offset, as on a mis-calibrated real arm."""

    def __init__(self, inner: Robot, offset_rad: np.ndarray):
        self.inner, self.offset = inner, np.asarray(offset_rad, dtype=np.float64)

    def read(self) -> JointState:
        state = self.inner.read()
        return replace(state, position=state.position + self.offset)

    def write(self, targets: np.ndarray) -> None:
        self.inner.write(np.asarray(targets) - self.offset)

    def __getattr__(self, name: str) -> Any:  # advance, torque, limits, close: the twin's own
        return getattr(self.inner, name)


def load_perturbation(path: str | Path) -> Perturbation:
    """A :class:`Perturbation` from a YAML file, with one-line errors."""
    path = Path(path)
    try:
        data = parse_yaml(path.read_text())
    except OSError as exc:
        raise So101Error(f"{path}: cannot read the perturbation file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise So101Error(f"{path}: {yaml_problem(exc)}") from None
    return perturbation_from_dict(data or {}, str(path))


def perturbation_from_dict(data: Any, source: str = "perturbation") -> Perturbation:
    if not isinstance(data, dict):
        raise So101Error(f"{source}: expected a mapping of perturbation settings, got {data!r}")
    fields = {f.name for f in dataclasses.fields(Perturbation)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise So101Error(f"{source}: {key}: unknown setting{did_you_mean(key, fields)}")
        out[key] = _value(key, value, source)
    p = Perturbation(**out)
    if p.period_s is not None and p.period_s <= 0:
        raise So101Error(f"{source}: period_s: expected a positive number of seconds, got {p.period_s}")
    if not 0 <= p.seg_edge_flip <= 1 or not 0 <= p.cube_dropout <= 1 or p.disparity_noise < 0:
        raise So101Error(f"{source}: seg_edge_flip and cube_dropout must be in [0, 1] and disparity_noise >= 0")
    if p.seg_erode_px < 0:
        raise So101Error(f"{source}: seg_erode_px: expected a whole number >= 0, got {p.seg_erode_px}")
    return p


def _value(key: str, value: Any, source: str) -> Any:
    def number(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise So101Error(f"{source}: {key}: expected a number, got {v!r}")
        return float(v)

    if key in ("camera_shift_mm", "camera_tilt_deg"):
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise So101Error(f"{source}: {key}: expected three numbers [x, y, z], got {value!r}")
        return tuple(number(v) for v in value)
    if key == "joint_offset_deg":
        if not isinstance(value, (list, tuple)) or len(value) != 6:
            raise So101Error(f"{source}: {key}: expected six numbers, one per joint (degrees), got {value!r}")
        return tuple(number(v) for v in value)
    if key in ("seed", "seg_erode_px"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise So101Error(f"{source}: {key}: expected a whole number, got {value!r}")
        return value
    if key == "disparity_region":
        if value not in (None, "crop", "full_frame"):
            raise So101Error(f"{source}: disparity_region: expected crop or full_frame, got {value!r}")
        return value
    if key == "period_s" and value is None:
        return None
    return number(value)


def seg_edge_noise(seg: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Each pixel whose 4-neighbourhood holds another class takes one neighbour's class with chance ``p``:
    the ragged boundaries a segmentation network draws."""
    if p <= 0:
        return seg
    padded = np.pad(seg, 1, mode="edge")
    h, w = seg.shape
    neighbours = np.stack([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]])
    edge = (neighbours != seg).any(axis=0)
    pick = neighbours[rng.integers(0, 4, size=(h, w)), np.arange(h)[:, None], np.arange(w)[None, :]]
    flip = edge & (rng.random((h, w)) < p)
    return np.where(flip, pick, seg).astype(seg.dtype)


def seg_erode(seg: np.ndarray, px: int, thin: tuple[int, ...]) -> np.ndarray:
    """The ``thin`` classes (cube, fingers) lose ``px`` rings of boundary pixels to a neighbour of
    another class: the rounded, shrunken masks a segmentation network draws on small parts."""
    out = seg.copy()
    for _ in range(px):
        padded = np.pad(out, 1, mode="edge")
        neighbours = np.stack([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]])
        outside = ~np.isin(neighbours, thin)
        take = np.isin(out, thin) & outside.any(axis=0)
        first = outside.argmax(axis=0)  # the first neighbour that is not thin
        pick = np.take_along_axis(neighbours, first[None], axis=0)[0]
        out = np.where(take, pick, out)
    return out.astype(seg.dtype)


def cube_dropout(seg: np.ndarray, p: float, cube: int, table: int, rng: np.random.Generator) -> np.ndarray:
    """Each cube pixel is read as the table with chance ``p``."""
    if p <= 0:
        return seg
    return np.where((seg == cube) & (rng.random(seg.shape) < p), table, seg).astype(seg.dtype)


class NoisyPerception:
    """Wraps a perception and corrupts each policy frame's segmentation (eroded thin parts, missed
    cube pixels, ragged edges) and disparity (Gaussian noise)."""

    def __init__(self, inner: Perception, perturbation: Perturbation, channels: list[str],
                 classes: list[str] | None = None):
        self.inner, self.p = inner, perturbation
        self._seg = channels.index("seg") if "seg" in channels else None
        self._disp = channels.index("disparity") if "disparity" in channels else None
        classes = list(classes or ("background", "table", "cube", "static_finger", "moving_finger"))
        self._thin = tuple(classes.index(c) for c in ("cube", "static_finger", "moving_finger") if c in classes)
        self._cube = classes.index("cube") if "cube" in classes else -1
        self._table = classes.index("table") if "table" in classes else 0
        self.rng = np.random.default_rng(perturbation.seed)

    def observe(self, with_rgb: bool = False) -> Perceived:
        seen = self.inner.observe(with_rgb)
        frame = seen.frame.copy()
        if self._seg is not None:
            seg = seg_erode(frame[self._seg], self.p.seg_erode_px, self._thin)
            seg = cube_dropout(seg, self.p.cube_dropout, self._cube, self._table, self.rng)
            frame[self._seg] = seg_edge_noise(seg, self.p.seg_edge_flip, self.rng)
        if self._disp is not None and self.p.disparity_noise > 0:
            noise = self.rng.normal(0.0, self.p.disparity_noise, frame[self._disp].shape)
            frame[self._disp] = np.clip(frame[self._disp] + noise, 0, 255).round().astype(np.uint8)
        return replace(seen, frame=frame)

    def close(self) -> None:
        self.inner.close()
