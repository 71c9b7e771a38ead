"""The SO-101 as one table: each joint's name, servo ID and servo model, once.

The names are LeRobot's motor names and the MJCF's joint names alike (they agree), so
the calibration files, the bus, the twin and the state all index by them. Everything
else (ID lists, the arm joints without the gripper, servo counts) derives from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Motor:
    """One joint of the arm and the servo that drives it."""

    id: int
    model: str = "sts3215"


MOTORS: dict[str, Motor] = {
    "shoulder_pan": Motor(1),
    "shoulder_lift": Motor(2),
    "elbow_flex": Motor(3),
    "wrist_flex": Motor(4),
    "wrist_roll": Motor(5),
    "gripper": Motor(6),
}
JOINT_NAMES: tuple[str, ...] = tuple(MOTORS)  # the order of every joint vector: arm joints, then the gripper
GRIPPER = "gripper"
ARM_JOINTS: tuple[str, ...] = tuple(j for j in JOINT_NAMES if j != GRIPPER)
SERVO_IDS: dict[str, int] = {name: m.id for name, m in MOTORS.items()}

# The encoder tick a calibrated servo reads at the middle of its recorded range. LeRobot's
# half-turn homing writes offsets that put that pose at (4096 - 1) // 2 = 2047, and so does
# `so101 calibrate joints`; the twin and the emulator use the same centre so that they read
# like a calibrated arm.
CENTRE_TICK = 2047
