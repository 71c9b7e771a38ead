"""``so101 calibrate align``: the camera's mount fitted to what the segmentation sees, no board needed.

The arm holds the sim's start pose with a few gripper openings and wrist turns. At each,
the real segmentation's class map (table, static finger, moving finger) is compared with
the twin's, rendered at the same joints through a candidate mount; the mount (position
and a small rotation from the guess) is moved to make them agree. The score is the soft
IoU of each class (masks blurred by a pixel or two, so that sub-pixel moves change it),
averaged over classes and poses; Nelder-Mead, in three rounds of shrinking steps,
climbs it. The cube is taken off the table first: where a person would put it is not known
to the millimetre, and it would hide table and fingers.

What the fingers and the table edge pin down is the camera relative to the gripper, so
the joint zeros must be right already (``so101 calibrate joints``, or ``calibrate rig``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import mujoco
import numpy as np

from so101_sim2real.calibrate.hand_eye import euler_to_matrix, matrix_to_euler, rotvec_to_matrix
from so101_sim2real.geometry.rig_file import RigGeometry
from so101_sim2real.interfaces import Robot
from so101_sim2real.sim import scene as S
from so101_sim2real.spec import Spec

ALIGN_SIZE = (120, 160)  # (H, W) the masks are compared at
CLASSES = ("table", "static_finger", "moving_finger")
BLUR_PX = 1.5
STEPS = ((4.0, 400), (1.5, 300), (0.5, 200))  # (simplex step in mm and degrees, evaluations) per round
OPENINGS_RAD = (-0.1, 0.4, 0.9, 1.4)
# (flex, roll) added to the start pose, whose wrist_flex (pi/2) is near the end of its range
WRIST_TURNS_RAD = ((-0.3, 0.0), (-0.15, 0.4), (-0.45, -0.4))
OFF_TABLE_XY = (-0.15, 0.25)  # where the twin's cube waits, behind the arm and out of the camera's view


@dataclass
class AlignView:
    """The joints as read and the sim class ids the segmentation gave (at its own resolution)."""

    joints: np.ndarray
    seg_ids: np.ndarray


@dataclass
class AlignFit:
    rig: RigGeometry
    iou_before: dict[str, float]  # per class, hard IoU averaged over the views
    iou_after: dict[str, float]
    evaluations: int


def align_poses(start_pose: np.ndarray) -> list[np.ndarray]:
    """The start pose with each gripper opening, then a few wrist turns with the gripper half open."""
    poses = []
    for opening in OPENINGS_RAD:
        q = np.array(start_pose, dtype=np.float64)
        q[5] = opening
        poses.append(q)
    for flex, roll in WRIST_TURNS_RAD:
        q = np.array(start_pose, dtype=np.float64)
        q[3] += flex
        q[4] += roll
        q[5] = 0.6
        poses.append(q)
    return poses


def coverage(ids: np.ndarray, cls: int) -> np.ndarray:
    """How much of each :data:`ALIGN_SIZE` pixel is class ``cls``: an area average, so a mask from a
    larger image lands where it is (nearest-neighbour picking would shift it by a fraction of a pixel)."""
    mask = (ids == cls).astype(np.float32)
    if mask.shape == ALIGN_SIZE:
        return mask
    return cv2.resize(mask, ALIGN_SIZE[::-1], interpolation=cv2.INTER_AREA)


class MaskRenderer:
    """The twin's class map at :data:`ALIGN_SIZE` for given joints and mount; the cube out of view."""

    def __init__(self, spec: Spec, rig: RigGeometry, cube_xy: tuple[float, float] = OFF_TABLE_XY):
        from so101_sim2real.sim.camera import offscreen_renderer, segmentation_lut

        scene = S.scene_for_rig(rig, ALIGN_SIZE)
        self.model = S.build_model(scene)
        self.data = mujoco.MjData(self.model)
        self.lut = segmentation_lut(self.model, spec.observation.segmentation.classes)
        self.classes = list(spec.observation.segmentation.classes)
        self.camera = self.model.camera(S.WRIST_CAMERA).id
        self.qadr = [self.model.jnt_qposadr[self.model.joint(j).id] for j in S.JOINTS]
        cube = self.model.jnt_qposadr[self.model.joint(S.CUBE_JOINT).id]
        self.data.qpos[cube:cube + 7] = (*cube_xy, scene.cube_half, 1.0, 0.0, 0.0, 0.0)
        self.renderer = offscreen_renderer(self.model, *ALIGN_SIZE)
        self.renderer.enable_segmentation_rendering()

    def set_mount(self, R: np.ndarray, t: np.ndarray) -> None:
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, R.flatten())
        self.model.cam_quat[self.camera], self.model.cam_pos[self.camera] = quat, t

    def render(self, joints: np.ndarray) -> np.ndarray:
        self.data.qpos[self.qadr] = joints
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)  # cameras are placed here
        self.renderer.update_scene(self.data, camera=S.WRIST_CAMERA)
        seg = self.renderer.render()
        ids = np.where(seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM), seg[..., 0], -1)
        return self.lut[ids + 1]

    def close(self) -> None:
        from so101_sim2real.sim.camera import close_renderer

        close_renderer(self.renderer)


