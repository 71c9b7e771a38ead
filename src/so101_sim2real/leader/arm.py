"""The leader arm of a HIL-SERL session: a real one on a serial port, or an emulated one with a hand.

``--leader-port emulator`` runs an emulated leader in this process with the scripted hand
on it (the twin's stand-in for a person); any other port is a real leader, read through
its LeRobot calibration and our sim mapping. Either way the leader is checked against
the follower before anything moves: a leader whose calibration disagrees with the
follower's (degrees against radians, another zero) reads joints far outside the
follower's ranges, and the session is refused with what to fix.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from so101_sim2real.control.env import EMULATOR_PORT, Env
from so101_sim2real.errors import So101Error
from so101_sim2real.kinematics import Kinematics
from so101_sim2real.leader.hand_script import Grab
from so101_sim2real.leader.takeover import LeaderArm, LeaderIntervener, TakeoverConfig, TakeoverKeys
from so101_sim2real.sim import scene as S
from so101_sim2real.spec import Spec

if TYPE_CHECKING:
    from so101_sim2real.hardware.emulator import BusEmulator
    from so101_sim2real.hardware.joint_calibration import ArmCalibration
    from so101_sim2real.hardware.so101 import SO101Leader
    from so101_sim2real.leader.emulator import ScriptOnLeader
    from so101_sim2real.leader.hand import HandOnLeader
    from so101_sim2real.sim.task import LiftCubeTask

# How far outside the follower's joint ranges a leader may read before its calibration is
# called inconsistent: the two arms' ranges differ a little, units or zeros a lot.
RANGE_SLACK_RAD = 0.35
# How fast the leader's motors move it after the follower: slow enough that a soft-geared
# STS3215 reaches each goal within the tick (so that being kept from it means a hand), fast
# enough to keep up with a policy (the follower's own limit is 0.15 rad a tick).
LEADER_FOLLOW_RAD_S = 2.0


@dataclass
class LeaderSession:
    """The intervener and what must be closed with it (the leader's bus, an emulator)."""

    intervener: LeaderIntervener
    closers: list
    arm: SO101Leader | None = None  # the SO101Leader itself: probed and made limp while a session is paused

    def close(self) -> None:
        for close in reversed(self.closers):
            close()
        self.closers.clear()


def open_leader(port: str, calibration: str | None, env: Env, spec: Spec, seed: int = 0,
                keys: TakeoverKeys | None = None, cfg: TakeoverConfig | None = None,
                grabs: list[Grab] | None = None) -> LeaderSession:
    """Connect the leader (torque off, low gains), check it against the follower, wrap it as an intervener.

    ``grabs`` (a hand script, for ``emulator`` only) replace the scripted hand's grab at step 10."""
    from so101_sim2real.hardware.bus import MotorBus
    from so101_sim2real.hardware.so101 import SO101Leader

    kinematics = Kinematics(S.build_model(), spec.action.ik, S.ARM_JOINTS)  # FK of the leader's own joints
    closers: list = []
    leader: LeaderArm
    try:
        if port == EMULATOR_PORT:
            held = _emulated_leader(env, spec, kinematics, seed, closers, grabs)
            leader, arm = held, held.leader
        else:
            cal = _leader_calibration(calibration, port)
            arm = SO101Leader(MotorBus(port, cal.ids), cal, follows=True, max_step_rad=_follow_step(env))
            arm.connect()
            closers.append(arm.close)
            check_consistent(arm.read().position, env)
            leader = arm
        return LeaderSession(LeaderIntervener(leader, kinematics, spec.action, env.period_s, cfg, keys), closers, arm)
    except BaseException:
        for close in reversed(closers):
            close()
        raise


def _emulated_leader(env: Env, spec: Spec, kinematics: Kinematics, seed: int, closers: list,
                     grabs: list[Grab] | None = None) -> HandOnLeader | ScriptOnLeader:
    from so101_sim2real.control.twin_bus import twin_arm_calibration
    from so101_sim2real.hardware.bus import MotorBus
    from so101_sim2real.hardware.emulator import BusEmulator
    from so101_sim2real.hardware.so101 import SO101Leader
    from so101_sim2real.leader.hand import HandOnLeader, ScriptedLeaderHand
    from so101_sim2real.sim.scripted import ScriptedExpert
    from so101_sim2real.sim.task import LiftCubeTask

    twin = env.twin
    if not isinstance(twin, LiftCubeTask):  # None where the follower is a real arm
        raise So101Error("@leader_port emulator: the scripted hand guides the leader toward the twin's cube; it "
                         "needs the twin as the follower (@robot sim or @port emulator)")
    cal = twin_arm_calibration()
    emulator = BusEmulator(list(cal.ids.values()))
    emulator.start()
    closers.append(emulator.stop)
    arm = SO101Leader(MotorBus(emulator.path, cal.ids), cal, follows=True, max_step_rad=_follow_step(env))
    arm.connect()
    closers.append(arm.close)
    if grabs:
        return _scripted_leader(arm, emulator, cal, env, twin, spec, kinematics, grabs)
    hand = ScriptedLeaderHand(emulator, cal, kinematics, spec.action, ScriptedExpert(twin),
                              follower=lambda: twin.qpos()[:6], seed=seed)
    return HandOnLeader(arm, hand)


def _scripted_leader(arm: SO101Leader, emulator: BusEmulator, cal: ArmCalibration, env: Env, twin: LiftCubeTask,
                     spec: Spec, kinematics: Kinematics, grabs: list[Grab]) -> ScriptOnLeader:
    """The emulated leader with a hand script's hand on it, ticked by the session's own loop."""
    from so101_sim2real.leader.emulator import HandThread, ScriptOnLeader, SessionSteps, TwinView

    # the emulated arm's twin steps its physics in a thread of its own: read it under its lock
    lock = getattr(getattr(env.task, "bridge", None), "lock", None) or threading.Lock()
    clock = SessionSteps(lambda: env.period_s)
    hand = HandThread(emulator, cal, grabs, TwinView(twin, lock, kinematics, spec.action),
                      clock=lambda: clock.seconds, session=clock)
    return ScriptOnLeader(arm, hand, clock)


def _follow_step(env: Env) -> float:
    from so101_sim2real.hardware.so101 import DEFAULT_MAX_STEP_RAD

    return min(DEFAULT_MAX_STEP_RAD, LEADER_FOLLOW_RAD_S * env.period_s)


def _leader_calibration(name: str | None, port: str) -> ArmCalibration:
    from so101_sim2real.hardware.joint_calibration import resolve_calibration

    if not name:
        raise So101Error(f"@leader_port {port}: the leader needs its calibration: @leader_calibration ID (from "
                         f"'so101 calibrate joints --arm leader') or a calibration .json")
    if name == "twin":  # 'so101 emulate --leader': the emulated leader is calibrated like the twin
        from so101_sim2real.control.twin_bus import twin_arm_calibration

        return twin_arm_calibration()
    return resolve_calibration(name, "leader", "leader_calibration")


def check_consistent(leader_q: np.ndarray, env: Env) -> None:
    """The leader's reading inside the follower's joint ranges (with some slack), joint by joint."""
    from so101_sim2real.arm import JOINT_NAMES

    limits = env.robot.limits
    for i, joint in enumerate(JOINT_NAMES):
        low, high = limits.low[i] - RANGE_SLACK_RAD, limits.high[i] + RANGE_SLACK_RAD
        if not low <= leader_q[i] <= high:
            raise So101Error(
                f"the leader reads {joint} at {leader_q[i]:.2f} rad, outside the follower's range "
                f"{limits.low[i]:.2f}..{limits.high[i]:.2f}: the two calibrations disagree (units or zero pose). "
                f"Recalibrate the leader with 'so101 calibrate joints --arm leader' using the same sim zero pose "
                f"as the follower")
