"""Hand scripts beside ``at_s``: grabs in the session's episode N at step K, grabs when the follower
stalls short of the cube, and every value bounded (issue 26, items 4 and the hand-script bounds)."""

from __future__ import annotations

import pytest

from so101_sim2real.errors import So101Error
from so101_sim2real.leader.hand_script import Grab, parse_hand_script


def test_episode_step_and_stalled_triggers_are_read_and_written_back():
    grabs = parse_hand_script([{"episode": 2, "step": 15, "hold_s": 8, "guide": "cube"},
                               {"episode": 3, "hold_s": 1, "guide": "still"},
                               {"when": "stalled", "hold_s": 5, "guide": "cube"},
                               {"when": "stalled", "stall_s": 1.5, "hold_s": 5, "guide": {"gripper": -20}}],
                              "--hand", twin=True)
    assert grabs == [Grab(None, 8.0, "cube", episode=2, step=15), Grab(None, 1.0, "still", episode=3, step=1),
                     Grab(None, 5.0, "cube", when="stalled", stall_s=3.0),
                     Grab(None, 5.0, {"gripper": -20.0}, when="stalled", stall_s=1.5)]
    assert parse_hand_script([g.to_dict() for g in grabs], "run.yaml", twin=True) == grabs  # as run.yaml keeps them


@pytest.mark.parametrize(("item", "twin", "message"), [
    # the malformed input: a joint moved by 1e9 degrees
    ({"at_s": 1, "hold_s": 2, "guide": {"shoulder_pan": 1e9}}, False,
     "grab 1: guide: shoulder_pan 1e+09: degrees to move it by, at most its range (220) either way"),
    ({"at_s": 1, "hold_s": 2, "guide": {"gripper": -111}}, False, "grab 1: guide: gripper -111"),
    ({"at_s": 1e9, "hold_s": 2, "guide": "still"}, False, "grab 1: at_s 1000000000.0: seconds, 0 to 86400"),
    ({"at_s": float("inf"), "hold_s": 2, "guide": "still"}, False, "grab 1: at_s inf: expected a number"),
    ({"at_s": 1, "hold_s": 1e6, "guide": "still"}, False, "grab 1: hold_s 1000000.0: seconds, 0 to 600"),
    ({"episode": 0, "hold_s": 2, "guide": "still"}, True, "grab 1: episode 0: a whole number, 1 to 1000000"),
    ({"episode": 1.5, "hold_s": 2, "guide": "still"}, True, "grab 1: episode 1.5: a whole number"),
    ({"episode": 1, "step": True, "hold_s": 2, "guide": "still"}, True, "grab 1: step True: a whole number"),
    ({"episode": 1, "step": -3, "hold_s": 2, "guide": "still"}, True, "grab 1: step -3: a whole number"),
    ({"when": "stalled", "stall_s": 0, "hold_s": 2, "guide": "cube"}, True, "grab 1: stall_s 0: a stall lasts"),
    ({"when": "stalled", "stall_s": 1e5, "hold_s": 2, "guide": "cube"}, True, "grab 1: stall_s 100000"),
    ({"when": "bored", "hold_s": 2, "guide": "cube"}, True, "grab 1: when 'bored': choose stalled"),
    ({"episode": 2, "hold_s": 2, "guide": "still"}, False, "grab 1: episode: the hand counts the session's episodes"),
    ({"when": "stalled", "hold_s": 2, "guide": "still"}, False, "grab 1: when stalled: the hand watches"),
    ({"at_s": 1, "episode": 2, "hold_s": 2, "guide": "still"}, True, "grab 1: needs one trigger"),
    ({"hold_s": 2, "guide": "still"}, True, "grab 1: needs one trigger: at_s SECONDS, episode N"),
    ({"at_s": 1, "step": 4, "hold_s": 2, "guide": "still"}, True, "grab 1: step needs episode"),
    ({"at_s": 1, "stall_s": 4, "hold_s": 2, "guide": "still"}, True, "grab 1: stall_s only with when: stalled"),
])
def test_every_value_is_bounded_and_refused_naming_the_grab_and_the_field(item, twin, message):
    with pytest.raises(So101Error) as err:
        parse_hand_script([item], "--hand h.yaml", twin)
    text = err.value.cli_text()
    assert message in text and "\n" not in text and text.startswith("--hand h.yaml: grab 1")


