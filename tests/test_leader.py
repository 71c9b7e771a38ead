"""Taking over with the leader arm: detection, the action it stands for, and a session on the emulators."""

from __future__ import annotations

import numpy as np
import pytest

from so101_sim2real.leader.takeover import TakeoverConfig, TakeoverDetector, gripper_action, leader_action


def test_the_detector_starts_on_a_jump_and_ends_when_the_error_settles():
    det = TakeoverDetector(TakeoverConfig(), period_s=0.1)  # LeRobot's 10 Hz: a window of 4 ticks
    lag = [1.0, 1.05, 0.98, 1.02, 1.0, 0.97]  # a leader following on low gains: small, steady lag
    assert not any(det.update(e) for e in lag)
    assert det.update(8.0)  # grabbed: the error jumps 7 degrees in a tick (variance 12.25 > 10)
    moving = [det.update(e) for e in (14.0, 9.0, 4.0)]
    assert all(moving)
    settling = [det.update(e) for e in (2.0, 2.02, 2.01, 2.0)]
    assert settling[-1] is False and all(settling[:-1])  # released once all four agree to 0.1 degree


def test_a_slow_drift_is_not_a_takeover_but_a_leader_held_off_its_goal_is():
    det = TakeoverDetector()
    assert not any(det.update(1.0 + 0.1 * i) for i in range(40))  # a servo lagging a little more, slowly
    det.reset()
    assert [det.update(e) for e in (2.0, 4.0, 6.0, 8.5)] == [False, False, False, True]  # a slow hand


def test_a_leader_landing_on_its_goal_is_not_a_hand():
    """Right after a release the motors bring the leader onto the follower: its error falls as
    fast as a grab makes it rise, and only the rise is a person."""
    det = TakeoverDetector(period_s=0.02)  # start: variance above 0.4 deg^2 over two ticks
    assert not det.update(1.29) and not det.update(0.0)  # caught up within a tick: a fall of 1.29 deg
    det.reset()
    assert not det.update(0.0) and det.update(1.29)  # the same step the other way: a hand


def test_a_faster_loop_sees_the_same_hand_speed_and_waits_as_long_for_stillness():
    slow, fast = TakeoverDetector(period_s=0.1), TakeoverDetector(period_s=0.02)
    assert fast.window == 20 and slow.window == 4  # 0.4 s of history either way
    assert not slow.update(0.0) and not slow.update(2.0)  # 20 deg/s at 10 Hz: a slow drift
    assert not fast.update(0.0) and fast.update(2.0)  # 100 deg/s at 50 Hz: a hand
    settled = [fast.update(2.0) for _ in range(20)]
    assert settled.index(False) == 18  # released once all 20 samples (0.4 s) in the window agree


@pytest.fixture(scope="module")
def spec():
    from so101_sim2real.spec import default_spec

    return default_spec()


@pytest.fixture(scope="module")
def kinematics(spec):
    from so101_sim2real.kinematics import Kinematics
    from so101_sim2real.sim import scene as S

    return Kinematics(S.build_model(), spec.action.ik, S.ARM_JOINTS)  # measured joints: the leader's own


def test_the_gripper_action_inverts_the_specs_mapping(spec):
    g = spec.action.gripper
    for a in (-1.0, -0.3, 0.0, 0.6, 1.0):
        assert gripper_action(spec.action, g.to_rad(a)) == pytest.approx(a, abs=1e-9)
    assert gripper_action(spec.action, g.high_rad + 1.0) == 1.0


def test_the_leaders_pose_becomes_the_step_toward_its_tcp(spec, kinematics):
    q = np.array([0.1, -0.4, 0.6, 0.3, 1.57, 0.2])
    tcp, _ = kinematics.fk(q[:5])
    near = tcp - np.array([0.004, -0.01, 0.002])  # the follower's target, a few mm away
    a = leader_action(q, near, kinematics, spec.action)
    assert a[:3] == pytest.approx([0.2, -0.5, 0.1], abs=1e-5)  # (tcp - target) / 0.02 m
    assert a[3] == pytest.approx(gripper_action(spec.action, 0.2))
    far = tcp + np.array([0.0, 0.0, 0.5])
    assert leader_action(q, far, kinematics, spec.action)[2] == -1.0  # clipped: one step per tick at most


