"""The real rig's geometry as one measured file, ``rig.yaml``, that the twin and the real side share.

Three things the sim guessed and the real rig settles:

- ``camera``: the wrist camera's intrinsics and lens (a :class:`CameraModel`, from
  ``so101 calibrate camera``), at the camera's own resolution.
- ``mount``: where the camera sits in the ``gripper`` body, in the MJCF's frame and
  MuJoCo's XML euler convention (the sign is opposite to scipy's), as the scene builds it.
- ``joint_offsets_deg``: per joint, what to add to the calibrated reading to get the sim's
  joint angle (``so101 calibrate rig`` fits them; one SO-100 needed -3/-3/+5/+5 degrees).

A rig without a file is :func:`default_rig`: the values the user's sim was built with
(fovy 70.5 from a 16:9 assumption, the mount from a tape measure), so that commands can say
so. Each fitted part carries how it was fitted and its residuals under ``fitted``.

What was measured is read from the file's one record of it, never from a flag beside it: the
intrinsics unless the camera block is the sim's fovy guess (its ``source`` says ``not
calibrated``), the mount when ``fitted`` has ``rig`` or ``align``, the joint offsets when it has
``rig``. A rehearsal on the twin fits the mount and offsets on the sim's intrinsics, and its
file says exactly that. Files that carry ``calibrated:`` (written before) are still read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from so101_sim2real.arm import JOINT_NAMES
from so101_sim2real.errors import So101Error
from so101_sim2real.files import write_file
from so101_sim2real.geometry.camera_model import CameraModel
from so101_sim2real.records import Fields, read_mapping

FORMAT = "so101-rig"
VERSION = 1
# What the user's sim used (the twin's SceneConfig defaults): a tape measure and the lens spec.
DEFAULT_MOUNT_POS = (0.008, -0.065, -0.019)
DEFAULT_MOUNT_EULER = (0.398, 0.0, 3.14159)
DEFAULT_FOVY_DEG = 70.5
DEFAULT_SIZE = (480, 640)  # (H, W)
_FIELDS = ("format", "version", "camera", "mount", "joint_offsets_deg", "fitted", "calibrated")
GUESS_MARK = "(not calibrated)"  # in the source of a camera that is the sim's fovy guess
PARTS = ("intrinsics", "mount", "joint offsets")
_MEASURES = {"intrinsics": "so101 calibrate camera", "mount": "so101 calibrate rig or align",
             "joint offsets": "so101 calibrate rig"}


def pinhole_from_fovy(fovy_deg: float, size: tuple[int, int] = DEFAULT_SIZE) -> CameraModel:
    """The distortion-free camera MuJoCo renders for ``fovy`` (square pixels, centred)."""
    height, width = size
    f = (height / 2) / math.tan(math.radians(fovy_deg) / 2)
    K = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]])
    return CameraModel(size=size, K=K, D=np.zeros(5), model="pinhole", source=f"fovy {fovy_deg:g} {GUESS_MARK}")


def is_guess(camera: CameraModel) -> bool:
    """The camera is the sim's fovy guess, not a measured one."""
    return GUESS_MARK in camera.source


