"""``so101 emulate --leader``: an emulated leader arm on its own pty, with an optional scripted hand.

The leader is built as ``--leader-port emulator`` builds it in a session (six STS3215s,
the twin's calibration, no homing offsets): the driver in the other process connects
it, writes its low gains and goals (it follows the follower) and turns it limp, exactly
as on a real leader. Its calibration is written to a file for ``--leader-calibration``.

A :class:`HandThread` plays a hand script (:mod:`~so101_sim2real.leader.hand_script`)
on the emulator's own clock: it waits until the leader first follows (its torque goes
on), then when each grab's trigger fires (its time, the session's episode and step as a
:class:`SessionClock` tells them, or the follower stalling short of the twin's cube)
holds the servos where it wants them (:meth:`~so101_sim2real.hardware.emulator.Servo.grab`,
stronger than the low-gain motors) and lets go after ``hold_s``. The other process sees
only a leader that moves.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from so101_sim2real.arm import JOINT_NAMES
from so101_sim2real.hardware.emulator import BusEmulator
from so101_sim2real.hardware.joint_calibration import ArmCalibration
from so101_sim2real.interfaces import JointState
from so101_sim2real.leader.hand import HandConfig, _LeaderWithAHand, hold_leader, release_leader
from so101_sim2real.leader.hand_script import Grab, Person

if TYPE_CHECKING:
    from so101_sim2real.control.twin_bus import TwinBridge
    from so101_sim2real.hardware.so101 import SO101Leader
    from so101_sim2real.kinematics import Kinematics
    from so101_sim2real.sim.task import LiftCubeTask
    from so101_sim2real.spec import ActionSpec

HAND_TICK_S = 0.02  # the hand acts 50 times a second, whatever the session's period
HAND_SPEED_DEG_S = 90.0  # a {JOINT: DEGREES} guide moves each joint this fast: a brisk hand
# A hand guiding toward the cube watches the follower, which runs at its own rate in another
# process: before the takeover is seen it pulls the leader at most LEAD_M ahead of it (far
# enough to be seen at any loop rate), after it it waits whenever the follower trails by
# more than FOLLOWER_LAG_M (so the grasp is the follower's, not only the leader's).
LEAD_M, FOLLOWER_LAG_M = 0.05, 0.01
CALIBRATION_NAME = "emulated_leader.json"
# A stall is no progress toward the cube: the follower's TCP coming PROGRESS_M closer restarts
# the count; a jump farther than RESET_JUMP_M within one hand tick is the world reset (a new
# episode), which restarts it too.
PROGRESS_M, RESET_JUMP_M = 0.01, 0.05
AIR_M = 0.03  # the follower's TCP this far from the cube's centre holds nothing between its fingers
# A person watches an episode whose steps advance: none for this long is the arm going home or the
# pause between episodes (a session steps at least every few hundred ms)
EPISODE_QUIET_S = 1.0


class SessionClock(Protocol):
    """Where the session that drives the follower is: told by that session, not guessed here."""

    def now(self) -> tuple[int, int] | None:
        """(episode, step): the episode 1-based, its steps so far; None before any episode."""


@dataclass(frozen=True)
class HandEvent:
    """What the hand did, seconds after the leader started following."""

    t_s: float
    kind: str  # "grab", "let go" or "skip"
    grab: int  # 1-based, as in the script
    why: str = ""  # the trigger of a grab, a let-go's or a skip's reason

    def __str__(self) -> str:
        return f"hand: {self.kind} {self.grab} at {self.t_s:.1f} s" + (f" ({self.why})" if self.why else "")


class _Still:
    """Hold the leader where it was grabbed."""

    def __init__(self, q: np.ndarray):
        self.pose = q.copy()

    def step(self, q: np.ndarray, limp: bool) -> np.ndarray | None:
        return self.pose


class _Joints:
    """Move some joints by given degrees, at a hand's speed, then hold."""

    def __init__(self, q: np.ndarray, offsets_deg: dict[str, float], ranges: np.ndarray):
        delta = np.array([np.radians(offsets_deg.get(j, 0.0)) for j in JOINT_NAMES])
        self.pose, self.goal = q.copy(), np.clip(q + delta, ranges[:, 0], ranges[:, 1])  # a hand stops at the end

    def step(self, q: np.ndarray, limp: bool) -> np.ndarray | None:
        reach = np.radians(HAND_SPEED_DEG_S) * HAND_TICK_S
        self.pose = self.pose + np.clip(self.goal - self.pose, -reach, reach)
        return self.pose