def _soft(mask: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), BLUR_PX)


def _ious(sim: np.ndarray, real: np.ndarray, ids: list[int]) -> list[float]:
    out = []
    for c in ids:
        a, b = sim == c, coverage(real, c) >= 0.5
        union = (a | b).sum()
        out.append(float((a & b).sum() / union) if union else 1.0)
    return out


def fit_mount(views: list[AlignView], spec: Spec, guess: RigGeometry) -> AlignFit:
    """The mount that makes the twin's class maps agree with the real ones."""
    from scipy.optimize import minimize

    renderer = MaskRenderer(spec, guess)
    ids = [renderer.classes.index(c) for c in CLASSES]
    real_soft = [{c: _soft(coverage(v.seg_ids, c)) for c in ids} for v in views]
    R0, t0 = euler_to_matrix(guess.mount_euler), np.array(guess.mount_pos)
    count = [0]

    def mount(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return R0 @ rotvec_to_matrix(np.radians(p[3:])), t0 + p[:3] / 1000  # p: mm, then degrees

    def cost(p: np.ndarray) -> float:
        count[0] += 1
        renderer.set_mount(*mount(p))
        score = []
        for view, soft in zip(views, real_soft, strict=True):
            sim = renderer.render(view.joints)
            for c in ids:
                a, b = _soft(sim == c), soft[c]
                union = np.maximum(a, b).sum()
                score.append(float(np.minimum(a, b).sum() / union) if union else 1.0)
        return 1.0 - float(np.mean(score))

    def hard(p: np.ndarray) -> dict[str, float]:
        renderer.set_mount(*mount(p))
        per_view = [_ious(renderer.render(v.joints), v.seg_ids, ids) for v in views]
        return dict(zip(CLASSES, np.mean(per_view, axis=0).tolist(), strict=True))

    try:
        best = np.zeros(6)
        before = hard(best)
        for step, evaluations in STEPS:
            simplex = np.vstack([best] + [best + step * np.eye(6)[i] for i in range(6)])
            best = minimize(cost, best, method="Nelder-Mead",
                            options={"initial_simplex": simplex, "xatol": 0.05, "fatol": 1e-6,
                                     "maxfev": evaluations}).x
        after = hard(best)
    finally:
        renderer.close()
    R, t = mount(best)
    rig = replace(guess, mount_pos=tuple(t), mount_euler=matrix_to_euler(R), fitted=dict(guess.fitted))
    rig.fitted["align"] = {"views": len(views), "classes": list(CLASSES),
                           "iou_before": {k: round(v, 4) for k, v in before.items()},
                           "iou_after": {k: round(v, 4) for k, v in after.items()}}
    return AlignFit(rig, before, after, count[0])


def capture_align_views(robot: Robot, segment: Callable[[], np.ndarray], poses: list[np.ndarray],
                        period_s: float, say: Callable[[str], None] = print, settle_s: float = 0.5) -> list[AlignView]:
    """Visit each pose (clamped steps, torque off at the end) and keep the joints and the class map."""
    from so101_sim2real.control.arm_episodes import ArmEpisodes
    from so101_sim2real.control.safety import torque_guard

    views = []
    margin = 0.02  # a goal at the very end of a range may never be reached exactly
    poses = [np.clip(q, robot.limits.low + margin, robot.limits.high - margin) for q in poses]
    with torque_guard(robot):
        mover = ArmEpisodes(robot, poses[0], period_s)
        for number, pose in enumerate(poses, start=1):
            mover.move_to(pose)
            time.sleep(settle_s)
            joints = np.mean([robot.read().position for _ in range(5)], axis=0)
            segment()  # a frame taken while moving
            views.append(AlignView(joints, segment()))
            say(f"pose {number}/{len(poses)}")
    return views