@dataclass
class RigGeometry:
    """The camera, its mount on the gripper and the joint zero offsets of one real rig."""

    camera: CameraModel
    mount_pos: tuple[float, float, float] = DEFAULT_MOUNT_POS  # metres, in the gripper body
    mount_euler: tuple[float, float, float] = DEFAULT_MOUNT_EULER  # radians, MuJoCo XML euler
    joint_offsets_rad: np.ndarray = field(default_factory=lambda: np.zeros(len(JOINT_NAMES)))
    calibrated: bool = True  # False: the sim's guesses (default_rig); True: at least one part measured
    fitted: dict[str, Any] = field(default_factory=dict)  # how each part was measured, and its residuals

    def __post_init__(self) -> None:
        self.mount_pos = _xyz(self.mount_pos)
        self.mount_euler = _xyz(self.mount_euler)
        self.joint_offsets_rad = np.asarray(self.joint_offsets_rad, dtype=np.float64).reshape(len(JOINT_NAMES))

    @property
    def measured(self) -> list[str]:
        """The parts (of :data:`PARTS`) that were measured; the others are the sim's guesses."""
        if not self.calibrated:
            return []
        fitted = set(self.fitted)
        return [part for part, done in (("intrinsics", not is_guess(self.camera)),
                                        ("mount", bool({"rig", "align"} & fitted)),
                                        ("joint offsets", "rig" in fitted)) if done]

    def describe(self) -> str:
        """One line for inspect/infer: what the twin's camera is, and which of it was measured."""
        c = self.camera
        what = (f"{c.model} {c.size[1]}x{c.size[0]}, fx {c.fx:.1f} fy {c.fy:.1f}, fovy {c.fovy_deg():.1f} deg; "
                f"mount at {tuple(round(v * 1000, 1) for v in self.mount_pos)} mm")
        measured = self.measured
        if not measured:
            return (f"{what}: the sim's guesses, not calibrated (so101 calibrate camera, then so101 calibrate rig "
                    f"or align)")
        guessed = [f"{part} ({_MEASURES[part]})" for part in PARTS if part not in measured]
        what += "; measured: " + ", ".join(measured) + ("; the sim's guess: " + ", ".join(guessed) if guessed else "")
        offsets = np.degrees(self.joint_offsets_rad)
        return what + ("; joint offsets " + " ".join(f"{v:+.1f}" for v in offsets) + " deg"
                       if np.abs(offsets).max() > 0 else "")

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "camera": self.camera.to_dict(),
                "mount": {"pos": [float(v) for v in self.mount_pos], "euler": [float(v) for v in self.mount_euler]},
                "joint_offsets_deg": {j: round(float(math.degrees(v)), 4)
                                      for j, v in zip(JOINT_NAMES, self.joint_offsets_rad, strict=True)},
                "fitted": self.fitted}

    def save(self, path: str | Path) -> Path:
        """Write ``rig.yaml``; what was measured is said once, by the camera block and ``fitted``
        (a comment repeats it for the reader)."""
        guessed = [part for part in PARTS if part not in self.measured]
        header = ("# The rig's measured geometry (so101 calibrate). mount: the wrist camera in the gripper body,\n"
                  "# metres and MuJoCo XML euler radians; joint_offsets_deg: added to the calibrated joint reading\n"
                  "# to give the sim's joint angle.\n"
                  f"# measured: {', '.join(self.measured) or 'nothing'}"
                  + (f"; the sim's guess: {', '.join(guessed)}" if guessed else "") + "\n")
        return write_file(path, header + yaml.safe_dump(_plain(self.to_dict()), sort_keys=False,
                                                        default_flow_style=None, width=120))

    @classmethod
    def load(cls, path: str | Path) -> RigGeometry:
        """Read ``rig.yaml``; a one-line :class:`So101Error` naming the field that is wrong."""
        f = Fields(read_mapping(path, "rig file"), path, _FIELDS)
        if f.text("format", FORMAT) != FORMAT:
            raise f.error("format", f"expected {FORMAT}")
        if f.number("version", VERSION) > VERSION:
            raise f.error("version", f"written by a newer so101 (this one reads version {VERSION})")
        camera = _camera(f, path)
        mount = f.get("mount", {"pos": list(DEFAULT_MOUNT_POS), "euler": list(DEFAULT_MOUNT_EULER)})
        if not isinstance(mount, dict):
            raise f.error("mount", "expected pos: [x, y, z] and euler: [a, b, c]")
        m = Fields(mount, f"{path}: mount", ("pos", "euler"))
        offsets = f.get("joint_offsets_deg", {})
        if not isinstance(offsets, dict):
            raise f.error("joint_offsets_deg", "expected JOINT: degrees for the joints of " + ", ".join(JOINT_NAMES))
        o = Fields(offsets, f"{path}: joint_offsets_deg", JOINT_NAMES)
        fitted = f.get("fitted", {})
        rig = cls(camera=camera, mount_pos=_xyz(m.numbers("pos", length=(3,))),
                  mount_euler=_xyz(m.numbers("euler", length=(3,))),
                  joint_offsets_rad=np.radians([o.number(j, 0.0) for j in JOINT_NAMES]),
                  fitted=fitted if isinstance(fitted, dict) else {})
        # an older file's flag is kept; a newer file has none: calibrated is "something was measured"
        rig.calibrated = f.flag("calibrated", None) if "calibrated" in f.data else bool(rig.measured)
        return rig


def _xyz(values: Iterable[float]) -> tuple[float, float, float]:
    x, y, z = values
    return float(x), float(y), float(z)


def _camera(f: Fields, path: str | Path) -> CameraModel:
    data = f.get("camera")
    if not isinstance(data, dict):
        raise f.error("camera", "expected the fields of a camera.yaml (model, size, K, D)")
    return CameraModel.from_mapping(data, f"{path}: camera")


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as plain YAML numbers and lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def default_rig() -> RigGeometry:
    """The geometry the user's sim was built with: uncalibrated guesses."""
    return RigGeometry(camera=pinhole_from_fovy(DEFAULT_FOVY_DEG), calibrated=False)


def load_rig(path: str | Path | None) -> RigGeometry:
    """A rig file, or the default (uncalibrated) geometry when none is given."""
    return default_rig() if path is None else RigGeometry.load(path)


def read_rig(path: str | Path) -> RigGeometry:
    """``--rig FILE``: a ``rig.yaml``, or a plain ``camera.yaml`` (its mount and joint offsets the sim's)."""
    data = read_mapping(path, "rig file")
    if "camera" not in data and "K" in data:  # a camera.yaml: its fields at the top level
        return rig_from_camera(path)
    return RigGeometry.load(path)


def rig_from_camera(camera_yaml: str | Path) -> RigGeometry:
    """A rig whose intrinsics are measured and whose mount is still the sim's guess."""
    rig = RigGeometry(camera=CameraModel.load(camera_yaml))
    rig.fitted["camera"] = {"from": str(camera_yaml), "rms_px": rig.camera.rms}
    return rig


def check_size(rig: RigGeometry, size: tuple[int, int]) -> None:
    """The camera model must describe the images perception gets (or scale to them exactly)."""
    h, w = rig.camera.size
    if h * size[1] != w * size[0]:
        raise So101Error(f"the rig's camera was calibrated at {w}x{h}, the images are {size[1]}x{size[0]} (another "
                         f"aspect ratio): calibrate at the resolution the policy runs at")
