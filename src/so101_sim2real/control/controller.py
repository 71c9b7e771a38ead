"""Policy action -> joint targets, the same way on the twin and on the real arm.

The end-effector target accumulates ``action[:3] * xyz_scale_m`` and is clamped to the
spec's workspace (not "current pose + delta": docs/reference.md section 7, item 8); one damped
least-squares IK step gives the arm targets (from the measured joints on a real arm;
on the twin, as in training, from the physics state: ``action.ik.pose_from``); the gripper
action maps linearly onto its range. Last, the robot's safety limits clamp every
target to the joint range and to a maximum step from the measured position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from so101_sim2real.errors import So101Error
from so101_sim2real.interfaces import SafetyLimits
from so101_sim2real.kinematics import Kinematics
from so101_sim2real.spec import ActionSpec


@dataclass(frozen=True)
class Command:
    """One tick's output: what was sent, and what the policy asked for."""

    targets: np.ndarray  # (6,) rad, after the safety clamp
    requested: np.ndarray  # (6,) rad, before it
    ee_target: np.ndarray  # (3,) m, the accumulated end-effector target
    clamped: np.ndarray  # (6,) bool, joints the safety clamp moved


class Controller:
    """Accumulated EE target + IK + gripper mapping + safety clamp."""

    def __init__(self, spec: ActionSpec, kinematics: Kinematics, limits: SafetyLimits):
        if spec.type != "ee_delta_xyz_gripper" or spec.dim != 4:
            raise So101Error(f"the controller drives 4-D ee_delta_xyz_gripper actions; the spec says "
                             f"{spec.type} with {spec.dim} dims")
        self.spec, self.kinematics, self.limits = spec, kinematics, limits
        ws = spec.workspace
        self._low = np.array([ws.x[0], ws.y[0], ws.z[0]])
        self._high = np.array([ws.x[1], ws.y[1], ws.z[1]])
        self._arm = len(kinematics.joints)
        self.locked = () if spec.wrist == "free" else (3, 4)
        self.ee_target = np.zeros(3)

    def clamp_workspace(self, p: np.ndarray) -> np.ndarray:
        return np.clip(p, self._low, self._high)

    def reset(self, q: np.ndarray) -> np.ndarray:
        """Start accumulating from where the TCP is now; returns that target."""
        pos, _ = self.kinematics.fk(np.asarray(q)[:self._arm])
        self.ee_target = self.clamp_workspace(pos)
        return self.ee_target.copy()

    def command(self, action: np.ndarray, q: np.ndarray) -> Command:
        """Joint targets for one tick from a policy action and the measured joints ``q``."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.spec.dim,) or not np.all(np.isfinite(action)):
            raise So101Error(f"action {action!r} is not {self.spec.dim} finite numbers")
        action = np.clip(action, -1.0, 1.0)
        q = np.asarray(q, dtype=np.float64)
        self.ee_target = self.clamp_workspace(self.ee_target + action[:3] * self.spec.xyz_scale_m)
        arm = self.kinematics.ik(q[:self._arm], self.ee_target, self.locked)
        requested = np.append(arm, self.spec.gripper.to_rad(action[3]))
        targets, clamped = self.limits.clamp(requested, q)
        return Command(targets, requested, self.ee_target.copy(), clamped)
