"""Damped least-squares IK on the TCP site of the same MJCF the sim used.

The sim twin and the real arm both turn an end-effector target into joint position
targets through this one function, so a policy's action means the same on both.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from so101_sim2real.spec import IKSpec


@dataclass
class DLSIK:
    """One IK step: joint position targets that move the site toward a point."""

    model: mujoco.MjModel
    spec: IKSpec
    joints: tuple[str, ...]

    def __post_init__(self) -> None:
        self.site = self.model.site(self.spec.site).id
        ids = [self.model.joint(name).id for name in self.joints]
        self.qpos_adr = np.array([self.model.jnt_qposadr[j] for j in ids])
        self.dof_adr = np.array([self.model.jnt_dofadr[j] for j in ids])
        self.ranges = self.model.jnt_range[ids]
        self._jacp = np.zeros((3, self.model.nv))
        self._damp = self.spec.damping**2 * np.eye(3)

    def site_pos(self, data: mujoco.MjData) -> np.ndarray:
        return data.site_xpos[self.site].copy()

    def targets(self, data: mujoco.MjData, goal: np.ndarray, locked: tuple[int, ...] = ()) -> np.ndarray:
        """Joint targets for ``self.joints``; indices in ``locked`` keep their position.

        ``dq = J^T (J J^T + damping^2 I)^-1 (gain * error)``, each |dq| clipped to
        ``max_dq_rad``, the result clipped to the joint ranges. Needs kinematics of
        ``data`` to be current (``mj_forward`` or a step).
        """
        mujoco.mj_jacSite(self.model, data, self._jacp, None, self.site)
        jac = self._jacp[:, self.dof_adr].copy()
        if locked:
            jac[:, list(locked)] = 0.0
        error = self.spec.gain * (np.asarray(goal, dtype=np.float64) - data.site_xpos[self.site])
        dq = jac.T @ np.linalg.solve(jac @ jac.T + self._damp, error)
        dq = np.clip(dq, -self.spec.max_dq_rad, self.spec.max_dq_rad)
        q = data.qpos[self.qpos_adr] + dq
        return np.clip(q, self.ranges[:, 0], self.ranges[:, 1])