class _StillPilot:
    """A policy that holds still, with the leader intervener on top: what the follower does is
    the person's (here the scripted hand's) doing alone."""

    name, needs_pixels = "still", False

    def __init__(self, intervener):
        self.intervener, self.log = intervener, []

    def reset(self, obs) -> None:
        self.intervener.reset(0)

    def act(self, obs) -> np.ndarray:
        override = self.intervener.act(obs, np.zeros(4, np.float32))
        self.log.append((self.intervener.in_control, obs.ee_target.copy(), override,
                         None if self.intervener.last_leader_q is None else self.intervener.last_leader_q.copy()))
        return np.zeros(4, np.float32) if override is None else override


def _session(spec, kinematics, hand_cfg, max_steps):
    """One episode on the emulated follower (the twin through the real driver) with an emulated
    leader that the scripted hand grabs; returns what each tick saw."""
    from so101_sim2real.control.env import so101_env
    from so101_sim2real.control.runner import Runner
    from so101_sim2real.control.twin_bus import twin_arm_calibration
    from so101_sim2real.hardware.bus import MotorBus
    from so101_sim2real.hardware.emulator import BusEmulator
    from so101_sim2real.hardware.so101 import SO101Leader
    from so101_sim2real.leader.hand import HandOnLeader, ScriptedLeaderHand
    from so101_sim2real.leader.takeover import LeaderIntervener
    from so101_sim2real.sim.scripted import ScriptedExpert

    rig = so101_env(spec, "emulator", with_camera=False)
    cal = twin_arm_calibration()
    with BusEmulator(list(cal.ids.values())) as leader_bus:
        leader = SO101Leader(MotorBus(leader_bus.path, cal.ids), cal, follows=True)
        leader.connect()
        hand = ScriptedLeaderHand(leader_bus, cal, kinematics, spec.action, ScriptedExpert(rig.twin),
                                  follower=lambda: rig.twin.qpos()[:6], cfg=hand_cfg)
        intervener = LeaderIntervener(HandOnLeader(leader, hand), kinematics, spec.action, rig.period_s)
        pilot = _StillPilot(intervener)
        ticks = []
        runner = Runner(rig, pilot, max_steps=max_steps, realtime=True, on_step=lambda step: ticks.append(
            (intervener.in_control, hand.holding, leader_bus.register(1, "torque_enable"))))
        try:
            summary = runner.run([3])
        finally:
            rig.close()
            leader.close()
        torque_after = [leader_bus.register(i, "torque_enable") for i in cal.ids.values()]
    return summary, pilot.log, ticks, intervener, hand, torque_after


@pytest.mark.slow  # a few seconds of real time: both arms are emulated servos on ptys
def test_a_hand_on_the_emulated_leader_takes_over_and_the_follower_lifts_the_cube(spec, kinematics):
    from so101_sim2real.leader.hand import HandConfig

    summary, log, ticks, intervener, hand, torque_after = _session(
        spec, kinematics, HandConfig(grab_at_step=30, max_steps=110), max_steps=170)
    control = [c for c, *_ in log]
    first = control.index(True) + 1  # the tick (1-based) at which the takeover was seen
    assert 30 <= first <= 32, first  # the hand grabbed at tick 30: detected within two ticks
    assert not any(control[:29])  # no takeover while the leader only followed
    assert hand.grabs == 1 and intervener.takeovers == 1
    assert all(torque == 0 for c, _, torque in ticks if c)  # limp while the person has it
    # What the follower executed is the leader's pose as the policy's own action, every tick.
    for in_control, target_before, action, leader_q in log:
        if in_control:
            assert np.allclose(action, leader_action(leader_q, target_before, kinematics, spec.action), atol=1e-6)
    # The hand moves the leader as the expert would move an arm; the follower, led by it, succeeds.
    assert summary.episodes[0].success
    assert torque_after == [0] * 6  # both arms' exit paths turn torque off


