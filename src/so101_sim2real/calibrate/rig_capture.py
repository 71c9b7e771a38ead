"""Driving the arm through the calibration poses and taking a picture of the board at each.

The arm moves at its own step limit (the follower clamps every goal to its ranges and to
a maximum step per tick), settles, and its joints are read a few times and averaged; the
camera's next two frames are read and the second kept (the first may be from the move).
Torque goes off however this ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from so101_sim2real.calibrate.hand_eye import RigView
from so101_sim2real.control.arm_episodes import ArmEpisodes
from so101_sim2real.control.safety import torque_guard
from so101_sim2real.geometry.board import BoardSpec, detector
from so101_sim2real.interfaces import Camera, Robot

SETTLE_S = 0.5
READS = 5


@dataclass
class Captured:
    """The views with the board in them, a picture per pose, and the poses where it was not found."""

    views: list[RigView] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)  # RGB, one per view
    missed: list[int] = field(default_factory=list)  # pose numbers (1-based) without the board


def capture_views(robot: Robot, camera: Camera, board: BoardSpec, poses: list[np.ndarray], period_s: float,
                  say: Callable[[str], None] = print, settle_s: float = SETTLE_S,
                  timeout_s: float = 20.0) -> Captured:
    """Visit each pose and look for the board; returns what was seen."""
    find = detector(board)
    out = Captured()
    with torque_guard(robot):
        mover = ArmEpisodes(robot, poses[0], period_s, timeout_s=timeout_s)
        for number, pose in enumerate(poses, start=1):
            mover.move_to(pose)
            time.sleep(settle_s)
            joints = np.mean([robot.read().position for _ in range(READS)], axis=0)
            camera.read()
            rgb = camera.read().rgb
            found = find(rgb)
            if found is None:
                out.missed.append(number)
                say(f"pose {number}/{len(poses)}: the board is not in view")
                continue
            out.views.append(RigView(joints, found.image_points.astype(np.float64),
                                     found.object_points.astype(np.float64)))
            out.images.append(rgb)
            say(f"pose {number}/{len(poses)}: {len(found.ids)} corners")
    return out
