"""Episodes on a real arm: no simulator to reset the world or to score it.

A reset drives the arm to the sim's start pose through the robot's own clamp, a bounded
step per tick, then waits for the operator to set the scene when a terminal is
attached. Given ``starts``, episode ``seed`` starts where the twin's reset with that seed
does (the same jitter as in training: the cube's place varies and the arm starts above
it), and the operator is told where to put the cube; otherwise every episode starts
from the nominal pose. A reset that stops making progress (something in the way, a
servo without power) or runs out of time stops with a message. Steps earn
no reward and never end an episode: the step limit or Ctrl-C does. Scoring comes with
the reward classifier (``so101 hilserl``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from so101_sim2real.errors import So101Error
from so101_sim2real.interfaces import JOINT_NAMES, Robot, StepResult

REACHED_RAD = 0.03  # every joint this close to the start pose counts as there
STUCK_S, PROGRESS_RAD = 2.0, 0.01  # no joint got this much closer for this long: stuck


class ArmEpisodes:
    """The :class:`~so101_sim2real.interfaces.Task` of a real arm, driven by a person."""

    def __init__(self, robot: Robot, start_pose: np.ndarray, period_s: float,
                 wait_for_operator: Callable[[str], None] | None = None, timeout_s: float = 15.0,
                 starts: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None,
                 place_cube: Callable[[int, tuple[float, float] | None], None] | None = None):
        self.robot, self.start_pose, self.period_s = robot, np.asarray(start_pose, dtype=np.float64), period_s
        self.wait_for_operator, self.timeout_s, self.starts = wait_for_operator, timeout_s, starts
        self.place_cube = place_cube  # an emulated arm's person: (episode, cube xy or None) -> the scene set
        self.episodes = 0
        self._check_in_range(self.start_pose)

    def _check_in_range(self, pose: np.ndarray) -> None:
        limits = self.robot.limits
        outside = np.flatnonzero((pose < limits.low) | (pose > limits.high))
        if outside.size:
            j = int(outside[0])
            raise So101Error(f"the sim's start pose puts {JOINT_NAMES[j]} at {pose[j]:.2f} rad, outside "
                             f"this arm's calibrated range [{limits.low[j]:.2f}, {limits.high[j]:.2f}]: a sign or "
                             f"offset in the calibration is off, or the range was not swept fully (so101 calibrate "
                             f"joints)")

    def move_to(self, pose: np.ndarray) -> float:
        """Drive the joints to ``pose`` at the robot's step limit; the seconds it took."""
        t0 = time.monotonic()
        best, since = np.inf, t0
        while True:
            position = self.robot.read().position
            error = np.abs(pose - position)
            now = time.monotonic()
            if error.max() < REACHED_RAD:
                return now - t0
            worst = int(np.argmax(error))
            if error.max() < best - PROGRESS_RAD:
                best, since = error.max(), now
            elif now - since > STUCK_S:
                raise So101Error(f"the arm stopped moving toward the start pose ({JOINT_NAMES[worst]} is "
                                 f"{error[worst]:.2f} rad off and has not moved for {STUCK_S:.0f} s): is something "
                                 f"in the way, or a servo without power?")
            if now - t0 > self.timeout_s:
                raise So101Error(f"the arm did not reach the start pose in {self.timeout_s:.0f} s "
                                 f"({JOINT_NAMES[worst]} is {error[worst]:.2f} rad off)")
            self.robot.write(pose)  # the robot clamps to its limits and max step per tick
            time.sleep(self.period_s)

    def reset(self, seed: int | None = None) -> dict:
        place = ""
        pose, info = self.start_pose, dict[str, Any]()
        cube_xy: tuple[float, float] | None = None
        if self.starts is not None and seed is not None:
            pose, cube = self.starts(seed)
            self._check_in_range(pose)
            info["cube_xy"] = [float(v) for v in cube]
            cube_xy = (float(cube[0]), float(cube[1]))
            place = f" at x {cube[0] * 100:.1f} cm, y {cube[1] * 100:.1f} cm from the arm's base"
        info["seconds_to_start"] = self.move_to(pose)
        self.episodes += 1
        if self.place_cube is not None:
            self.place_cube(self.episodes, cube_xy)
        if self.wait_for_operator is not None:
            self.wait_for_operator(f"episode {self.episodes}: arm at the start pose; place the cube{place}, then "
                                   f"press Enter")
        return info

    def evaluate(self, action: np.ndarray) -> StepResult:
        return StepResult(reward=0.0, terminated=False, truncated=False)
