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
from so101_sim2real.sim import scene as S
from so101_sim2real.sim.robot import SimRobot
from so101_sim2real.sim.standin import StandIn, joint_array

ARM_GAPS = ("joint_offsets", "backlash", "max_speed", "latency")


class CommandPath:
    """A command's way from the bus to the joints on a real arm: it arrives ``latency`` late, each
    servo turns no faster than its top speed, and the gears' play is taken up before the joint
    moves. :meth:`step` gives each physics step's actuator targets. A joint whose command is NaN
    is limp: its servo follows the joint (no jump when torque comes back)."""

    def __init__(self, world: StandIn, joints: int, with_latency: bool = True):
        play, speed, latency = world.get("backlash"), world.get("max_speed"), world.get("latency")
        self.play = joint_array(play.deg) if play else np.zeros(joints)
        self.max_rate = np.deg2rad(speed.deg_s) if speed else np.inf  # rad/s
        self.delay_s = latency.ms / 1000.0 if latency and with_latency else 0.0
        self.reset()

    def reset(self) -> None:
        """Nothing in flight, the servos where the joints are (a new episode)."""
        self._pending: deque[tuple[float, np.ndarray]] = deque()  # (when it reaches the servos, targets)
        self._commanded: np.ndarray | None = None  # the targets the servos have now
        self._goal: np.ndarray | None = None  # where each servo's speed limit lets it aim this step
        self._horn: np.ndarray | None = None  # past the gears' play: what the joint is driven to

    def send(self, now: float, targets: np.ndarray) -> None:
        """Targets leave the controller at ``now`` (sim seconds)."""
        self._pending.append((now + self.delay_s, np.array(targets, np.float64)))  # a copy: the caller's array moves on

    def step(self, now: float, dt: float, position: np.ndarray) -> np.ndarray | None:
        """The actuator targets for the physics step at ``now``; None before any command arrived."""
        while self._pending and self._pending[0][0] <= now + 1e-9:
            self._commanded = self._pending.popleft()[1]
        if self._commanded is None:
            return None  # nothing has arrived yet: the servos hold what they had
        if self._goal is None or self._horn is None:  # the first command: the servos start at the joints
            self._goal, self._horn = position.copy(), position.copy()
        limp = np.isnan(self._commanded)
        step = self.max_rate * dt
        goal = self._goal + np.clip(np.nan_to_num(self._commanded - self._goal), -step, step)
        # the play operator: the output moves only once the input has taken up half the play either way
        horn = np.clip(self._horn, goal - self.play / 2, goal + self.play / 2)
        self._goal, self._horn = np.where(limp, position, goal), np.where(limp, position, horn)
        return self._horn


class StandInRobot:
    """The twin's :class:`SimRobot` behind a stand-in's joint offsets, latency, top speed and backlash."""

    def __init__(self, inner: SimRobot, world: StandIn):
        self.inner = inner
        offsets = world.get("joint_offsets")
        joints = len(inner.read().position)
        self.offset = joint_array(offsets.deg) if offsets else np.zeros(joints)
        self.path = CommandPath(world, joints)
        self._time = inner.data.time
        model = inner.model
        self._qpos = np.array([model.jnt_qposadr[model.joint(j).id] for j in S.JOINTS])  # read every physics step

    def _seen_reset(self) -> None:
        """The task reset the world (its time went back): no command from before it still travels."""
        if self.inner.data.time < self._time:
            self.path.reset()
        self._time = self.inner.data.time

    def read(self) -> JointState:
        self._seen_reset()
        state = self.inner.read()
        return replace(state, position=state.position + self.offset)

    def write(self, targets: np.ndarray) -> None:
        self._seen_reset()
        self.path.send(self.inner.data.time, np.asarray(targets, np.float64) - self.offset)

    def advance(self, period_s: float) -> None:
        self._seen_reset()
        dt = self.inner.model.opt.timestep
        for _ in range(max(1, round(period_s / dt))):
            targets = self.path.step(self.inner.data.time, dt, self.inner.data.qpos[self._qpos])
            if targets is not None:
                self.inner.write(targets)
            self.inner.advance(dt)
        self._time = self.inner.data.time

    def __getattr__(self, name: str) -> Any:  # limits, torque, torque_enabled, close, model, data: the twin's
        return getattr(self.inner, name)