class _Cube:
    """The scripted expert's motion toward the twin's cube, as the in-process hand makes it
    (``leader/hand.py``); done (None) once the cube is lifted. A person's hand (``person``) moves at
    a share of the expert's pace with a drifting error, not at its optimum."""

    def __init__(self, q: np.ndarray, twin: TwinView, person: Person | None = None,
                 rng: np.random.Generator | None = None):
        from so101_sim2real.sim.scripted import ScriptedExpert

        self.twin, self.pose = twin, q.copy()
        self.expert = ScriptedExpert(twin.task)
        self.target = twin.kinematics.fk(self.pose[:-1])[0]
        self.person, self.rng = person, rng or np.random.default_rng(0)
        self.drift = np.zeros(3)  # the hand's error, metres: a random walk pulled back toward zero

    def step(self, q: np.ndarray, limp: bool) -> np.ndarray | None:
        twin, kin = self.twin, self.twin.kinematics
        with twin.lock:
            lifted = twin.task.cube_pos()[2] > HandConfig().release_height_m and self.expert.phase == "lift"
            follower = twin.task.qpos()[:6].copy()
        if lifted:
            return None
        tcp = kin.fk(self.pose[:-1])[0]
        if np.linalg.norm(kin.fk(follower[:-1])[0] - tcp) > (FOLLOWER_LAG_M if limp else LEAD_M):
            return self.pose
        with twin.lock:  # the expert reads the cube, which the physics thread moves
            a = self.expert.act(tcp, self.target)
        action = self.twin.action
        self.target = self.target + np.clip(a[:3], -1.0, 1.0) * action.xyz_scale_m * self._pace()
        arm = self.pose[:-1]
        for _ in range(8):  # a hand puts the TCP where it wants it, not one damped IK step toward it
            arm = kin.ik(arm, self.target + self.drift)
        self.pose = np.append(arm, action.gripper.to_rad(a[3]))
        return self.pose

    def _pace(self) -> float:
        """The share of the expert's step this tick, the person's drift moved on (1: the expert's hand)."""
        if self.person is None:
            return 1.0
        # an AR(1) walk: its steady spread is noise_m, and a hand's error lasts about ten of its ticks
        self.drift = 0.9 * self.drift + self.rng.normal(0.0, self.person.noise_m * np.sqrt(1 - 0.9**2), 3)
        return self.person.speed


class _Stall:
    """How long the follower has made no progress toward the twin's cube while the leader follows."""

    def __init__(self) -> None:
        self.best: float | None = None
        self.first: float | None = None
        self.last: float | None = None
        self.since = 0.0
        self.episode: int | None = None
        self.moved = False  # the world has changed since the hand began watching: a session runs
        self.closest: float | None = None  # the nearest the follower came in this watch (a person's "wrong")

    def seconds(self, t: float, distance: float, live: bool, episode: int | None) -> float:
        """Seconds without progress at ``t`` (``distance``: the follower's TCP to the cube;
        ``live``: the leader follows, nobody holds it, an episode runs as far as is known;
        ``episode``: the session's, when known)."""
        self.first = distance if self.first is None else self.first
        self.moved = self.moved or abs(distance - self.first) > PROGRESS_M
        jumped = self.last is not None and distance - self.last > RESET_JUMP_M
        self.last = distance
        # With no session clock, a follower that has never moved is a session still loading
        live = live and (episode is not None or self.moved)
        restart = not live or jumped or episode != self.episode or self.best is None
        self.closest = distance if restart or self.closest is None else min(self.closest, distance)
        if restart or self.best is None or distance < self.best - PROGRESS_M:
            self.best, self.since, self.episode = distance, t, episode
            return 0.0
        return t - self.since


