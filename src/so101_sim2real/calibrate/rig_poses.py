"""The poses ``so101 calibrate rig`` drives the arm through: varied, safe, and each seeing the board.

Candidates are drawn from the arm's calibrated joint ranges (shrunk away from the ends) and
kept when, by the current guess of the geometry, the camera sees most of the board from
above at a fair distance and the gripper stays well clear of the table. From those, a
varied set is picked (each new pose the farthest in joint space from the ones taken,
wrist roll included, since the fit needs the wrist turned to tell its offsets from the
mount), then ordered so that each move is short and the straight joint-space path between
two poses keeps the gripper above the table too.
"""

from __future__ import annotations

import math

import numpy as np

from so101_sim2real.arm import JOINT_NAMES
from so101_sim2real.calibrate.hand_eye import ArmGeometry, euler_to_matrix, project_board
from so101_sim2real.errors import So101Error
from so101_sim2real.geometry.board import object_points
from so101_sim2real.geometry.camera_model import CameraModel
from so101_sim2real.geometry.rig_file import RigGeometry
from so101_sim2real.sim.table_board import TableBoard

MIN_GRIPPER_Z_M = 0.10  # the gripper body at each pose
MIN_PATH_Z_M = 0.06  # anywhere on the way between two poses
MIN_SEEN = 0.8  # of the board's corners inside the picture
MARGIN = 0.05  # of the picture, kept free at each side
GRIPPER_RAD = 0.0  # closed enough to keep the jaw out of the picture's middle


def _ranges(limits: np.ndarray, shrink: float = 0.12) -> np.ndarray:
    lo, hi = limits[:, 0], limits[:, 1]
    pad = (hi - lo) * shrink
    return np.column_stack([lo + pad, hi - pad])


def _sees_board(arm: ArmGeometry, camera: CameraModel, board: TableBoard, corners: np.ndarray, q: np.ndarray,
                mount_R: np.ndarray, mount_t: np.ndarray) -> bool:
    Rg, tg = arm.gripper_pose(q)
    if tg[2] < MIN_GRIPPER_Z_M:
        return False
    px = project_board(arm, camera, board, q, corners, mount_R, mount_t)
    h, w = camera.size
    inside = (np.isfinite(px).all(axis=1) & (px[:, 0] > MARGIN * w) & (px[:, 0] < (1 - MARGIN) * w)
              & (px[:, 1] > MARGIN * h) & (px[:, 1] < (1 - MARGIN) * h))
    return inside.mean() >= MIN_SEEN


def _path_clear(arm: ArmGeometry, a: np.ndarray, b: np.ndarray, samples: int = 12) -> bool:
    return all(arm.gripper_pose(a + (b - a) * s)[1][2] >= MIN_PATH_Z_M for s in np.linspace(0, 1, samples))


def rig_poses(limits: np.ndarray, camera: CameraModel, board: TableBoard, guess: RigGeometry, count: int = 12,
              seed: int = 0, candidates: int = 6000, arm: ArmGeometry | None = None,
              start: np.ndarray | None = None) -> list[np.ndarray]:
    """``count`` joint poses (6,) within ``limits`` ((6, 2) rad) that see the board, in driving order."""
    arm = arm or ArmGeometry()
    rng = np.random.default_rng(seed)
    box = _ranges(np.asarray(limits, np.float64))
    corners = object_points(board.board)
    mount_R, mount_t = euler_to_matrix(guess.mount_euler), np.array(guess.mount_pos)
    drawn = rng.uniform(box[:, 0], box[:, 1], size=(candidates, len(JOINT_NAMES)))
    drawn[:, -1] = np.clip(GRIPPER_RAD, box[-1, 0], box[-1, 1])
    good = [q for q in drawn if _sees_board(arm, camera, board, corners, q, mount_R, mount_t)]
    if len(good) < count:
        raise So101Error(f"only {len(good)} of {candidates} poses in this arm's ranges see the board from above: "
                         f"check @board_at (the board's place on the table) and the camera model")
    return _order(arm, _varied(np.array(good), count, box), start)


