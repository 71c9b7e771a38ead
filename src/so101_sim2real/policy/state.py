"""The per-frame proprioceptive state, in the sim's units and order.

18-D for the user's task: ``qpos[0:6]`` (5 arm joints + gripper, rad), ``qvel[0:6]``,
the TCP site position (m, world) and its roll, pitch, yaw. On the real robot the same
numbers come from calibrated joint readings, forward kinematics of the same MJCF and
finite-difference velocities. The order and sizes come from the spec.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from so101_sim2real.errors import ObservationError
from so101_sim2real.spec import StateSpec


@dataclass(frozen=True)
class Proprio:
    """One reading of the arm, in sim convention (radians, metres, world frame)."""

    joint_pos: np.ndarray  # (6,)
    joint_vel: np.ndarray  # (6,)
    tcp_pos: np.ndarray  # (3,)
    tcp_rot: np.ndarray  # (3, 3) rotation matrix of the TCP site


def rpy_from_matrix(rot: np.ndarray) -> np.ndarray:
    """Roll, pitch, yaw (extrinsic x-y-z, i.e. R = Rz(yaw) Ry(pitch) Rx(roll)).

    At gimbal lock (pitch = +-90 deg) yaw is set to 0 and roll absorbs the rest, as the
    training environment computed it.
    """
    rot = np.asarray(rot, dtype=np.float64)
    sy = np.hypot(rot[0, 0], rot[1, 0])
    pitch = np.arctan2(-rot[2, 0], sy)
    if sy < 1e-6:
        return np.array([np.arctan2(-rot[1, 2], rot[1, 1]), pitch, 0.0])
    return np.array([np.arctan2(rot[2, 1], rot[2, 2]), pitch, np.arctan2(rot[1, 0], rot[0, 0])])


class StateBuilder:
    """Assembles the state vector in the spec's field order."""

    def __init__(self, spec: StateSpec):
        self.spec = spec
        known = {"joint_pos", "joint_vel", "tcp_pos", "tcp_rpy"}
        unknown = [f.name for f in spec.fields if f.name not in known]
        if unknown:
            raise ObservationError(
                f"the policy's state includes {unknown}, which a robot cannot provide "
                f"(a privileged sim quantity such as the cube position); this policy cannot run on a robot"
            )

    def build(self, reading: Proprio) -> np.ndarray:
        parts = {
            "joint_pos": np.asarray(reading.joint_pos, dtype=np.float64),
            "joint_vel": np.asarray(reading.joint_vel, dtype=np.float64),
            "tcp_pos": np.asarray(reading.tcp_pos, dtype=np.float64),
            "tcp_rpy": rpy_from_matrix(reading.tcp_rot),
        }
        out = []
        for f in self.spec.fields:
            value = parts[f.name].reshape(-1)
            if value.size != f.size:
                raise ObservationError(f"state field '{f.name}' has {value.size} values, the spec says {f.size}")
            out.append(value)
        return np.concatenate(out).astype(np.float32)
