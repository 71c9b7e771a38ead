"""The twin's arm as a :class:`~so101_sim2real.interfaces.Robot`.

It takes joint position targets and lets time pass by stepping the physics, so the
control loop drives it exactly as it drives the real follower.
"""

from __future__ import annotations

import mujoco
import numpy as np

from so101_sim2real.interfaces import JointState, SafetyLimits
from so101_sim2real.sim import scene as S
from so101_sim2real.spec import Spec


def sim_safety_limits(model: mujoco.MjModel, spec: Spec) -> SafetyLimits:
    """The twin's limits: the MJCF joint ranges, and a per-tick step no tighter than the
    training env allowed (the IK's ``max_dq_rad``; the gripper its whole range), so the
    clamp never changes what the policy trained with but still catches a runaway target."""
    ranges = np.array([model.jnt_range[model.joint(j).id] for j in S.JOINTS])
    return SafetyLimits.from_ranges(ranges, spec.action.ik.max_dq_rad)


class SimRobot:
    """Joint reads and position targets on the twin's ``MjData``."""

    name = "sim"

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, spec: Spec):
        self.model, self.data = model, data
        self.limits = sim_safety_limits(model, spec)
        ids = [model.joint(j).id for j in S.JOINTS]
        self._qpos = np.array([model.jnt_qposadr[j] for j in ids])
        self._qvel = np.array([model.jnt_dofadr[j] for j in ids])
        self._act = np.array([model.actuator(j).id for j in S.JOINTS])
        self.torque(True)

    def read(self) -> JointState:
        d = self.data
        return JointState(d.qpos[self._qpos].copy(), d.qvel[self._qvel].copy(), float(d.time))

    def write(self, targets: np.ndarray) -> None:
        self.data.ctrl[self._act] = targets

    def advance(self, period_s: float) -> None:
        for _ in range(max(1, round(period_s / self.model.opt.timestep))):
            mujoco.mj_step(self.model, self.data)

    def torque(self, enabled: bool) -> None:
        """Torque off disables actuation: the arm goes limp under gravity, as a real one does."""
        flag = int(mujoco.mjtDisableBit.mjDSBL_ACTUATION)
        if enabled:
            self.model.opt.disableflags &= ~flag
        else:
            self.model.opt.disableflags |= flag

    @property
    def torque_enabled(self) -> bool:
        return not self.model.opt.disableflags & int(mujoco.mjtDisableBit.mjDSBL_ACTUATION)

    def close(self) -> None:
        self.torque(False)