@pytest.mark.slow
def test_letting_go_hands_control_back_and_the_leader_follows_again(spec, kinematics):
    from so101_sim2real.leader.hand import HandConfig

    _, log, ticks, intervener, hand, _ = _session(spec, kinematics, HandConfig(grab_at_step=10, max_steps=8),
                                                  max_steps=90)
    control = [c for c, *_ in log]
    let_go = next(i for i in range(10, len(ticks)) if not ticks[i][1])  # the tick the hand let go
    back = control.index(False, let_go)
    assert back - let_go <= 60, (let_go, back)  # released once the arms have settled (0.4 s still), within 1.2 s
    assert not any(control[back:])  # and no second takeover while the leader re-syncs and follows
    assert intervener.takeovers == 1
    assert ticks[-1][2] == 1  # following the follower again: torque on


def test_keys_arrive_one_by_one_without_enter_and_the_terminal_is_restored():
    import os
    import pty
    import termios

    from so101_sim2real.control.keys import TerminalKeys

    main, child = pty.openpty()
    before = termios.tcgetattr(child)
    try:
        with TerminalKeys(child) as keys:
            assert keys.live and keys.poll() == ""
            os.write(main, b" s")  # no Enter: cbreak mode hands each key over at once
            assert keys.poll() == " s" and keys.poll() == ""
        assert termios.tcgetattr(child) == before
        assert not TerminalKeys(os.open(os.devnull, os.O_RDONLY)).live  # no terminal: no keys, no error
    finally:
        os.close(main)
        os.close(child)


class _StillLeader:
    """A leader nobody touches, sitting exactly where it is told (for the key toggle)."""

    def __init__(self):
        self.goal, self.limp_calls = None, 0
        self.q = np.array([0.0, -0.3, 0.5, 0.2, 1.57, 0.1])

    def read(self):
        from so101_sim2real.interfaces import JointState

        return JointState(self.q.copy(), np.zeros(6), 0.0)

    def follow(self, position):
        self.goal = self.q.copy()

    def limp(self):
        self.goal, self.limp_calls = None, self.limp_calls + 1


def test_space_hands_control_to_the_person_and_back(spec, kinematics):
    from types import SimpleNamespace

    from so101_sim2real.control.keys import OperatorKeys
    from so101_sim2real.interfaces import JointState
    from so101_sim2real.leader.takeover import LeaderIntervener

    pressed = iter(["", " ", "", "", " ", ""])
    keys = OperatorKeys(SimpleNamespace(poll=lambda: next(pressed)))
    leader = _StillLeader()
    intervener = LeaderIntervener(leader, kinematics, spec.action, 0.02, keys=keys)
    intervener.reset(0)
    obs = SimpleNamespace(joints=JointState(leader.q.copy(), np.zeros(6), 0.0), ee_target=np.array([0.2, 0.0, 0.1]))
    acted = [intervener.act(obs, np.zeros(4)) is not None for _ in range(6)]
    assert acted == [False, True, True, True, False, False]
    assert intervener.takeovers == 1 and leader.limp_calls == 1


def test_s_and_f_end_the_episode_whatever_the_task_says():
    from types import SimpleNamespace

    from so101_sim2real.control.keys import OperatorKeys
    from so101_sim2real.interfaces import StepResult

    typed = iter(["f", "", "s", "", "s"])
    keys = OperatorKeys(SimpleNamespace(poll=lambda: next(typed)))
    keys.reset()  # an "f" typed between episodes is dropped
    going = StepResult(0.0, False, False, {})
    assert keys.judge(None, going, 1) == going
    success = keys.judge(None, going, 2)
    assert success.terminated and not success.truncated and success.info["operator"] == "success"
    assert keys.judge(None, going, 3) == going
    keys = OperatorKeys(SimpleNamespace(poll=lambda: "f"))
    failure = keys.judge(None, going, 1)
    assert failure.truncated and not failure.terminated and failure.info["operator"] == "failure"
