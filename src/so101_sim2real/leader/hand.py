"""A scripted hand on an emulated leader arm: the twin's stand-in for a person taking over.

At a given step of an episode the hand grabs the leader (the emulated servos then go
where the hand puts them, as a person overpowers the leader's low-gain motors) and
moves it the way the scripted expert would move an arm: the expert, looking at the
leader's TCP, steps a target at most 2 cm a tick toward the cube, grasp point and lift,
and the hand puts the leader's TCP on that target and its gripper where the expert
says. The follower, driven by the leader's pose, trails it. The hand lets go once the
cube is lifted or after a number of steps. The leader intervener sees none of this: it
only reads the leader, exactly as on hardware.

At each episode's start the leader is placed where the follower is, as a leader that
followed it through the reset would be.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from so101_sim2real.arm import JOINT_NAMES
from so101_sim2real.hardware.emulator import BusEmulator
from so101_sim2real.hardware.joint_calibration import ArmCalibration
from so101_sim2real.interfaces import JointState
from so101_sim2real.kinematics import Kinematics
from so101_sim2real.sim.scripted import ScriptedExpert
from so101_sim2real.spec import ActionSpec

if TYPE_CHECKING:
    from so101_sim2real.hardware.so101 import SO101Leader


def hold_leader(emulator: BusEmulator, calibration: ArmCalibration, q: np.ndarray) -> None:
    """A hand holds the emulated leader at ``q`` (sim radians): its servos go where the hand puts them."""
    raw = calibration.to_raw(q)
    with emulator.lock:
        for joint in JOINT_NAMES:
            servo = emulator.servo(calibration.motors[joint].id)
            servo.grab(raw[joint] + servo.homing_offset)


def release_leader(emulator: BusEmulator, calibration: ArmCalibration) -> None:
    """The hand lets go: the leader's own motors move it again."""
    with emulator.lock:
        for joint in JOINT_NAMES:
            emulator.servo(calibration.motors[joint].id).let_go()


@dataclass(frozen=True)
class HandConfig:
    """When the hand helps, and for how long."""

    grab_at_step: int = 10  # the episode step at which it grabs the leader
    help_prob: float = 1.0  # chance of helping in the first episode ...
    prob_decay: float = 0.9  # ... times this per episode
    max_steps: int = 80  # lets go after this many steps
    release_height_m: float = 0.05  # or once the cube is this high


class ScriptedLeaderHand:
    """Moves an emulated leader arm during an episode; ``step`` runs once per control tick."""

    def __init__(self, emulator: BusEmulator, calibration: ArmCalibration, kinematics: Kinematics,
                 action: ActionSpec, expert: ScriptedExpert, follower: Callable[[], np.ndarray],
                 cfg: HandConfig | None = None, seed: int = 0):
        self.emulator, self.cal, self.kinematics, self.action = emulator, calibration, kinematics, action
        self.expert, self.follower, self.cfg = expert, follower, cfg or HandConfig()
        self.rng = np.random.default_rng(seed)
        self.episode, self.step_index, self.holding, self.done, self.helps = -1, 0, False, False, False
        self.grabs = 0
        self._pose: np.ndarray | None = None
        self._target = np.zeros(3)

    def reset(self) -> None:
        """A new episode: the leader where the follower is; decide whether to help in it."""
        self.episode += 1
        self.step_index, self.done = 0, False
        self.helps = self.rng.random() < self.cfg.help_prob * self.cfg.prob_decay**self.episode
        self._hold(np.asarray(self.follower(), dtype=np.float64))
        self.holding = True
        self._let_go()

    def step(self, leader_q: np.ndarray) -> None:
        """One tick: grab, guide, or let go (``leader_q``: the leader's joints now, sim radians)."""
        self.step_index += 1
        cfg = self.cfg
        if not self.helps or self.done:
            return
        if not self.holding and self.step_index >= cfg.grab_at_step:
            self.holding, self._pose = True, np.asarray(leader_q, dtype=np.float64).copy()
            self._target = self.kinematics.fk(self._pose[:-1])[0]
            self.grabs += 1
            self.expert.reset()
        if not self.holding:
            return
        assert self._pose is not None  # taken as the hand grabbed
        lifted = self.expert.task.cube_pos()[2] > cfg.release_height_m and self.expert.phase == "lift"
        if lifted or self.step_index - cfg.grab_at_step >= cfg.max_steps:
            self.done = True
            self._let_go()
            return
        tcp = self.kinematics.fk(self._pose[:-1])[0]
        a = self.expert.act(tcp, self._target)
        self._target = self._target + np.clip(a[:3], -1.0, 1.0) * self.action.xyz_scale_m
        arm = self._pose[:-1]
        for _ in range(8):  # a hand puts the TCP where it wants it, not one damped IK step toward it
            arm = self.kinematics.ik(arm, self._target)
        self._pose = np.append(arm, self.action.gripper.to_rad(a[3]))
        self._hold(self._pose)

    def _hold(self, q: np.ndarray) -> None:
        hold_leader(self.emulator, self.cal, q)

    def _let_go(self) -> None:
        if self.holding:
            release_leader(self.emulator, self.cal)
        self.holding = False


class _LeaderWithAHand:
    """A leader arm with something on it that acts when the session reads it; the rest is the leader's."""

    def __init__(self, leader: SO101Leader):
        self.leader = leader

    @property
    def goal(self) -> np.ndarray | None:
        return self.leader.goal

    def follow(self, position: np.ndarray) -> None:
        self.leader.follow(position)

    def limp(self) -> None:
        self.leader.limp()


class HandOnLeader(_LeaderWithAHand):
    """A leader arm with the scripted hand on it: reading it lets the hand act first."""

    def __init__(self, leader: SO101Leader, hand: ScriptedLeaderHand):
        super().__init__(leader)
        self.hand = hand

    def reset(self) -> None:
        self.hand.reset()

    def read(self) -> JointState:
        self.hand.step(self.leader.read().position)
        return self.leader.read()
