"""A stand-in world's arm: the twin's, with a real arm's joint-level gaps between command and joint.

A command on the real SO-101 reaches the servos late (camera exposure, perception, the
bus), each servo turns its horn no faster than its top speed, the gears have play, and
the calibration's zero is not the joint's. The twin's arm has none of this. Here each
physics step of :meth:`StandInRobot.advance` walks a command through them, in that
order: the latency queue, the speed limit, the backlash. The position loop's softness
and the gripper's gains are in the scene (:mod:`~so101_sim2real.sim.standin_scene`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import Any

import numpy as np

from so101_sim2real.interfaces import JointState
from so101_sim2real.sim.robot import SimRobot
from so101_sim2real.sim.standin import StandIn, joint_array

ARM_GAPS = ("joint_offsets", "backlash", "max_speed", "latency")


class StandInRobot:
    """The twin's :class:`SimRobot` behind a stand-in's joint offsets, latency, top speed and backlash."""

    def __init__(self, inner: SimRobot, world: StandIn):
        self.inner = inner
        offsets, play, speed, latency = (world.get(name) for name in ARM_GAPS)
        joints = len(inner.read().position)
        self.offset = joint_array(offsets.deg) if offsets else np.zeros(joints)
        self.play = joint_array(play.deg) if play else np.zeros(joints)
        self.max_rate = np.deg2rad(speed.deg_s) if speed else np.inf  # rad/s
        self.delay_s = latency.ms / 1000.0 if latency else 0.0
        self._reset_state()

    def _reset_state(self) -> None:
        self._pending: deque[tuple[float, np.ndarray]] = deque()  # (when it reaches the servos, targets)
        self._commanded: np.ndarray | None = None  # the targets the servos have now
        self._goal: np.ndarray | None = None  # where each servo's speed limit lets it aim this step
        self._horn: np.ndarray | None = None  # past the gears' play: what the joint is driven to
        self._time = self.inner.data.time

    def _seen_reset(self) -> None:
        """The task reset the world (its time went back): no command from before it still travels."""
        if self.inner.data.time < self._time:
            self._reset_state()
        self._time = self.inner.data.time

    def read(self) -> JointState:
        self._seen_reset()
        state = self.inner.read()
        return replace(state, position=state.position + self.offset)

    def write(self, targets: np.ndarray) -> None:
        self._seen_reset()
        self._pending.append((self.inner.data.time + self.delay_s, np.asarray(targets, np.float64) - self.offset))

    def advance(self, period_s: float) -> None:
        self._seen_reset()
        dt = self.inner.model.opt.timestep
        for _ in range(max(1, round(period_s / dt))):
            self._step_command(dt)
            self.inner.advance(dt)
        self._time = self.inner.data.time

    def _step_command(self, dt: float) -> None:
        """One physics step of the command's way to the joint: arrive, ramp, take up the play."""
        now = self.inner.data.time
        while self._pending and self._pending[0][0] <= now + 1e-9:
            self._commanded = self._pending.popleft()[1]
        if self._commanded is None:
            return  # nothing has arrived yet: the servos hold what they had
        if self._goal is None:  # the first command: the servos start from where the joints are
            self._goal = self.inner.read().position.copy()
            self._horn = self._goal.copy()
        step = self.max_rate * dt
        self._goal = self._goal + np.clip(self._commanded - self._goal, -step, step)
        assert self._horn is not None  # set with the goal
        # the play operator: the output moves only once the input has taken up half the play either way
        self._horn = np.clip(self._horn, self._goal - self.play / 2, self._goal + self.play / 2)
        self.inner.write(self._horn)

    def __getattr__(self, name: str) -> Any:  # limits, torque, torque_enabled, close, model, data: the twin's
        return getattr(self.inner, name)