def test_grabs_in_episodes_go_in_order():
    with pytest.raises(So101Error, match=r"grab 2 \(episode 1 step 5\) is not after grab 1 \(episode 1 step 9\)"):
        parse_hand_script([{"episode": 1, "step": 9, "hold_s": 1, "guide": "still"},
                           {"episode": 1, "step": 5, "hold_s": 1, "guide": "still"}], "--hand", True)


# ------------------------------------------------------------------------------ the hand plays them

class FakeSession:
    """A SessionClock test double: the session's (episode, step), set by the test."""

    def __init__(self) -> None:
        self.where: tuple[int, int] | None = None

    def now(self) -> tuple[int, int] | None:
        return self.where


class FakeTwin:
    """The one thing a stalled trigger reads of the twin: the follower's distance to the cube."""

    def __init__(self) -> None:
        self.distance = 0.3

    def follower_to_cube_m(self) -> float:
        return self.distance


def _hand(grabs, session=None, twin=None):
    from so101_sim2real.control.twin_bus import twin_arm_calibration
    from so101_sim2real.hardware.emulator import BusEmulator
    from so101_sim2real.leader.emulator import HandThread

    cal = twin_arm_calibration()
    emulator = BusEmulator(list(cal.ids.values()))
    from so101_sim2real.hardware.registers import REGISTERS

    emulator.servos[0].write(REGISTERS["torque_enable"].address, b"\x01")  # the driver turned it on: it follows
    time = {"t": 0.0}
    hand = HandThread(emulator, cal, grabs, twin, clock=lambda: time["t"], session=session)

    def tick(seconds: float = 0.02) -> None:
        time["t"] += seconds
        hand.tick()

    return hand, tick


def test_a_grab_in_episode_2_at_step_15_waits_for_it_and_lets_go_when_the_episode_ends():
    session = FakeSession()
    hand, tick = _hand(parse_hand_script([{"episode": 2, "step": 15, "hold_s": 60, "guide": "still"}], "h", True),
                       session)
    tick()  # the leader follows: the hand's clock starts
    for where in [None, (1, 1), (1, 40), (2, 14)]:  # no episode yet, then episode 1, then just before
        session.where = where
        tick()
        assert not hand.holding, where
    session.where = (2, 15)
    tick()
    assert hand.holding and hand.events[-1].kind == "grab" and hand.events[-1].why == "episode 2 step 15"
    session.where = (2, 30)
    tick()
    assert hand.holding
    session.where = (3, 1)  # a person lets go when the episode they grabbed in ends
    tick()
    assert not hand.holding and hand.events[-1].why == "episode 2 ended"


def test_a_grab_whose_episode_is_over_is_skipped():
    session = FakeSession()
    grabs = parse_hand_script([{"episode": 1, "step": 50, "hold_s": 1, "guide": "still"},
                               {"episode": 3, "hold_s": 1, "guide": "still"}], "h", True)
    hand, tick = _hand(grabs, session)
    tick()
    session.where = (1, 10)
    tick()
    session.where = (2, 1)  # episode 1 ended at step 20
    tick()
    assert [e.kind for e in hand.events] == ["skip"] and not hand.holding
    session.where = (3, 1)
    tick()
    assert hand.holding and hand.events[-1].grab == 2


