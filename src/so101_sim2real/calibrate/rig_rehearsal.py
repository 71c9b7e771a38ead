"""``so101 calibrate rig --port emulator``: the twin plays a real rig whose geometry is not the sim's.

The twin's arm runs behind the STS3215 emulator as for ``so101 emulate --twin``, with a
board on its table and its wrist camera mounted where the :class:`RigTruth` says (moved
from the sim's guess), and the driver reads it through a calibration whose joint zeros
are off by the truth's offsets, as a real arm's often are. Calibrating this rig must
recover the truth; the rehearsal prints both.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from so101_sim2real.calibrate.hand_eye import euler_to_matrix, matrix_to_euler, rotvec_to_matrix
from so101_sim2real.geometry.rig_file import RigGeometry
from so101_sim2real.sim import scene as S
from so101_sim2real.sim.standin import StandIn
from so101_sim2real.sim.table_board import TableBoard
from so101_sim2real.spec import Spec

if TYPE_CHECKING:
    from so101_sim2real.control.env import LockedCamera
    from so101_sim2real.control.twin_bus import TwinBridge
    from so101_sim2real.hardware.so101 import SO101Follower


@dataclass(frozen=True)
class RigTruth:
    """How the rehearsal's rig differs from the guess: the issue's example, 8 mm and 4 degrees off,
    joint zeros -3/-3/+5/+5/0 degrees (what one SO-100 needed)."""

    mount_shift_mm: tuple[float, float, float] = (5.0, -4.0, 4.8)
    mount_turn_deg: tuple[float, float, float] = (3.0, 0.0, 2.65)  # a rotation vector in the mount's frame
    joint_offsets_deg: tuple[float, ...] = (-3.0, -3.0, 5.0, 5.0, 0.0, 0.0)

    def rig(self, guess: RigGeometry) -> RigGeometry:
        """The true geometry: the guess moved by this truth."""
        R = euler_to_matrix(guess.mount_euler) @ rotvec_to_matrix(np.radians(self.mount_turn_deg))
        pos = np.array(guess.mount_pos) + np.array(self.mount_shift_mm) / 1000
        return replace(guess, mount_pos=tuple(pos), mount_euler=matrix_to_euler(R),
                       joint_offsets_rad=np.radians(self.joint_offsets_deg), calibrated=True, fitted={})


def mount_error(fitted: RigGeometry, truth: RigGeometry) -> tuple[float, float]:
    """(mm, degrees): how far a fitted mount is from the true one."""
    distance = float(np.linalg.norm(np.subtract(fitted.mount_pos, truth.mount_pos))) * 1000
    R = euler_to_matrix(fitted.mount_euler).T @ euler_to_matrix(truth.mount_euler)
    angle = math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(R) - 1) / 2))))
    return distance, angle


@contextmanager
def rig_rehearsal(spec: Spec, board: TableBoard | None, truth: RigGeometry, world: StandIn | None = None,
                  corrections_rad: np.ndarray | None = None) -> Iterator[tuple[SO101Follower, LockedCamera]]:
    """(follower, camera) of the emulated rig, the cube off the table; everything stopped on the way out.
    ``camera.inner`` is the twin's :class:`~so101_sim2real.sim.camera.SimCamera` (its ``seg_ids`` are
    the true segmentation), ``camera.lock`` the world's lock. With a stand-in ``world`` the rig is
    that world's (its camera, picture, joints and arm; ``truth`` is then only what it should find), and
    ``corrections_rad`` the joint offsets the driver adds to its readings (a rig file's), as on an arm."""
    from so101_sim2real.control.env import LockedCamera
    from so101_sim2real.control.twin_bus import attach_twin
    from so101_sim2real.hardware.emulator import BusEmulator
    from so101_sim2real.hardware.joint_calibration import with_joint_offsets
    from so101_sim2real.hardware.so101 import open_follower
    from so101_sim2real.sim.camera import SimCamera
    from so101_sim2real.sim.camera_effects import standin_camera

    emulator = BusEmulator(list(range(1, 7)))
    if world is None:
        scene = S.scene_for_rig(truth, spec.observation.source_size, replace(S.SceneConfig(), table_board=board))
        bridge = attach_twin(emulator, spec, scene=scene)
    else:  # the world moves the camera and carries the joint offsets itself
        bridge = attach_twin(emulator, spec, scene=replace(S.SceneConfig(), table_board=board), standin=world)
    _clear_table(bridge)
    emulator.start()
    robot = camera = None
    try:
        # zeros off by the truth; a stand-in's readings carry its offsets already
        offsets = -truth.joint_offsets_rad if world is None else corrections_rad
        calibration = bridge.calibration if offsets is None else with_joint_offsets(bridge.calibration, offsets)
        robot = open_follower(emulator.path, calibration)
        eyes = SimCamera(bridge.task.model, bridge.task.data, spec.observation)
        camera = LockedCamera(standin_camera(eyes, world) if world else eyes, bridge.lock)
        yield robot, camera
    finally:
        try:
            if robot is not None:
                robot.close()
            if camera is not None:
                camera.close()
        finally:
            emulator.stop()


def _clear_table(bridge: TwinBridge) -> None:
    """The task's cube off the table (it would hide the board's corners, or the table): behind the arm."""
    import mujoco

    from so101_sim2real.calibrate.align import OFF_TABLE_XY

    task = bridge.task
    with bridge.lock:
        m, d = task.model, task.data
        adr = m.jnt_qposadr[m.joint(S.CUBE_JOINT).id]
        d.qpos[adr:adr + 3] = (*OFF_TABLE_XY, task.scene.cube_half)
        mujoco.mj_forward(m, d)
