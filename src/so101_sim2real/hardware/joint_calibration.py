"""Joint calibration: LeRobot's JSON files (which users already have) plus the sim mapping.

LeRobot stores per motor ``id, drive_mode, homing_offset, range_min, range_max`` under
``~/.cache/huggingface/lerobot/calibration/{robots/so_follower|teleoperators/so_leader}/
<id>.json`` (older versions: ``so101_follower`` / ``so101_leader``). Its degrees are
``(raw - (min + max) / 2) * 360 / 4095``: zero is the middle of the recorded range, not
the MJCF zero, so reaching sim radians takes a per-joint sign and offset, which we
keep in our own file beside it: ``sim_rad = sign * radians(lerobot_deg) + offset``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from so101_sim2real.arm import CENTRE_TICK, JOINT_NAMES, SERVO_IDS
from so101_sim2real.errors import So101Error
from so101_sim2real.files import write_file

LEROBOT_ROOT_ENV = "HF_LEROBOT_CALIBRATION"
LAYOUTS = {
    "follower": (("robots", "so_follower"), ("robots", "so101_follower")),
    "leader": (("teleoperators", "so_leader"), ("teleoperators", "so101_leader")),
}
TICKS_PER_DEGREE = 4095 / 360  # LeRobot's scale, kept so its degrees and ours agree


@dataclass(frozen=True)
class MotorCalibration:
    """One motor as LeRobot writes it."""

    id: int
    drive_mode: int
    homing_offset: int
    range_min: int
    range_max: int

    @property
    def mid(self) -> float:
        return (self.range_min + self.range_max) / 2


@dataclass(frozen=True)
class JointMap:
    """LeRobot radians -> sim radians."""

    sign: int = 1
    offset_rad: float = 0.0


def lerobot_root() -> Path:
    env = os.environ.get(LEROBOT_ROOT_ENV)
    if env:
        return Path(env)
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return hf_home / "lerobot" / "calibration"


def find_lerobot_file(kind: str, robot_id: str, root: Path | None = None) -> Path:
    """The calibration file for ``robot_id``: the new layout first, then the old one."""
    root = root or lerobot_root()
    candidates = [root.joinpath(*parts, f"{robot_id}.json") for parts in LAYOUTS[kind]]
    for path in candidates:
        if path.is_file():
            return path
    raise So101Error(f"no LeRobot calibration for {kind} '{robot_id}' (looked in {candidates[0]} and "
                     f"{candidates[1]}); run 'so101 calibrate joints --port PORT --id {robot_id}'")


def new_lerobot_path(kind: str, robot_id: str, root: Path | None = None) -> Path:
    return (root or lerobot_root()).joinpath(*LAYOUTS[kind][0], f"{robot_id}.json")


def read_lerobot(path: Path) -> dict[str, MotorCalibration]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise So101Error(f"{path}: no such calibration file") from None
    except json.JSONDecodeError as exc:
        raise So101Error(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    missing = [j for j in JOINT_NAMES if j not in data]
    if missing:
        raise So101Error(f"{path}: no calibration for {', '.join(missing)}")
    out = {}
    for joint in JOINT_NAMES:
        try:
            out[joint] = MotorCalibration(**{k: int(data[joint][k]) for k in
                                             ("id", "drive_mode", "homing_offset", "range_min", "range_max")})
        except (KeyError, TypeError, ValueError) as exc:
            raise So101Error(f"{path}: {joint} needs integer id, drive_mode, homing_offset, range_min, range_max "
                             f"({exc})") from None
        if out[joint].range_min >= out[joint].range_max:
            raise So101Error(f"{path}: {joint} has range_min >= range_max")
    return out


def write_lerobot(path: Path, motors: dict[str, MotorCalibration]) -> None:
    write_file(Path(path), json.dumps({j: asdict(m) for j, m in motors.items()}, indent=4))


def sim_map_path(lerobot_file: Path) -> Path:
    """Our sim mapping lives beside the LeRobot file, which LeRobot leaves alone."""
    return Path(lerobot_file).with_name(Path(lerobot_file).stem + ".so101_sim.json")


@dataclass
class ArmCalibration:
    """Raw ticks <-> sim radians for the six joints."""

    motors: dict[str, MotorCalibration]
    sim: dict[str, JointMap]

    @classmethod
    def load(cls, lerobot_file: Path) -> ArmCalibration:
        motors = read_lerobot(lerobot_file)
        sim_file = sim_map_path(lerobot_file)
        if not sim_file.is_file():
            raise So101Error(f"{lerobot_file} has no sim mapping ({sim_file.name}): run 'so101 calibrate joints' "
                             f"to record the pose that matches the sim's zero")
        try:
            raw = json.loads(sim_file.read_text())
            sim = {j: JointMap(int(raw[j]["sign"]), float(raw[j]["offset_rad"])) for j in JOINT_NAMES}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise So101Error(f"{sim_file}: unreadable sim mapping ({exc})") from None
        return cls(motors, sim)

    def save(self, lerobot_file: Path) -> None:
        write_lerobot(lerobot_file, self.motors)
        write_file(sim_map_path(lerobot_file), json.dumps({j: asdict(m) for j, m in self.sim.items()}, indent=4))

    @property
    def ids(self) -> dict[str, int]:
        return {j: self.motors[j].id for j in JOINT_NAMES}

    def raw_to_sim(self, joint: str, raw: int | float) -> float:
        m, s = self.motors[joint], self.sim[joint]
        rad = math.radians((raw - m.mid) / TICKS_PER_DEGREE)
        return s.sign * (-rad if m.drive_mode else rad) + s.offset_rad

    def sim_to_raw(self, joint: str, rad: float) -> int:
        m, s = self.motors[joint], self.sim[joint]
        lerobot = (rad - s.offset_rad) * s.sign
        lerobot = -lerobot if m.drive_mode else lerobot
        return round(m.mid + math.degrees(lerobot) * TICKS_PER_DEGREE)

    def to_sim(self, raw: dict[str, int]) -> np.ndarray:
        return np.array([self.raw_to_sim(j, raw[j]) for j in JOINT_NAMES])

    def to_raw(self, rad: np.ndarray) -> dict[str, int]:
        return {j: self.sim_to_raw(j, float(r)) for j, r in zip(JOINT_NAMES, rad, strict=True)}

    def sim_ranges(self) -> np.ndarray:
        """(6, 2) sim radians of each recorded range, low first."""
        ends = np.array([[self.raw_to_sim(j, self.motors[j].range_min), self.raw_to_sim(j, self.motors[j].range_max)]
                         for j in JOINT_NAMES])
        return np.sort(ends, axis=1)


def with_joint_offsets(calibration: ArmCalibration, offsets_rad: np.ndarray) -> ArmCalibration:
    """The calibration whose sim angles are this one's plus ``offsets_rad`` (a rig file's joint
    offsets, one per joint in JOINT_NAMES order): reading adds them, writing goals subtracts them."""
    offsets = np.asarray(offsets_rad, dtype=np.float64).reshape(len(JOINT_NAMES))
    sim = {j: JointMap(calibration.sim[j].sign, calibration.sim[j].offset_rad + float(off))
           for j, off in zip(JOINT_NAMES, offsets, strict=True)}
    return ArmCalibration(dict(calibration.motors), sim)


def resolve_calibration(name: str, kind: str, option: str = "calibration") -> ArmCalibration:
    """An arm's calibration from a ``.json`` path or its id in LeRobot's folder (``kind``: follower or leader)."""
    path = Path(name).expanduser()
    if path.suffix == ".json":
        if not path.is_file():
            raise So101Error(f"@{option} {name}: no such file")
        return ArmCalibration.load(path)
    return ArmCalibration.load(find_lerobot_file(kind, name))


def twin_calibration(joint_ranges: np.ndarray) -> ArmCalibration:
    """The calibration of the emulated arm of the twin: the centre tick = 0 rad, the MJCF's sign,
    recorded ranges = the MJCF ranges. Both the emulator and the driver use it."""
    motors, sim = {}, {}
    for i, joint in enumerate(JOINT_NAMES):
        lo, hi = (CENTRE_TICK + math.degrees(float(r)) * TICKS_PER_DEGREE for r in joint_ranges[i])
        m = MotorCalibration(id=SERVO_IDS[joint], drive_mode=0, homing_offset=0, range_min=math.floor(lo),
                             range_max=math.ceil(hi))
        motors[joint] = m
        sim[joint] = JointMap(1, math.radians((m.mid - CENTRE_TICK) / TICKS_PER_DEGREE))
    return ArmCalibration(motors, sim)
