"""A session that lasts: the re-record key and device faults that pause instead of ending it."""

from types import SimpleNamespace

import numpy as np
import pytest

from so101_sim2real.control.description import describe
from so101_sim2real.control.env import sim_env
from so101_sim2real.control.pilots import ScriptedPilot
from so101_sim2real.control.runner import DISCARD, Runner
from so101_sim2real.errors import DeviceFault
from so101_sim2real.hilserl.replay import ReplayBuffer, Step
from so101_sim2real.interfaces import StepResult
from so101_sim2real.spec import default_spec


def _step(i: int, ends: bool = False, intervention: bool = False) -> Step:
    return Step(np.full((2, 4, 4), i % 250, np.uint8), np.full(3, float(i), np.float32), np.zeros(2, np.float32),
                float(i), terminated=ends, is_intervention=intervention)


def test_a_discarded_episode_is_never_sampled_from_either_store():
    buffer = ReplayBuffer(100, (2, 4, 4), 3, 2, frame_stack=3, n_step=3, seed=0)
    buffer.begin_episode()
    for i in range(10):  # kept: ids 0..9
        buffer.add(_step(i, ends=i == 9))
    buffer.begin_episode()
    for i in range(100, 110):  # thrown away: ids 100..109, an intervention in the middle
        buffer.add(_step(i, intervention=103 <= i < 106))
    assert buffer.discard_episode() == 10
    for _ in range(20):
        batch = buffer.sample(16)
        assert batch.states.max() < 100 and batch.next_states.max() < 100
        assert not batch.from_demos.any()  # the discarded fragment was the only demo
    buffer.begin_episode()  # the ring goes on after it
    for i in range(200, 205):
        buffer.add(_step(i, ends=i == 204))
    seen = np.concatenate([buffer.sample(16).states[:, -1, 0] for _ in range(30)])
    assert seen.max() >= 200 and not ((seen >= 100) & (seen < 110)).any()


def test_the_r_key_asks_for_the_episode_again():
    from so101_sim2real.control.keys import OperatorKeys

    typed = iter(["", "r"])
    keys = OperatorKeys(SimpleNamespace(poll=lambda: next(typed, "")))
    keys.reset()
    plain = StepResult(0.0, False, False, {})
    verdict = keys.judge(None, plain, 1)
    assert verdict.info.get(DISCARD) and verdict.truncated and not verdict.terminated
    assert not keys.judge(None, plain, 2).info.get(DISCARD)  # once per press


class Sink:
    """A TransitionSink that logs what the runner tells it."""

    def __init__(self):
        self.log = []

    def begin(self, index, seed):
        self.log.append(("begin", seed))

    def add(self, obs, action, result, ends):
        self.log.append(("add", None))

    def end(self):
        self.log.append(("end", None))

    def discard(self):
        self.log.append(("discard", None))


class RerecordOnce:
    """A judge whose person presses r at a given step of the first episode."""

    def __init__(self, at: int):
        self.at, self.pressed = at, False

    def reset(self):
        pass

    def judge(self, obs, result, step):
        if step == self.at and not self.pressed:
            self.pressed = True
            return StepResult(result.reward, False, True, {**result.info, DISCARD: True})
        return result


@pytest.fixture(scope="module")
def rig():
    rig = sim_env(default_spec(), with_camera=False)
    yield rig
    rig.close()


def test_a_rerecorded_episode_is_thrown_away_and_run_again_with_its_seed(rig):
    sink = Sink()
    summary = Runner(rig, ScriptedPilot(rig.twin), transitions=sink, max_steps=8,
                     judge=RerecordOnce(at=4)).run([7, 8])
    assert [(e.seed, e.steps) for e in summary.episodes] == [(7, 8), (8, 8)]
    assert summary.discarded == 1
    begins = [seed for kind, seed in sink.log if kind == "begin"]
    assert begins == [7, 7, 8]
    first_end = sink.log.index(("begin", 7), 1)
    assert sink.log[:first_end] == [("begin", 7)] + [("add", None)] * 3 + [("discard", None)]


