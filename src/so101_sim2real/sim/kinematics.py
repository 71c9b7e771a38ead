"""Forward kinematics and damped least-squares IK of the same MJCF the sim used.

The sim twin and the real arm both turn joint readings into a TCP pose, and an
end-effector target into joint position targets, through this one class, so a
policy's action and state mean the same on both (FIELD_NOTES pitfall 8). It keeps its
own ``MjData``: it computes from measured joint positions, never from the physics.
"""

from __future__ import annotations

import mujoco
import numpy as np

from so101_sim2real.spec import IKSpec


class Kinematics:
    """FK of the TCP site and one DLS IK step for a chain of joints of ``model``."""

    def __init__(self, model: mujoco.MjModel, spec: IKSpec, joints: tuple[str, ...]):
        self.model, self.spec, self.joints = model, spec, joints
        self.data = mujoco.MjData(model)
        self.site = model.site(spec.site).id
        ids = [model.joint(name).id for name in joints]
        self.qpos_adr = np.array([model.jnt_qposadr[j] for j in ids])
        self.dof_adr = np.array([model.jnt_dofadr[j] for j in ids])
        self.ranges = model.jnt_range[ids].copy()
        self._jacp = np.zeros((3, model.nv))
        self._damp = spec.damping**2 * np.eye(3)
        self._posed: np.ndarray | None = None

    def _pose(self, q: np.ndarray) -> None:
        # A tick asks for FK (the state) and then IK (the action) at the same reading: pose once.
        if self._posed is not None and np.array_equal(q, self._posed):
            return
        self._posed = q.copy()
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)  # the Jacobian needs subtree centres of mass

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP position (m, world) and rotation matrix for joint positions ``q`` (rad)."""
        self._pose(np.asarray(q, dtype=np.float64))
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def ik(self, q: np.ndarray, goal: np.ndarray, locked: tuple[int, ...] = ()) -> np.ndarray:
        """Joint targets one IK step from ``q`` toward ``goal``; indices in ``locked`` stay put.

        ``dq = J^T (J J^T + damping^2 I)^-1 (gain * error)``, each |dq| clipped to
        ``max_dq_rad``, the result clipped to the joint ranges.
        """
        q = np.asarray(q, dtype=np.float64)
        self._pose(q)
        mujoco.mj_jacSite(self.model, self.data, self._jacp, None, self.site)
        jac = self._jacp[:, self.dof_adr].copy()
        if locked:
            jac[:, list(locked)] = 0.0
        error = self.spec.gain * (np.asarray(goal, dtype=np.float64) - self.data.site_xpos[self.site])
        dq = jac.T @ np.linalg.solve(jac @ jac.T + self._damp, error)
        dq = np.clip(dq, -self.spec.max_dq_rad, self.spec.max_dq_rad)
        return np.clip(q + dq, self.ranges[:, 0], self.ranges[:, 1])
