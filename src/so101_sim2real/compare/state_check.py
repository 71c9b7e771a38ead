"""The recorded 18-D state against the one the twin computes from the recorded joints.

The twin's state of a row: the recorded joint positions and velocities, the TCP from the
MJCF's forward kinematics, through the same :class:`StateBuilder` the policy's state comes
from. Per field: the RMS and largest difference, and the least-squares scale of recorded
over twin, which gives away a unit slip: 57.3 is degrees where radians were meant (the
user's state once mixed the two).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from so101_sim2real.policy.state import Proprio, StateBuilder
from so101_sim2real.sim import scene as S
from so101_sim2real.spec import Spec

DEGREES = math.degrees(1.0)
UNIT_SLIP_TOLERANCE = 0.05  # a scale within 5% of 57.3 (or of 1/57.3) is a degrees / radians mix-up
ANGLE_FIELDS = ("joint_pos", "joint_vel", "tcp_rpy")


@dataclass
class StateFieldCheck:
    name: str
    rms: float
    max: float
    scale: float | None  # least-squares recorded / twin; None where the twin's values are all ~0

    @property
    def degrees_for_radians(self) -> bool:
        return (self.name in ANGLE_FIELDS and self.scale is not None
                and any(abs(self.scale / s - 1) < UNIT_SLIP_TOLERANCE for s in (DEGREES, 1 / DEGREES)))


def twin_states(joint_pos: np.ndarray, joint_vel: np.ndarray, spec: Spec) -> np.ndarray:
    """(N, S) the state the twin computes for each recorded reading."""
    from so101_sim2real.kinematics import Kinematics

    kinematics = Kinematics(S.build_model(), spec.action.ik, S.ARM_JOINTS)
    builder = StateBuilder(spec.state)
    arm = len(S.ARM_JOINTS)
    rows = []
    for q, v in zip(joint_pos, joint_vel, strict=True):
        pos, rot = kinematics.fk(q[:arm])
        rows.append(builder.build(Proprio(q, v, pos, rot)))
    return np.array(rows)


def compare_states(recorded: np.ndarray, twin: np.ndarray, spec: Spec) -> list[StateFieldCheck]:
    """Per state field: how far the recorded values are from the twin's."""
    out, start = [], 0
    for f in spec.state.fields:
        r, t = recorded[:, start:start + f.size].astype(np.float64), twin[:, start:start + f.size]
        start += f.size
        diff = r - t
        denominator = float(np.sum(t * t))
        scale = float(np.sum(r * t) / denominator) if denominator > 1e-9 else None
        out.append(StateFieldCheck(f.name, float(np.sqrt(np.mean(diff ** 2))), float(np.abs(diff).max()), scale))
    return out
