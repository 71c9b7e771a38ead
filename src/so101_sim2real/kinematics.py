"""Forward kinematics and damped least-squares IK of the same MJCF the sim used.

The sim twin and the real arm both turn joint readings into a TCP pose, and an
end-effector target into joint position targets, through this one class, so a
policy's action and state mean the same on both (docs/reference.md section 7, item 8).

Where the pose comes from is the spec's ``action.ik.pose_from``:

- ``measured_joints``: FK of the joint reading in a private ``MjData``. The only
  choice on a real arm, which has no simulator state.
- ``live_physics``: the simulator's own ``MjData`` as its last physics step left it,
  which is what the user's training environment read. MuJoCo computes positions at
  the start of a step, so the TCP and the Jacobian lag the joints by one 2 ms substep.
  Only the twin can do this; it is its default because the policy was trained so.

Also here: :class:`JointVelocity`, the finite-difference velocities of a robot that reports
positions only. Both live below the sim, the hardware and the control loop, which all use them.
"""

from __future__ import annotations

from typing import Literal

import mujoco
import numpy as np

from so101_sim2real.errors import So101Error
from so101_sim2real.spec import IKSpec

PoseSource = Literal["live_physics", "measured_joints"]


def site_id(model: mujoco.MjModel, name: str, field: str) -> int:
    """The id of site ``name``, or a one-line error naming the spec ``field`` and the sites there are."""
    try:
        return model.site(name).id
    except KeyError:
        sites = [model.site(i).name for i in range(model.nsite) if model.site(i).name]
        raise So101Error(f"spec {field} '{name}': the SO-101 model has no such site (its sites: "
                         f"{', '.join(sites)})") from None


class Kinematics:
    """FK of the TCP site and one DLS IK step for a chain of joints of ``model``."""

    def __init__(self, model: mujoco.MjModel, spec: IKSpec, joints: tuple[str, ...],
                 live: mujoco.MjData | None = None):
        self.model, self.spec, self.joints = model, spec, joints
        self.live = live is not None
        self.data = live if live is not None else mujoco.MjData(model)
        self.site = site_id(model, spec.site, "action.ik.site")
        ids = [model.joint(name).id for name in joints]
        self.qpos_adr = np.array([model.jnt_qposadr[j] for j in ids])
        self.dof_adr = np.array([model.jnt_dofadr[j] for j in ids])
        self.ranges = model.jnt_range[ids].copy()
        self._jacp = np.zeros((3, model.nv))
        self._posed: np.ndarray | None = None

    @property
    def source(self) -> PoseSource:
        """Where FK and IK read the pose: the live physics, or FK of the measured joints."""
        return "live_physics" if self.live else "measured_joints"

    def _pose(self, q: np.ndarray) -> None:
        if self.live:  # the physics' own state, never written here
            return
        # A tick asks for FK (the state) and then IK (the action) at the same reading: pose once.
        if self._posed is not None and np.array_equal(q, self._posed):
            return
        self._posed = q.copy()
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)  # the Jacobian needs subtree centres of mass

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP position (m, world) and rotation matrix for joint positions ``q`` (rad).

        With live physics ``q`` is not used: the pose is the simulator's.
        """
        self._pose(np.asarray(q, dtype=np.float64))
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def ik(self, q: np.ndarray, goal: np.ndarray, locked: tuple[int, ...] = ()) -> np.ndarray:
        """Joint targets one IK step from ``q`` toward ``goal``; indices in ``locked`` stay put.

        As the training environment computed it: ``dq = (J^T J + damping^2 I)^-1 J^T error``
        over the free joints, each ``|dq|`` clipped to ``max_dq_rad`` and only then scaled
        by ``gain``, the result clipped to the joint ranges.
        """
        q = np.asarray(q, dtype=np.float64)
        self._pose(q)
        mujoco.mj_jacSite(self.model, self.data, self._jacp, None, self.site)
        free = [i for i in range(len(self.joints)) if i not in locked]
        jac = self._jacp[:, self.dof_adr[free]]
        error = np.asarray(goal, dtype=np.float64) - self.data.site_xpos[self.site]
        damp = self.spec.damping**2 * np.eye(len(free))
        dq = np.zeros(len(self.joints))
        dq[free] = np.clip(np.linalg.solve(jac.T @ jac + damp, jac.T @ error),
                           -self.spec.max_dq_rad, self.spec.max_dq_rad)
        return np.clip(q + self.spec.gain * dq, self.ranges[:, 0], self.ranges[:, 1])


class JointVelocity:
    """Finite-difference joint velocities for robots that do not report them in rad/s."""

    def __init__(self) -> None:
        self._last: tuple[float, np.ndarray] | None = None

    def reset(self) -> None:
        self._last = None

    def update(self, t: float, joint_pos: np.ndarray) -> np.ndarray:
        q = np.asarray(joint_pos, dtype=np.float64)
        if self._last is None or t <= self._last[0]:
            vel = np.zeros_like(q)
        else:
            vel = (q - self._last[1]) / (t - self._last[0])
        self._last = (t, q.copy())
        return vel
