"""Episodes on a real arm: no simulator to reset the world or to score it.

A reset drives the arm to the sim's start pose (the pose an episode starts from with
the cube at its nominal place) through the robot's own clamp, a bounded step per tick,
then waits for the operator to set the scene when a terminal is attached. Steps earn
no reward and never end an episode: the step limit or Ctrl-C does. Scoring comes with
the reward classifier (``so101 hilserl``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from so101_sim2real.errors import So101Error
from so101_sim2real.interfaces import JOINT_NAMES, Robot, StepResult

REACHED_RAD = 0.03  # every joint this close to the start pose counts as there


class ArmEpisodes:
    """The :class:`~so101_sim2real.interfaces.Task` of a real arm, driven by a person."""

    def __init__(self, robot: Robot, start_pose: np.ndarray, period_s: float,
                 wait_for_operator: Callable[[str], None] | None = None, timeout_s: float = 15.0):
        self.robot, self.start_pose, self.period_s = robot, np.asarray(start_pose, dtype=np.float64), period_s
        self.wait_for_operator, self.timeout_s = wait_for_operator, timeout_s
        self.episodes = 0
        limits = robot.limits
        outside = np.flatnonzero((self.start_pose < limits.low) | (self.start_pose > limits.high))
        if outside.size:
            j = int(outside[0])
            raise So101Error(f"the sim's start pose puts {JOINT_NAMES[j]} at {self.start_pose[j]:.2f} rad, outside "
                             f"this arm's calibrated range [{limits.low[j]:.2f}, {limits.high[j]:.2f}]: a sign or "
                             f"offset in the calibration is off, or the range was not swept fully (so101 calibrate "
                             f"joints)")

    def move_to_start(self) -> float:
        """Drive the joints to the start pose at the robot's step limit; the seconds it took."""
        t0 = time.monotonic()
        while True:
            position = self.robot.read().position
            error = np.abs(self.start_pose - position)
            if error.max() < REACHED_RAD:
                return time.monotonic() - t0
            if time.monotonic() - t0 > self.timeout_s:
                worst = int(np.argmax(error))
                raise So101Error(f"the arm did not reach the start pose in {self.timeout_s:.0f} s (joint {worst} is "
                                 f"{error[worst]:.2f} rad off): is something in the way, or a servo unpowered?")
            self.robot.write(self.start_pose)  # the robot clamps to its limits and max step per tick
            time.sleep(self.period_s)

    def reset(self, seed: int | None = None) -> dict:
        seconds = self.move_to_start()
        self.episodes += 1
        if self.wait_for_operator is not None:
            self.wait_for_operator(f"episode {self.episodes}: arm at the start pose; place the cube, then press Enter")
        return {"seconds_to_start": seconds}

    def evaluate(self, action: np.ndarray) -> StepResult:
        return StepResult(reward=0.0, terminated=False, truncated=False)
