"""``so101 calibrate align --interactive``: the real picture, the twin's and their blend, with keys
to nudge the camera's mount and field of view until they line up, for a person who wants to look.

Keys (in the window): a/d, w/s, r/f move the camera 1 mm along its x, y, z; j/l, i/k, u/o
turn it 0.5 degrees about those axes; + / - widen or narrow the field of view by 0.5
degrees; Enter keeps the result, Esc leaves without it. The twin is rendered through
the same scene the twin uses everywhere (:func:`~so101_sim2real.sim.scene.scene_for_rig`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import cv2
import mujoco
import numpy as np

from so101_sim2real.calibrate.hand_eye import euler_to_matrix, matrix_to_euler, rotvec_to_matrix
from so101_sim2real.geometry.rig_file import RigGeometry, pinhole_from_fovy
from so101_sim2real.sim import scene as S

STEP_MM, STEP_DEG, STEP_FOV_DEG = 1.0, 0.5, 0.5
MOVES = {"a": (0, -1), "d": (0, 1), "w": (1, -1), "s": (1, 1), "r": (2, 1), "f": (2, -1)}
TURNS = {"j": (1, -1), "l": (1, 1), "i": (0, 1), "k": (0, -1), "u": (2, -1), "o": (2, 1)}
KEYS_HELP = ("a/d w/s r/f: move 1 mm   j/l i/k u/o: turn 0.5 deg   +/-: field of view   Enter: keep   "
             "Esc: leave")


@dataclass
class Nudge:
    """The mount and field of view as the keys have moved them."""

    rig: RigGeometry
    done: bool = False
    kept: bool = False

    def key(self, key: str) -> None:
        """Apply one key (the module docstring lists them)."""
        rig = self.rig
        if key in MOVES:
            axis, sign = MOVES[key]
            self._move(axis, sign * STEP_MM / 1000)
        elif key in TURNS:
            axis, sign = TURNS[key]
            turn = np.zeros(3)
            turn[axis] = math.radians(sign * STEP_DEG)
            R = euler_to_matrix(rig.mount_euler) @ rotvec_to_matrix(turn)
            self.rig = replace(rig, mount_euler=matrix_to_euler(R))
        elif key in "+-":
            fovy = rig.camera.fovy_deg() + (STEP_FOV_DEG if key == "+" else -STEP_FOV_DEG)
            self.rig = replace(rig, camera=pinhole_from_fovy(fovy, rig.camera.size))
        elif key in ("\r", "\n"):
            self.done, self.kept = True, True
        elif key == "\x1b":
            self.done = True

    def _move(self, axis: int, metres: float) -> None:
        """Along the camera's own axis (OpenCV: x right, y down, z forward), in the gripper frame."""
        R = euler_to_matrix(self.rig.mount_euler) @ np.diag([1.0, -1.0, -1.0])
        self.rig = replace(self.rig, mount_pos=tuple(np.array(self.rig.mount_pos) + R[:, axis] * metres))


def twin_picture(rig: RigGeometry, joints: np.ndarray, size: tuple[int, int],
                 board: S.SceneAddition | None = None) -> np.ndarray:
    """The twin's RGB at ``joints`` (as read: ``rig``'s joint offsets are added) through ``rig``'s camera, at
    ``size`` (H, W); the cube off the table, and ``board`` (a TableBoard) on it when given."""
    from so101_sim2real.calibrate.align import OFF_TABLE_XY
    from so101_sim2real.sim.camera import close_renderer, offscreen_renderer

    base = replace(S.SceneConfig(), offscreen=(size[1], size[0]), table_board=board)
    scene = S.scene_for_rig(rig, size, base)
    model = S.build_model(scene)
    data = mujoco.MjData(model)
    data.qpos[[model.jnt_qposadr[model.joint(j).id] for j in S.JOINTS]] = joints + rig.joint_offsets_rad
    cube = model.jnt_qposadr[model.joint(S.CUBE_JOINT).id]
    data.qpos[cube:cube + 3] = (*OFF_TABLE_XY, scene.cube_half)
    mujoco.mj_forward(model, data)
    renderer = offscreen_renderer(model, *size)
    try:
        renderer.update_scene(data, camera=S.WRIST_CAMERA)
        return renderer.render().copy()
    finally:
        close_renderer(renderer)


def side_by_side(real: np.ndarray, twin: np.ndarray, caption: str) -> np.ndarray:
    """real | twin | blend, captioned: one RGB frame for the window."""
    from so101_sim2real.control.video import label

    panels = [real, twin, cv2.addWeighted(real, 0.5, twin, 0.5, 0)]
    frame = np.hstack([np.ascontiguousarray(p) for p in panels])
    return label(frame, caption)


class NudgeWindow(Protocol):
    """Where the nudging shows (a :class:`~so101_sim2real.control.window.LiveWindow`), and its keys."""

    def add(self, frame: np.ndarray) -> None: ...

    def poll(self) -> str: ...


def nudge_loop(rig: RigGeometry, real: np.ndarray, joints: np.ndarray, window: NudgeWindow,
               render: Callable[[RigGeometry, np.ndarray, tuple[int, int]], np.ndarray] = twin_picture,
               max_frames: int = 100_000) -> RigGeometry | None:
    """Show, read keys, nudge, until Enter (the nudged rig) or Esc (None)."""
    nudge = Nudge(rig)
    size = real.shape[:2]
    twin, shown_for = None, None
    for _ in range(max_frames):
        if shown_for is not nudge.rig:
            twin, shown_for = render(nudge.rig, joints, size), nudge.rig
        pos = ", ".join(f"{v * 1000:.1f}" for v in nudge.rig.mount_pos)
        assert twin is not None  # rendered on the first pass
        window.add(side_by_side(real, twin, f"real | twin | blend   mount {pos} mm   fovy "
                                            f"{nudge.rig.camera.fovy_deg():.1f}\n{KEYS_HELP}"))
        for key in window.poll():
            nudge.key(key)
        if nudge.done:
            break
    return nudge.rig if nudge.kept else None
