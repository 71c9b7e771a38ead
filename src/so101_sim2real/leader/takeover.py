"""Taking over with the leader arm: the person's hand, turned into the policy's own actions.

While the policy drives, the leader arm runs torque-on with low gains and follows the
follower, so a person can grab it at any moment. Grabbing it shows as a tracking error:
:class:`TakeoverDetector` starts an intervention when the error jumps and ends it when
it has settled (docs/reference.md section 6). Before a takeover the error is the
leader's distance from the goal it was last sent (where its motors put it unless a hand
holds it): measured against the follower instead, the leader's one-tick lag behind a
jerky policy looks like a hand. During a takeover it is the distance between the two
arms, which settles once the follower has caught up and the person holds still. During an
intervention the leader is limp and :func:`leader_action` turns its pose into the action
the policy would have had to output (an end-effector step in the sim's kinematics, over
the spec's step size, clipped to [-1, 1]; the gripper onto [-1, 1]); that action is
executed through the same controller and stored in the buffer. Space toggles control by
hand when the automatic detection is not wanted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from so101_sim2real.control.pilots import Observation
from so101_sim2real.interfaces import JointState
from so101_sim2real.kinematics import Kinematics
from so101_sim2real.spec import ActionSpec


class LeaderArm(Protocol):
    """What a takeover needs of the leader: an :class:`~so101_sim2real.hardware.so101.SO101Leader`, or
    one with a hand on it (:mod:`~so101_sim2real.leader.hand`). It may also have ``goal`` (where it was
    last sent) and ``reset()`` (a scripted hand's new episode)."""

    def read(self) -> JointState: ...

    def follow(self, position: np.ndarray) -> None: ...

    def limp(self) -> None: ...


class TakeoverKeys(Protocol):
    """The person's control toggle (:class:`~so101_sim2real.control.keys.OperatorKeys`)."""

    def toggled(self) -> bool: ...


@dataclass(frozen=True)
class TakeoverConfig:
    """When the person has the leader arm. Errors are the distance between the two arms'
    first five joints (gripper excluded), in degrees."""

    window_s: float = 0.4  # the release looks at this much history (4 ticks at 10 Hz)
    start_variance_deg2: float = 10.0  # variance of the last 2 errors above this: grabbed
    # ... or the leader held this far from the goal its motors were sent to: a hand that moves
    # it slowly never makes the error jump, but keeps it from where its motors would put it.
    start_error_deg: float = 8.0
    release_variance_deg2: float = 0.01  # variance of the whole window below this: let go (held still)
    # The start variance holds for ticks of this period (LeRobot's 10 Hz loop); a faster loop
    # sees smaller changes per tick, so it scales with (period / reference)^2: the same speed of
    # the hand. The release stays as it is: stillness is measured down to the encoder's
    # resolution (0.09 degrees a tick), which does not shrink with the period.
    reference_period_s: float = 0.1
    # After a reset or a release the leader's motors first bring it back to the follower, which
    # moves it as fast as a hand would: detection waits until it is this close, or this long.
    synced_deg: float = 5.0  # below start_error_deg
    sync_ticks: int = 25


class TakeoverDetector:
    """The tracking error's recent variance says whether a person is moving the leader.

    The error leaves the gripper out (a follower's gripper squeezing a cube never reaches
    the leader's), but an intervention does not end while the leader's gripper is still
    moving: a person holding the arm still to close the gripper has not let go.
    """

    def __init__(self, cfg: TakeoverConfig | None = None, period_s: float | None = None):
        self.cfg = cfg or TakeoverConfig()
        period = period_s or self.cfg.reference_period_s
        self.start = self.cfg.start_variance_deg2 * (period / self.cfg.reference_period_s) ** 2
        self.release = self.cfg.release_variance_deg2
        self.window = max(4, round(self.cfg.window_s / period))
        self.errors: deque[float] = deque(maxlen=self.window)
        self.grippers: deque[float] = deque(maxlen=self.window)
        self.active = False

    def reset(self) -> None:
        self.errors.clear()
        self.grippers.clear()
        self.active = False

    def rebase(self) -> None:
        """Forget the history but not the state: the error starts being measured another way."""
        self.errors.clear()
        self.grippers.clear()

    def update(self, error_deg: float, gripper_deg: float = 0.0) -> bool:
        """Add this tick's error (and the leader's gripper angle); True while an intervention lasts."""
        self.errors.append(float(error_deg))
        self.grippers.append(float(gripper_deg))
        recent, full = list(self.errors), len(self.errors) == self.window
        # only a growing error is a hand: one that falls is the motors catching up with their goal
        # (right after a release the leader lands on the follower within a tick or two)
        jumped = len(recent) >= 2 and recent[-1] > recent[-2] and np.var(recent[-2:]) > self.start
        if not self.active and (jumped or recent[-1] > self.cfg.start_error_deg):
            self.active = True
        elif self.active and full and np.var(recent) < self.release and np.var(self.grippers) < self.release:
            self.active = False
        return self.active


def tracking_error_deg(follower: np.ndarray, leader: np.ndarray) -> float:
    """Distance between the arms' first five joints, degrees."""
    return float(np.degrees(np.linalg.norm(np.asarray(follower)[:5] - np.asarray(leader)[:5])))


def gripper_action(spec: ActionSpec, gripper_rad: float) -> float:
    """The gripper joint angle as the action that commands it (the inverse of the spec's mapping)."""
    g = spec.gripper
    return float(np.clip(2.0 * (gripper_rad - g.low_rad) / (g.high_rad - g.low_rad) - 1.0, -1.0, 1.0))


def leader_action(leader_q: np.ndarray, ee_target: np.ndarray, kinematics: Kinematics, spec: ActionSpec
                  ) -> np.ndarray:
    """The action that moves the follower's end-effector target toward the leader's TCP.

    ``kinematics`` must read the pose from the joints given (``measured_joints``): the
    leader is not the simulated arm.
    """
    tcp, _ = kinematics.fk(np.asarray(leader_q, dtype=np.float64)[:len(kinematics.joints)])
    xyz = np.clip((tcp - np.asarray(ee_target)) / spec.xyz_scale_m, -1.0, 1.0)
    return np.append(xyz, gripper_action(spec, float(leader_q[-1]))).astype(np.float32)


class LeaderIntervener:
    """The leader arm behind the :class:`~so101_sim2real.control.interveners.Intervener` interface.

    ``leader`` is an :class:`~so101_sim2real.hardware.so101.SO101Leader` (``read``, ``follow``,
    ``limp``); ``keys`` (optional, :class:`~so101_sim2real.control.keys.OperatorKeys`) is asked
    each tick whether space was pressed: it toggles control by hand.
    """

    name = "leader"

    def __init__(self, leader: LeaderArm, kinematics: Kinematics, spec: ActionSpec, period_s: float,
                 cfg: TakeoverConfig | None = None, keys: TakeoverKeys | None = None):
        self.leader, self.kinematics, self.spec, self.keys = leader, kinematics, spec, keys
        self.cfg = cfg or TakeoverConfig()
        self.detector = TakeoverDetector(self.cfg, period_s)
        self.by_key = False  # space toggled control to the person
        self.in_control = False
        self.syncing = 0  # ticks spent bringing the leader back to the follower; -1: synced, detecting
        self.last_error_deg = 0.0
        self.last_leader_q: np.ndarray | None = None
        self.takeovers = 0

    def reset(self, episode: int) -> None:
        self.detector.reset()
        self.by_key = self.in_control = False
        self.syncing = 0
        if hasattr(self.leader, "reset"):  # an emulated leader's scripted hand starts its episode
            self.leader.reset()

    def act(self, obs: Observation, policy_action: np.ndarray) -> np.ndarray | None:
        if self.keys is not None and self.keys.toggled():
            self.by_key = not self.by_key
        self.last_leader_q = leader_q = self.leader.read().position
        goal = getattr(self.leader, "goal", None)
        reference = obs.joints.position if self.in_control or goal is None else goal
        self.last_error_deg = error = tracking_error_deg(reference, leader_q)
        if self.syncing >= 0:
            self.syncing += 1
            if error < self.cfg.synced_deg or self.syncing > self.cfg.sync_ticks:
                self.syncing = -1
                self.detector.reset()
        detected = self.syncing < 0 and self.detector.update(error, float(np.degrees(leader_q[-1])))
        person = detected or self.by_key
        if person and not self.in_control:
            self.leader.limp()  # the person's hand moves it now, not its motors
            self.detector.rebase()  # from now on the error is between the two arms
            self.takeovers += 1
        elif self.in_control and not person:
            self.syncing = 0  # released: the motors take it back to the follower before detecting again
        self.in_control = person
        if person:
            return leader_action(leader_q, obs.ee_target, self.kinematics, self.spec)
        # Follow the follower (re-synced at once after a release: the leader's motors pick up
        # from where it is and step toward the follower, clamped like any arm that moves).
        self.leader.follow(obs.joints.position)
        return None