def _varied(good: np.ndarray, count: int, box: np.ndarray) -> list[np.ndarray]:
    """Farthest-point picks in joint space, scaled by each joint's range."""
    scaled = (good - box[:, 0]) / (box[:, 1] - box[:, 0])
    taken = [int(np.argmin(np.linalg.norm(scaled - scaled.mean(axis=0), axis=1)))]
    distance = np.linalg.norm(scaled - scaled[taken[0]], axis=1)
    while len(taken) < count:
        nxt = int(np.argmax(distance))
        taken.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(scaled - scaled[nxt], axis=1))
    return [good[i] for i in taken]


def _order(arm: ArmGeometry, poses: list[np.ndarray], start: np.ndarray | None) -> list[np.ndarray]:
    """Nearest next pose whose path is clear; a pose no clear path reaches is left out."""
    left, ordered = list(poses), []
    here = start if start is not None else left[0]
    while left:
        reachable = [i for i, q in enumerate(left) if _path_clear(arm, here, q)]
        if not reachable:
            break
        nxt = min(reachable, key=lambda i: float(np.abs(left[i] - here).max()))
        here = left.pop(nxt)
        ordered.append(here)
    return ordered


MIN_SQUARE_PX = 15.0  # the board's squares at least this wide in a view, for the detector to find it


def check_reach(table: TableBoard, guess: RigGeometry, limits: np.ndarray, count: int, seed: int) -> None:
    """Refuse, before the arm moves, a board that the poses the arm would visit cannot see well enough
    for the fit: fewer views than it needs whose squares look :data:`MIN_SQUARE_PX` wide (by the
    guessed geometry; the narrower side of a square, as the view foreshortens it).

    Set by rehearsals on the twin, 12 poses each (the board's middle out from the base: views where
    it was found / views predicted at 15 px or more): 0.25 m (the default): 11 / 12; 0.51 m: 7 /
    11; 0.56 m: 6 / 7; 0.60 m: 5 (too few) / 5; 0.78 m: 0 (after 22 s of posing) / 1. Any bound
    from 14 to 17 px tells the ones that fit from the ones that do not.
    """
    from so101_sim2real.calibrate.hand_eye import MIN_VIEWS

    arm = ArmGeometry()
    plan = rig_poses(limits, guess.camera, table, guess, count, seed, arm=arm)
    sizes = [_square_px(arm, guess, table, q) for q in plan]
    seen = sum(size >= MIN_SQUARE_PX for size in sizes)
    if seen < MIN_VIEWS:
        x, y = table.centre()[:2]
        raise So101Error(f"@board_at: the board's middle is {math.hypot(x, y):.2f} m from the arm's base; of the "
                         f"{len(plan)} poses the arm would visit, {seen} would see its squares at least "
                         f"{MIN_SQUARE_PX:.0f} px wide, and the fit needs {MIN_VIEWS}: put the board nearer (by "
                         f"default its middle is where the cube goes, 0.25 m out)")


def _square_px(arm: ArmGeometry, guess: RigGeometry, table: TableBoard, joints: np.ndarray) -> float:
    """How wide the board's squares look from ``joints`` (px, the median of the narrower side)."""
    cols, rows = table.board.squares
    gx, gy = np.meshgrid(np.arange(cols + 1), np.arange(rows + 1))
    grid = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], axis=1) * table.board.square_mm
    px = project_board(arm, guess.camera, table, joints, grid, euler_to_matrix(guess.mount_euler),
                       np.array(guess.mount_pos)).reshape(rows + 1, cols + 1, 2)
    across = np.linalg.norm(np.diff(px, axis=1), axis=2)
    down = np.linalg.norm(np.diff(px, axis=0), axis=2)
    size = min(float(np.median(across)), float(np.median(down)))
    return size if math.isfinite(size) else 0.0