@dataclass
class TwinView:
    """What a ``cube`` guide needs of the twin that runs in this process."""

    task: LiftCubeTask  # the twin the follower's servos drive
    lock: AbstractContextManager[Any]  # held while reading it: its physics runs in another thread
    kinematics: Kinematics
    action: ActionSpec  # the spec's: step size and gripper mapping

    def closed_on_air(self) -> bool:
        """The follower's gripper closed with the cube out of its fingers' reach: a grasp on nothing,
        which a watching person sees at once (the follower then lifts nothing and stalls late)."""
        with self.lock:
            closed = self.task.gripper_qpos() < self.task.cfg.closed_below_rad
        return closed and self.follower_to_cube_m() > AIR_M

    def follower_to_cube_m(self) -> float:
        """The follower's TCP to the cube, metres."""
        with self.lock:
            follower, cube = self.task.qpos()[:5].copy(), np.asarray(self.task.cube_pos(), dtype=float).copy()
        return float(np.linalg.norm(self.kinematics.fk(follower)[0] - cube))


class HandThread:
    """Plays the grabs of a hand script on an emulated leader, on its own 50 Hz clock.

    ``session`` says the session's episode and step (``episode`` grabs wait for it); ``twin``
    lets ``cube`` guides and ``stalled`` triggers see the twin; ``clock`` is the hand's time."""

    def __init__(self, emulator: BusEmulator, calibration: ArmCalibration, grabs: list[Grab],
                 twin: TwinView | None = None, clock: Callable[[], float] = time.monotonic,
                 session: SessionClock | None = None):
        if twin is None and any(g.guide == "cube" or g.when for g in grabs):
            raise ValueError("cube guides and stalled triggers need the twin")
        self.emulator, self.cal, self.grabs, self.twin, self.clock = emulator, calibration, grabs, twin, clock
        self.session = session
        self.started_at: float | None = None  # when the leader first followed
        self.events: list[HandEvent] = []
        self._next, self._until = 0, 0.0
        self._guide: _Still | _Joints | _Cube | None = None
        self._grabbed_in: int | None = None  # the session's episode the hand grabbed in, where known
        self._stall = _Stall()
        self._ranges = calibration.sim_ranges()
        person = next((g.person for g in grabs if g.person is not None), None)
        self._rng = np.random.default_rng(person.seed if person else 0)
        self._noticed_at: float | None = None  # a person noticed; they grab once their reaction time is up
        # the episode a person watches: its number, its last step and when that changed, their takeovers in it
        self._watch: dict[str, Any] = {"episode": None, "step": -1, "moved_at": 0.0, "takeovers": 0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-hand", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._let_go()

    @property
    def holding(self) -> bool:
        return self._guide is not None

    def _run(self) -> None:
        while not self._stop.wait(HAND_TICK_S):
            self.tick()

    def tick(self) -> None:
        """One step of the script: wait for the leader to follow, grab, guide, let go."""
        now = self.clock()
        if self.started_at is None:
            if self._following():
                self.started_at = now
            return
        t = now - self.started_at
        if self._guide is None:
            if self._next < len(self.grabs) and self._due(self.grabs[self._next], t):
                self._grab(t)
            return
        pose = self._guide.step(self._leader_q(), limp=not self._following())
        over = self._grabbed_in is not None and self._episode() != self._grabbed_in  # a person lets go at the end
        if pose is None or over or t >= self._until:
            self._let_go()
            why = "the cube is up" if pose is None else f"episode {self._grabbed_in} ended" if over else ""
            self.events.append(HandEvent(t, "let go", self._next + 1, why))
            if self.grabs[self._next].person is None:  # a person keeps watching; a scripted grab is spent
                self._next += 1
            self._stall = _Stall()  # the next stall is judged from here, not from before this grab
        else:
            self._hold(pose)

    def _episode(self) -> int | None:
        """The session's episode, where a session clock tells it."""
        where = self.session.now() if self.session is not None else None
        return None if where is None else where[0]

    def _due(self, grab: Grab, t: float) -> bool:
        """Whether ``grab``'s trigger fires now (a grab whose episode is over is skipped)."""
        if grab.at_s is not None:
            return t >= grab.at_s
        where = self.session.now() if self.session is not None else None
        if grab.when is not None:
            assert self.twin is not None and grab.stall_s is not None  # checked by __init__ and the script
            live = self._following() and (self.session is None or where is not None)
            episode = None if where is None else where[0]
            distance = self.twin.follower_to_cube_m()
            stalled = self._stall.seconds(t, distance, live, episode) >= grab.stall_s
            if grab.person is None:
                return stalled
            wrong = live and self._stall.closest is not None and distance > self._stall.closest + grab.person.wrong_m
            air = live and self.twin.closed_on_air()
            return self._person_due(grab.person, t, where, live and (stalled or wrong or air))
        if where is None:  # no episode yet: the session has not begun one (or not told it)
            return False
        assert grab.episode is not None and grab.step is not None  # the one trigger left: the session's step
        if where[0] > grab.episode:
            self.events.append(HandEvent(t, "skip", self._next + 1, f"episode {grab.episode} is over"))
            self._next += 1
            return False
        return where[0] == grab.episode and where[1] >= grab.step

    def _person_due(self, person: Person, t: float, where: tuple[int, int] | None, noticed: bool) -> bool:
        """A person's grab: what they noticed, once their reaction time is up, if they bother and have
        not taken over as often as they will this episode. They watch an episode that runs: its steps
        advance (not the arm going home after it, nor the pause before the next), and a new episode or a
        new session (its steps start over) is watched afresh."""
        watch = self._watch
        if where is None or where[0] != watch["episode"] or where[1] < watch["step"]:
            watch.update(episode=None if where is None else where[0], step=-1, takeovers=0)
            self._noticed_at = None
        if where is not None and where[1] != watch["step"]:
            watch.update(step=where[1], moved_at=t)
        running = where is not None and t - watch["moved_at"] < EPISODE_QUIET_S
        if self._noticed_at is not None:
            if not running:
                self._noticed_at = None  # the episode ended before they reached the leader
            elif t < self._noticed_at:
                return False
            else:
                self._noticed_at = None
                watch["takeovers"] += 1
                return True
        if not (noticed and running) or watch["takeovers"] >= person.per_episode:
            return False
        if self._rng.random() >= person.bother:  # they let it be: judged afresh from here
            self._stall = _Stall()
            return False
        self._noticed_at = t + self._rng.uniform(*person.react_ms) / 1000.0
        return False

    def _grab(self, t: float) -> None:
        grab, q = self.grabs[self._next], self._leader_q()
        if grab.guide == "cube":
            assert self.twin is not None  # checked by __init__
            self._guide = _Cube(q, self.twin, grab.person, self._rng)
        elif grab.guide == "still":
            self._guide = _Still(q)
        else:
            assert isinstance(grab.guide, dict)  # {JOINT: DEGREES}
            self._guide = _Joints(q, grab.guide, self._ranges)
        self._until, self._grabbed_in = t + grab.hold_s, self._episode()
        self._hold(self._guide.pose)
        self.events.append(HandEvent(t, "grab", self._next + 1, grab.trigger))

    def _following(self) -> bool:
        with self.emulator.lock:
            return any(s.torque for s in self.emulator.servos)

    def _leader_q(self) -> np.ndarray:
        """The leader's joints now (sim radians), from the shafts themselves."""
        raw = {}
        with self.emulator.lock:
            for joint in JOINT_NAMES:
                servo = self.emulator.servo(self.cal.motors[joint].id)
                servo.update()
                raw[joint] = round(servo.actual) - servo.homing_offset
        return self.cal.to_sim(raw)

    def _hold(self, q: np.ndarray) -> None:
        hold_leader(self.emulator, self.cal, q)

    def _let_go(self) -> None:
        if self._guide is None:
            return
        release_leader(self.emulator, self.cal)
        self._guide = None


class SessionSteps:
    """The session's episode and step as the in-process leader sees them (a :class:`SessionClock`):
    an episode begins at each reset, a step at each read; the hand's time is the control ticks
    times the period."""

    def __init__(self, period_s: Callable[[], float]):
        self.period_s = period_s  # read each tick: an arm's period is measured after the leader opens
        self.episode = self.step = 0
        self.seconds = 0.0

    def now(self) -> tuple[int, int] | None:
        return (self.episode, self.step) if self.episode else None

    def begin_episode(self) -> None:
        self.episode, self.step = self.episode + 1, 0

    def tick(self) -> None:
        self.step += 1
        self.seconds += self.period_s()


class ScriptOnLeader(_LeaderWithAHand):
    """A leader arm with a hand script's hand on it (``hilserl train --leader-port emulator --hand``):
    each read is one control tick, and the hand acts first, on the session's own clock."""

    def __init__(self, leader: SO101Leader, hand: HandThread, clock: SessionSteps):
        super().__init__(leader)
        self.hand, self.clock = hand, clock

    def reset(self) -> None:
        self.clock.begin_episode()

    def read(self) -> JointState:
        self.clock.tick()
        self.hand.tick()
        return self.leader.read()


class EmulatedLeader:
    """The leader arm of ``so101 emulate --leader``: its pty, its calibration file, its hand.

    ``bridge`` (a :class:`~so101_sim2real.control.twin_bus.TwinBridge`, for ``--twin``)
    places the leader where the twin arm is and lets ``cube`` grabs and ``stalled`` triggers
    see the cube; ``clock`` tells ``episode`` grabs the session's episode and step (until a
    session tells it one, they wait).
    """

    def __init__(self, grabs: list[Grab] | None = None, bridge: TwinBridge | None = None,
                 clock: SessionClock | None = None):
        from so101_sim2real.control.twin_bus import twin_arm_calibration

        self.cal = twin_arm_calibration()
        start = None
        if bridge is not None:
            with bridge.lock:
                raw = self.cal.to_raw(bridge.task.qpos()[:6])
            start = {self.cal.motors[j].id: raw[j] for j in JOINT_NAMES}
        self.emulator = BusEmulator(list(self.cal.ids.values()), positions=start)
        self.hand = HandThread(self.emulator, self.cal, grabs, _twin_view(bridge), session=clock) if grabs else None
        self.folder: Path | None = None

    @property
    def calibration_file(self) -> Path:
        assert self.folder is not None, "start() the emulated leader first"
        return self.folder / CALIBRATION_NAME

    def start(self) -> str:
        """Write the calibration file, open the pty, start the hand; the pty's path."""
        self.folder = Path(tempfile.mkdtemp(prefix="so101-leader-"))
        self.cal.save(self.calibration_file)
        path = self.emulator.start()
        if self.hand is not None:
            self.hand.start()
        return path

    def stop(self) -> None:
        if self.hand is not None:
            self.hand.stop()
        self.emulator.stop()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> EmulatedLeader:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _twin_view(bridge: TwinBridge | None) -> TwinView | None:
    if bridge is None:
        return None
    from so101_sim2real.kinematics import Kinematics
    from so101_sim2real.sim import scene as S

    spec = bridge.task.spec
    return TwinView(bridge.task, bridge.lock, Kinematics(S.build_model(), spec.action.ik, S.ARM_JOINTS), spec.action)