def test_a_stalled_follower_is_grabbed_after_stall_s_of_no_progress():
    session, twin = FakeSession(), FakeTwin()
    hand, tick = _hand(parse_hand_script([{"when": "stalled", "stall_s": 1, "hold_s": 2, "guide": "still"}], "h",
                                         True), session, twin)
    tick()
    for _ in range(100):  # 2 s before any episode: a session still loading is no stall
        tick()
    assert not hand.holding
    session.where = (1, 1)
    for _ in range(40):  # 0.8 s of steady progress toward the cube, 0.5 cm a tick (1 cm every other)
        twin.distance -= 0.005
        tick()
    assert not hand.holding
    for _ in range(45):  # then it stops: after 1 s without progress the hand grabs
        tick()
    assert not hand.holding
    for _ in range(10):
        tick()
    assert hand.holding and hand.events[-1].why == "stalled 1 s"
    assert hand.events[-1].t_s == pytest.approx(2.0 + 0.8 + 1.0, abs=0.05)  # loading, progress, the stall


def test_a_second_stall_is_judged_afresh_after_the_first_grab_lets_go():
    session, twin = FakeSession(), FakeTwin()
    grabs = parse_hand_script([{"when": "stalled", "stall_s": 1, "hold_s": 1, "guide": "still"},
                               {"when": "stalled", "stall_s": 1, "hold_s": 1, "guide": "still"}], "h", True)
    hand, tick = _hand(grabs, session, twin)
    tick()
    session.where = (1, 1)
    while not hand.holding:  # the first stall
        tick()
    while hand.holding:  # held for 1 s, then let go
        tick()
    let_go = hand.events[-1].t_s
    for _ in range(25):  # half a second later the follower has not stalled a whole second since
        tick()
    assert not hand.holding
    while not hand.holding:
        tick()
    assert hand.events[-1].grab == 2 and hand.events[-1].t_s - let_go == pytest.approx(1.0, abs=0.1)


def test_a_joint_guide_stops_at_the_end_of_the_joints_range():
    hand, tick = _hand(parse_hand_script([{"at_s": 0, "hold_s": 10, "guide": {"shoulder_pan": 200}}], "h", False))
    tick()
    tick()  # grabs
    for _ in range(200):
        tick()
    high = hand.cal.sim_ranges()[0, 1]
    assert hand.holding and hand._guide.pose[0] == pytest.approx(high)


# ------------------------------------------------------------------------------ on the command line