class FaultyArm:
    """The twin's robot, failing like an unplugged servo on given reads."""

    def __init__(self, robot, fail_on: set[int]):
        self.inner, self.fail_on, self.reads = robot, fail_on, 0
        self.name, self.limits = robot.name, robot.limits
        self.torque_calls = []

    def read(self):
        self.reads += 1
        if self.reads in self.fail_on:
            raise DeviceFault("shoulder_lift (id 2): no status packet")
        return self.inner.read()

    def torque(self, enabled):
        self.torque_calls.append(enabled)
        self.inner.torque(enabled)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_device_fault_pauses_and_the_episode_runs_again(rig):
    arm = FaultyArm(rig.robot, fail_on={5})
    rig.robot = arm
    try:
        sink, faults = Sink(), []

        def on_fault(fault):
            faults.append(str(fault))
            return "waited"

        summary = Runner(rig, ScriptedPilot(rig.twin), transitions=sink, max_steps=6, on_fault=on_fault).run([3])
    finally:
        rig.robot = arm.inner
    assert faults == ["shoulder_lift (id 2): no status packet"] and summary.pauses == ["waited"]
    assert [(e.seed, e.steps, e.interrupted) for e in summary.episodes] == [(3, 6, False)]
    assert [k for k, _ in sink.log].count("discard") == 1 and [s for k, s in sink.log if k == "begin"] == [3, 3]
    assert arm.torque_calls[0] is True and arm.torque_calls[-1] is False


def test_without_a_pause_handler_a_fault_stops_the_run_torque_off(rig):
    arm = FaultyArm(rig.robot, fail_on={3})
    rig.robot = arm
    try:
        sink = Sink()
        with pytest.raises(DeviceFault):
            Runner(rig, ScriptedPilot(rig.twin), transitions=sink, max_steps=6).run([3])
    finally:
        rig.robot = arm.inner
    assert sink.log[-1] == ("end", None)  # a plain run keeps what it has, as before
    assert arm.torque_calls == [True, False]


def test_waiting_until_back_polls_each_device_and_says_what_it_waits_for():
    from so101_sim2real.control.pause import wait_until_back

    tries = {"n": 0}

    def arm():
        tries["n"] += 1
        if tries["n"] < 4:
            raise DeviceFault("serial port /dev/ttyACM0 not found")

    said, off, slept = [], [], []
    record = wait_until_back(DeviceFault("the arm stopped"), [arm], [lambda: off.append(1),
                                                                     lambda: 1 / 0], said.append, poll_s=0.5,
                             sleep=slept.append)
    assert off == [1] and tries["n"] == 4 and slept == [0.5] * 3 and record.probes == 4
    assert said[0].startswith("paused: the arm stopped. Torque is off")
    assert said[1] == "still paused: serial port /dev/ttyACM0 not found" and len(said) == 3  # one line per state
    assert said[-1].startswith("resumed after")


@pytest.mark.slow
def test_a_session_on_the_emulated_arm_pauses_when_the_servos_go_silent_and_resumes(snapshot, tmp_path,
                                                                                    monkeypatch):
    """The bus goes dead for 4 s mid-episode (every reply and write lost, as with the servos'
    power cut): the session pauses, the episode is thrown away and run again, nothing is lost."""
    import threading
    import time

    from so101_sim2real.control.recording import Recording
    from so101_sim2real.hardware import bus
    from so101_sim2real.hardware.emulator import Faults
    from so101_sim2real.hardware.registers import REGISTERS
    from so101_sim2real.hilserl.run import RunOptions, train

    # A real port's reply timeout: on the emulator's pty the driver waits 250 ms a reply (a busy machine
    # answers late), which would take the watchdog ~12 s to trip; what is tested here is the pause.
    monkeypatch.setattr(bus, "PTY_TIMEOUT_S", bus.SERIAL_TIMEOUT_S)
    seen = {}

    def started(trainer):
        emulator = next(h.__self__ for h in trainer.env.robot.on_close if hasattr(h, "__self__"))
        seen["emulator"], seen["trainer"] = emulator, trainer

        def cut():
            while trainer.sink.env_steps < 8:
                time.sleep(0.01)
            emulator.faults = Faults(drop=1.0)
            time.sleep(4.0)  # the watchdog needs about 1 s of failed reads to call it a fault (at 20 ms a reply)
            emulator.faults = Faults()

        threading.Thread(target=cut, daemon=True).start()

    said = []
    options = RunOptions(describe(ckpt=snapshot, robot="so101", port="emulator"), intervene="none")
    report = train(tmp_path / "run", 2, options, max_steps=15, on_start=started, say=said.append)
    assert len(report.pauses) == 1 and report.pauses[0].waited_s >= 1.0 and report.pauses[0].probes >= 2
    assert any(s.startswith("paused: ") and "torque is off" in s.lower() for s in said)
    assert any(s.startswith("resumed after") for s in said)
    assert [e.steps for e in report.episodes] == [15, 15] and not report.interrupted
    trainer = seen["trainer"]
    assert trainer.sink.env_steps == 30 and report.counters["env_steps"] == 30
    assert trainer.buffer.online.sampleable.sum() == 30  # the cut episode's rows are dead
    recording = Recording(tmp_path / "run" / "episodes")
    assert [e["seed"] for e in recording.meta["episodes"]] == [0, 1]  # the cut one ran again with its seed
    emulator = seen["emulator"]
    address = REGISTERS["torque_enable"].address
    assert all(s.read(address, 1) == b"\x00" for s in emulator.servos)  # torque off at the end


