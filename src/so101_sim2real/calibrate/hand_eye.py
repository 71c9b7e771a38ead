"""Hand-eye calibration with joint-offset refinement: the camera's mount and the joints' zeros
fitted together to what the wrist camera sees of a board lying at a known place.

Each view is the arm's joint reading and the board corners found in the wrist camera's
picture. The model of a view: the MJCF's forward kinematics of (reading + offsets) puts the
``gripper`` body in the world, the mount puts the camera in the gripper, the camera model
projects the board's corners (at their known world positions) to pixels. A least-squares
fit over every corner of every view finds the mount (position and a small rotation from the
start guess) and the offsets of the joints that can be told apart from the mount:
shoulder_pan, shoulder_lift, elbow_flex, wrist_flex. A wrist_roll offset turns the camera
about the roll axis exactly as a turned mount does, in every pose: it cannot be told from the
mount and stays 0 (its effect lands in the mount). The gripper's offset does not move the camera.

Frames: MuJoCo cameras look down their -z with y up; OpenCV's down +z with y down. The mount
is stored as MuJoCo stores it (position, XML euler 'xyz' in the gripper body).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import mujoco
import numpy as np

from so101_sim2real.arm import JOINT_NAMES
from so101_sim2real.errors import So101Error
from so101_sim2real.geometry.camera_model import CameraModel
from so101_sim2real.geometry.rig_file import RigGeometry
from so101_sim2real.sim import scene as S
from so101_sim2real.sim.table_board import TableBoard

FIT_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex")
MIN_VIEWS = 6
OUTLIER_PX, OUTLIER_TIMES = 1.0, 3.0  # a view this far off (px, and times the median) is refitted without
_MJ_TO_CV = np.diag([1.0, -1.0, -1.0])


@dataclass
class RigView:
    """One pose: the joints as the arm's calibration reads them, and the board corners it saw."""

    joints: np.ndarray  # (6,) sim radians
    image_points: np.ndarray  # (N, 2) px
    object_points: np.ndarray  # (N, 3) board frame, mm (as geometry.board gives them)


@dataclass
class RigFit:
    """The fitted geometry, its 1-sigma uncertainties and the residuals before and after."""

    rig: RigGeometry
    sigma_mount_mm: np.ndarray  # (3,)
    sigma_mount_deg: np.ndarray  # (3,) about the camera's own axes
    sigma_offsets_deg: dict[str, float]
    rms_before_px: list[float]  # per view kept
    rms_after_px: list[float]  # per view kept
    notes: list[str] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)  # views (1-based) left out as outliers

    @property
    def rms_px(self) -> float:
        return float(np.sqrt(np.mean(np.square(self.rms_after_px))))


def euler_to_matrix(euler: tuple[float, float, float]) -> np.ndarray:
    """MuJoCo's XML euler (sequence 'xyz', rotating axes) as a rotation matrix."""
    quat, mat = np.zeros(4), np.zeros(9)
    mujoco.mju_euler2Quat(quat, np.asarray(euler, np.float64), "xyz")
    mujoco.mju_quat2Mat(mat, quat)
    return mat.reshape(3, 3)


def matrix_to_euler(R: np.ndarray) -> tuple[float, float, float]:
    """The inverse of :func:`euler_to_matrix`: R = Rx(a) Ry(b) Rz(c)."""
    b = math.asin(max(-1.0, min(1.0, R[0, 2])))
    a = math.atan2(-R[1, 2], R[2, 2])
    c = math.atan2(-R[0, 1], R[0, 0])
    return a, b, c


