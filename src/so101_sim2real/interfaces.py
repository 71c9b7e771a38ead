"""What the control loop needs from a robot, a camera and a task, sim or real.

Every robot speaks joint radians in the sim's convention (the sim's zero and sign,
joints in :data:`JOINT_NAMES` order); a real arm converts through its calibration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from so101_sim2real.arm import JOINT_NAMES  # noqa: F401 - re-exported: the order of every joint vector


@dataclass(frozen=True)
class JointState:
    """One reading of the arm: positions (rad), velocities (rad/s), when it was read."""

    position: np.ndarray  # (6,)
    velocity: np.ndarray  # (6,)
    timestamp: float  # seconds, the robot's clock (sim time for the twin)


@dataclass(frozen=True)
class SafetyLimits:
    """Where a joint target may go: inside the joint range and near the measured position."""

    low: np.ndarray  # (6,) rad
    high: np.ndarray  # (6,) rad
    max_step: np.ndarray  # (6,) rad per control tick, relative to the measured position

    @classmethod
    def from_ranges(cls, ranges: np.ndarray, arm_step_rad: float) -> SafetyLimits:
        """Joint ranges ``(6, 2)``; every arm joint may move ``arm_step_rad`` per tick, the gripper
        its whole range (its servo limits its own speed and force, and the policy trained with it)."""
        ranges = np.asarray(ranges, dtype=np.float64)
        step = np.full(len(ranges), arm_step_rad)
        step[-1] = ranges[-1, 1] - ranges[-1, 0]
        return cls(low=ranges[:, 0].copy(), high=ranges[:, 1].copy(), max_step=step)

    def clamp(self, targets: np.ndarray, measured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Targets clamped to the step around ``measured`` and then to the range; and which moved."""
        targets = np.asarray(targets, dtype=np.float64)
        out = np.clip(targets, measured - self.max_step, measured + self.max_step)
        out = np.clip(out, self.low, self.high)
        return out, ~np.isclose(out, targets, rtol=0.0, atol=1e-9)


@dataclass(frozen=True)
class Frame:
    """One camera image, RGB uint8 ``(H, W, 3)``, with its capture time."""

    rgb: np.ndarray
    timestamp: float
    index: int = 0


class Robot(Protocol):
    """A follower arm: the sim twin or the real SO-101 on its bus."""

    name: str
    limits: SafetyLimits

    def read(self) -> JointState: ...

    def write(self, targets: np.ndarray) -> None:
        """Position targets (rad, :data:`JOINT_NAMES` order), already clamped by the controller."""

    def advance(self, period_s: float) -> None:
        """Let one control period pass: the twin steps its physics, a real arm does nothing."""

    def torque(self, enabled: bool) -> None: ...

    def close(self) -> None: ...


class Camera(Protocol):
    """A source of RGB frames: the twin's wrist camera, a USB camera, a video."""

    def read(self) -> Frame: ...

    def close(self) -> None: ...


@dataclass
class StepResult:
    """What a task says about one control step."""

    reward: float
    terminated: bool  # success
    truncated: bool  # step limit
    info: dict = field(default_factory=dict)


class Task(Protocol):
    """Episode boundaries and scoring: the sim's lift-cube task, or a person at the real arm."""

    def reset(self, seed: int | None = None) -> dict: ...

    def evaluate(self, action: np.ndarray) -> StepResult: ...


@dataclass(frozen=True)
class Perceived:
    """One observation: the policy frame and what it was made from (for videos and reports)."""

    frame: np.ndarray  # (channels, H, W) uint8, the spec's channel order
    seg_ids: np.ndarray  # (H0, W0) sim class ids at source resolution
    disparity: np.ndarray  # (H0, W0) inverse depth, near = bigger
    rgb: np.ndarray | None  # (H0, W0, 3) uint8 when asked for or available
    timestamp: float
    captured_at: float | None = None  # time.monotonic() as its camera read began (a loop that perceives ahead)


class Perception(Protocol):
    """Camera image (or the twin's privileged renders) -> one policy frame."""

    def observe(self, with_rgb: bool = False) -> Perceived: ...

    def close(self) -> None: ...