def test_a_rig_is_back_when_its_arm_reconnects_and_its_camera_gives_a_frame():
    from so101_sim2real.control.pause import env_probes

    calls = []
    rig = SimpleNamespace(robot=SimpleNamespace(reconnect=lambda: calls.append("arm")),
                          perception=SimpleNamespace(camera=SimpleNamespace(read=lambda: calls.append("camera"))))
    for probe in env_probes(rig):
        probe()
    assert calls == ["arm", "camera"]
    twin = SimpleNamespace(robot=object(), perception=None)  # the twin has nothing to lose
    assert env_probes(twin) == []


class FakeGui:
    """OpenCV's window calls, recorded; ``typed`` is what the person presses, one key per frame."""

    def __init__(self, typed=""):
        self.shown, self.typed, self.closed = [], list(typed), False

    def namedWindow(self, title, flags):  # noqa: N802 - OpenCV's names
        self.title = title

    def imshow(self, title, bgr):
        self.shown.append(bgr)

    def waitKey(self, ms):  # noqa: N802
        return ord(self.typed.pop(0)) if self.typed else -1

    def destroyWindow(self, title):  # noqa: N802
        self.closed = True


def test_the_window_shows_frames_with_the_status_and_its_keys_judge_like_the_terminals():
    from so101_sim2real.control.keys import OperatorKeys
    from so101_sim2real.control.window import KeySources, LiveWindow

    gui = FakeGui(typed="r")
    window = LiveWindow(status=lambda: "control: person (leader arm)", gui=gui)
    frame = np.zeros((240, 720, 3), np.uint8)
    frame[..., 0] = 200  # red in RGB
    window.add(frame)
    shown = gui.shown[0]
    assert list(shown[0, 0]) == [0, 0, 200]  # BGR, as OpenCV shows it
    assert shown[210, 4, 2] == 200 // 3  # the status line's strip, near the bottom, darkened under its text
    assert (frame[..., 0] == 200).all()  # the caller's frame is left as it was
    keys = OperatorKeys(KeySources(window, None))
    verdict = keys.judge(None, StepResult(0.0, False, False, {}), 1)
    assert verdict.info.get(DISCARD)
    window.close()
    assert gui.closed


def test_view_is_refused_at_once_without_a_display_or_with_headless_opencv(monkeypatch):
    from so101_sim2real.control.window import LiveWindow, check_display
    from so101_sim2real.errors import So101Error

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(So101Error, match="no display"):
        check_display()
    import cv2

    try:
        cv2.namedWindow("probe")
        cv2.destroyWindow("probe")
        pytest.skip("this OpenCV has windows")  # only where a GUI build is installed
    except cv2.error:
        pass
    with pytest.raises(So101Error, match="pip install opencv-python"):
        LiveWindow()


@pytest.mark.slow
def test_a_session_shows_each_tick_in_the_window(snapshot, tmp_path):
    from so101_sim2real.control.window import LiveWindow
    from so101_sim2real.hilserl.run import RunOptions, train

    gui = FakeGui()
    report = train(tmp_path / "run", 1, RunOptions(describe(ckpt=snapshot), intervene="scripted"), max_steps=3,
                   window=LiveWindow(gui=gui))
    assert [e.steps for e in report.episodes] == [3]
    assert len(gui.shown) >= 3 and gui.shown[0].shape[1] > 3 * gui.shown[0].shape[0] / 2  # camera + 2 channels