def rotvec_to_matrix(v: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    k = np.asarray(v) / angle
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


class ArmGeometry:
    """Forward kinematics of the MJCF to the ``gripper`` body: where the camera's parent is."""

    def __init__(self, model: mujoco.MjModel | None = None):
        self.model = model if model is not None else S.build_model()
        self.data = mujoco.MjData(self.model)
        self.body = self.model.body(S.GRIPPER_BODY).id
        self.qadr = np.array([self.model.jnt_qposadr[self.model.joint(j).id] for j in S.JOINTS])

    def gripper_pose(self, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(R, t): the gripper body's orientation and position in the world."""
        self.data.qpos[self.qadr] = joints
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.xmat[self.body].reshape(3, 3).copy(), self.data.xpos[self.body].copy()

    def camera_pose(self, joints: np.ndarray, mount_R: np.ndarray, mount_t: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(R, t) of the camera in OpenCV axes, in the world: x_world = R @ x_cam + t."""
        Rg, tg = self.gripper_pose(joints)
        return Rg @ mount_R @ _MJ_TO_CV, Rg @ mount_t + tg


def project_board(arm: ArmGeometry, camera: CameraModel, board: TableBoard, joints: np.ndarray,
                  object_points_mm: np.ndarray, mount_R: np.ndarray, mount_t: np.ndarray) -> np.ndarray:
    """Pixels (N, 2) where the camera on the arm sees the board's corners; NaN behind it."""
    R, t = arm.camera_pose(joints, mount_R, mount_t)
    world = board.to_world(np.asarray(object_points_mm, np.float64) / 1000.0)
    return camera.project((world - t) @ R)


class _Problem:
    """The parameter vector: mount position change (m, 3), mount rotation change (rotation vector
    in the camera mount's frame, 3), then one offset (rad) per fitted joint."""

    def __init__(self, views: list[RigView], camera: CameraModel, board: TableBoard, start: RigGeometry,
                 arm: ArmGeometry, joints: tuple[str, ...]):
        self.views, self.camera, self.board, self.start, self.arm = views, camera, board, start, arm
        self.index = [JOINT_NAMES.index(j) for j in joints]
        self.R0, self.t0 = euler_to_matrix(start.mount_euler), np.array(start.mount_pos)

    def unpack(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        offsets = self.start.joint_offsets_rad.copy()
        offsets[self.index] += p[6:]
        return self.R0 @ rotvec_to_matrix(p[3:6]), self.t0 + p[:3], offsets

    def residuals(self, p: np.ndarray) -> np.ndarray:
        R, t, offsets = self.unpack(p)
        out = [project_board(self.arm, self.camera, self.board, v.joints + offsets, v.object_points, R, t)
               - v.image_points for v in self.views]
        r = np.concatenate(out).reshape(-1)
        return np.nan_to_num(r, nan=1e3)  # a corner behind the camera: far off, never a crash

    def per_view_rms(self, p: np.ndarray) -> list[float]:
        r = self.residuals(p).reshape(-1, 2)
        rms, k = [], 0
        for v in self.views:
            n = len(v.image_points)
            rms.append(float(np.sqrt(np.mean(np.sum(r[k:k + n] ** 2, axis=1)))))
            k += n
        return rms


def fit_rig(views: list[RigView], camera: CameraModel, board: TableBoard, start: RigGeometry,
            joints: tuple[str, ...] = FIT_JOINTS, arm: ArmGeometry | None = None) -> RigFit:
    """The mount and joint offsets that make the arm's kinematics agree with the camera's views."""
    from scipy.optimize import least_squares

    if len(views) < MIN_VIEWS:
        raise So101Error(f"the board was seen in {len(views)} pose(s); the fit needs at least {MIN_VIEWS}: "
                         f"check that the board lies where @board_at says and is lit evenly")
    arm = arm or ArmGeometry()
    problem = _Problem(views, camera, board, start, arm, joints)
    p0 = np.zeros(6 + len(joints))
    scale = np.array([1e-3] * 3 + [1e-2] * 3 + [1e-2] * len(joints))
    solution = least_squares(problem.residuals, p0, x_scale=scale, method="lm", xtol=1e-12, ftol=1e-12)
    rms = np.array(problem.per_view_rms(solution.x))
    keep = rms <= max(OUTLIER_PX, OUTLIER_TIMES * float(np.median(rms)))
    dropped = [int(i) + 1 for i in np.flatnonzero(~keep)]
    if dropped and keep.sum() >= MIN_VIEWS:  # a misread corner or a jaw across the board: refit without it
        views = [v for v, k in zip(views, keep, strict=True) if k]
        problem = _Problem(views, camera, board, start, arm, joints)
        solution = least_squares(problem.residuals, p0, x_scale=scale, method="lm", xtol=1e-12, ftol=1e-12)
    else:
        dropped = []
    R, t, offsets = problem.unpack(solution.x)
    rig = replace(start, mount_pos=tuple(t), mount_euler=matrix_to_euler(R), joint_offsets_rad=offsets,
                  calibrated=True, fitted=dict(start.fitted))
    sigma = _sigma(solution.jac, solution.fun, len(p0))
    fit = RigFit(rig, sigma[:3] * 1000, np.degrees(sigma[3:6]),
                 {j: float(np.degrees(s)) for j, s in zip(joints, sigma[6:], strict=True)},
                 problem.per_view_rms(p0), problem.per_view_rms(solution.x))
    rig.fitted["rig"] = {"views": len(views), "corners": int(sum(len(v.image_points) for v in views)),
                         "rms_px": round(fit.rms_px, 4), "joints_fitted": list(joints),
                         "board_origin_xy_m": [float(v) for v in board.origin_xy],
                         "board_yaw_deg": round(math.degrees(board.yaw_rad), 3),
                         "sigma_mount_mm": [round(float(v), 3) for v in fit.sigma_mount_mm],
                         "sigma_mount_deg": [round(float(v), 3) for v in fit.sigma_mount_deg],
                         "sigma_offsets_deg": {j: round(v, 3) for j, v in fit.sigma_offsets_deg.items()}}
    fit.dropped = dropped
    rig.fitted["rig"]["views_left_out"] = dropped
    if dropped:
        fit.notes.append(f"left out as outliers: view(s) {', '.join(map(str, dropped))}")
    if not solution.success:
        fit.notes.append(f"the fit stopped without converging: {solution.message}")
    return fit


def _sigma(jac: np.ndarray, residuals: np.ndarray, n: int) -> np.ndarray:
    """1-sigma of each parameter from the Gauss-Newton covariance, scaled by the residual variance."""
    dof = max(1, len(residuals) - n)
    try:
        cov = np.linalg.inv(jac.T @ jac) * float(residuals @ residuals) / dof
    except np.linalg.LinAlgError:
        return np.full(n, np.inf)
    return np.sqrt(np.clip(np.diag(cov), 0, None))