@pytest.mark.parametrize(("args", "script", "message"), [
    # the malformed input: 'so101 emulate --twin --leader --hand H' with a joint at 1e9 degrees ran
    (["emulate", "--twin", "--leader"], "- {at_s: 5, hold_s: 8, guide: {elbow_flex: 1e9}}",
     "grab 1: guide: elbow_flex 1e+09: degrees to move it by"),
    (["emulate", "--leader"], "- {episode: 2, step: 15, hold_s: 8, guide: still}",
     "grab 1: episode: the hand counts the session's episodes (they arrive once it runs one), which runs here "
     "only with --twin"),
    (["hilserl", "train", "--ckpt", "{ckpt}", "--out", "{tmp}/r", "--intervene", "leader", "--leader-port",
      "emulator"], "- {episode: 0, hold_s: 8, guide: cube}", "grab 1: episode 0: a whole number"),
    (["hilserl", "train", "--ckpt", "{ckpt}", "--out", "{tmp}/r"], "- {episode: 1, hold_s: 8, guide: cube}",
     "--hand: moves the emulated leader: only with --intervene leader --leader-port emulator"),
])
def test_a_bad_hand_script_on_the_command_line_is_one_line_and_changes_nothing(capsys, snapshot, tmp_path, args,
                                                                                script, message):
    from fixtures import run_cli

    hand = tmp_path / "hand.yaml"
    hand.write_text(script + "\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [a.format(ckpt=snapshot, tmp=tmp_path) for a in args]
    code, _, err = run_cli(capsys, *args, "--hand", str(hand))
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run folder, nothing written


# ------------------------------------------------------------------------------ a person watching

PERSON = {"when": "person", "hold_s": 5, "guide": "cube"}


def test_a_person_is_read_with_their_defaults_and_written_back():
    from so101_sim2real.leader.hand_script import Person

    grab = parse_hand_script([PERSON], "h", True)[0]
    assert grab.person == Person() and grab.stall_s == Person.stall_s and grab.trigger == "a person noticed"
    assert parse_hand_script([grab.to_dict()], "h", True) == [grab]
    tuned = parse_hand_script([{**PERSON, "react_ms": [200, 900], "per_episode": 2, "bother": 0.5, "seed": 3}], "h",
                              True)[0]
    assert tuned.person.react_ms == (200.0, 900.0) and tuned.person.per_episode == 2 and tuned.person.seed == 3


@pytest.mark.parametrize("items, message", [
    ([{**PERSON, "react_ms": [600, 300]}], "react_ms [600, 300]: 0 <= fastest <= slowest"),
    ([{**PERSON, "react_ms": 300}], "react_ms 300: [FASTEST, SLOWEST] milliseconds"),
    ([{**PERSON, "bother": 0}], "bother a chance in (0, 1]"),
    ([{**PERSON, "guide": "still"}], "a person guides toward the cube"),
    ([{"when": "stalled", "hold_s": 2, "guide": "cube", "noise_m": 0.01}], "noise_m only with when: person"),
    ([PERSON, {"at_s": 1, "hold_s": 1, "guide": "still"}], "make it the last grab"),
])
def test_a_persons_settings_are_bounded(items, message):
    with pytest.raises(So101Error, match="h") as error:
        parse_hand_script(items, "h", True)
    assert message in str(error.value)


@pytest.fixture(scope="module")
def twin_view():
    """A real twin for the person's cube guide, whose follower's distance to the cube the test sets."""
    import threading

    from so101_sim2real.kinematics import Kinematics
    from so101_sim2real.leader.emulator import TwinView
    from so101_sim2real.sim.task import LiftCubeTask
    from so101_sim2real.spec import default_spec

    class SetDistance(TwinView):
        distance = 0.3

        def follower_to_cube_m(self) -> float:
            return self.distance

    spec = default_spec()
    task = LiftCubeTask(spec)
    task.reset(seed=0)
    from so101_sim2real.sim import scene as S

    return SetDistance(task, threading.Lock(), Kinematics(S.build_model(), spec.action.ik, S.ARM_JOINTS), spec.action)


class SteppingSession(FakeSession):
    """A session that steps its episode on every read, as a running one does (a person watches it)."""

    def __init__(self) -> None:
        super().__init__()
        self.episode, self.step, self.stepping = 0, 0, True

    def begin(self) -> None:
        self.episode, self.step = self.episode + 1, 0

    def now(self):
        if self.episode and self.stepping:
            self.step += 1
        return (self.episode, self.step) if self.episode else None


def _watching(twin_view, distance: float):
    """A person (half a second's hold) watching a session whose first episode has just begun, the
    follower ``distance`` from the cube: (session, hand, tick)."""
    session = SteppingSession()
    hand, tick = _hand(parse_hand_script([{**PERSON, "hold_s": 0.5, "seed": 1}], "h", True), session, twin_view)
    twin_view.distance = distance
    tick()
    session.begin()
    return session, hand, tick


def test_a_person_grabs_a_follower_heading_away_after_their_reaction_and_once_an_episode(twin_view):
    session, hand, tick = _watching(twin_view, 0.3)
    for _ in range(10):  # it nears the cube, 1 cm a tick: nothing to see
        twin_view.distance -= 0.01
        tick()
    for _ in range(2):  # then it turns away: 2 cm beyond its closest is not yet wrong
        twin_view.distance += 0.01
        tick()
    assert not hand.holding and hand._noticed_at is None
    twin_view.distance += 0.015  # 3.5 cm beyond its closest: they notice ...
    tick()
    noticed = hand.clock() - hand.started_at
    assert hand._noticed_at is not None and not hand.holding
    while not hand.holding:  # ... and reach the leader after their reaction time
        tick()
    grabbed = hand.events[-1]
    assert grabbed.why == "a person noticed" and 0.3 - 0.02 <= grabbed.t_s - noticed <= 0.6 + 0.02
    while hand.holding:  # hold_s later they let go ...
        tick()
    for _ in range(300):  # ... and, once this episode, leave it be however wrong it goes
        twin_view.distance += 0.001
        tick()
    assert [e.kind for e in hand.events] == ["grab", "let go"]
    session.begin()  # the next episode: they watch again (a stall of 2 s this time)
    for _ in range(2 * 50 + 40):
        tick()
    assert [e.kind for e in hand.events] == ["grab", "let go", "grab"]


def test_a_person_watches_a_running_episode_only_and_each_session_afresh(twin_view):
    session = SteppingSession()
    # a slow person (1.5 s to react): the episode's steps stop for longer than EPISODE_QUIET_S first
    hand, tick = _hand(parse_hand_script([{**PERSON, "hold_s": 0.2, "seed": 2, "react_ms": [1500, 1600]}], "h",
                                         True), session, twin_view)
    twin_view.distance = 0.2
    tick()
    session.begin()
    for _ in range(60):
        tick()
    twin_view.distance = 0.24  # heading away: noticed ...
    tick()
    assert hand._noticed_at is not None
    session.stepping = False  # ... but the episode ends (the arm goes home) before they reach the leader
    for _ in range(100):
        twin_view.distance += 0.002  # going home, away from the cube: no episode to watch
        tick()
    assert hand.events == [] and hand._noticed_at is None
    session.stepping = True
    session.episode, session.step = 1, 0  # a new session numbers its episodes from 1 again: watched afresh
    twin_view.distance = 0.2
    for _ in range(4 * 50):  # a stall of 2 s, then their reaction
        tick()
    assert [e.kind for e in hand.events][:1] == ["grab"]


def test_a_person_who_rarely_bothers_takes_over_less(twin_view):
    def takeovers(bother: float) -> int:
        session = SteppingSession()
        hand, tick = _hand(parse_hand_script([{**PERSON, "hold_s": 0.1, "per_episode": 50, "bother": bother}], "h",
                                             True), session, twin_view)
        twin_view.distance = 0.2
        tick()
        session.begin()
        for _ in range(30 * 50):  # 30 s of a stalled follower
            tick()
        return sum(e.kind == "grab" for e in hand.events)

    always, rarely = takeovers(1.0), takeovers(0.2)
    assert always >= 10 and rarely <= always / 2


def test_a_persons_hand_drifts_and_is_slower_than_the_experts(twin_view):
    import numpy as np

    from so101_sim2real.leader.emulator import _Cube
    from so101_sim2real.leader.hand_script import Person

    person = Person(speed=0.6, noise_m=0.01)
    q = np.array(twin_view.task.qpos()[:6], dtype=float)
    hand, expert = _Cube(q, twin_view, person, np.random.default_rng(0)), _Cube(q, twin_view)
    drifts = []
    for _ in range(400):
        assert hand._pace() == 0.6 and expert._pace() == 1.0
        drifts.append(hand.drift.copy())
    spread = np.std(np.array(drifts)[100:], axis=0)
    assert np.all((spread > 0.006) & (spread < 0.014)) and not expert.drift.any()


def test_a_person_grabs_a_follower_that_closed_on_air(twin_view):
    """The gripper closed with the cube out of reach: they notice at once, not after a stall."""
    _, hand, tick = _watching(twin_view, 0.1)
    for _ in range(10):  # nearing the cube with the gripper open: nothing to see
        twin_view.distance -= 0.005
        tick()
    assert hand._noticed_at is None
    task = twin_view.task
    task.data.qpos[task._qpos[-1]] = task.cfg.closed_below_rad - 0.2  # closed, 5 cm from the cube
    tick()
    assert hand._noticed_at is not None
    while not hand.holding:
        tick()
    assert hand.events[-1].kind == "grab"
