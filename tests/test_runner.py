"""The control loop: policies on the twin, recording, video, and stopping safely."""

import json
import os
import signal

import cv2
import numpy as np
import pytest

from so101_sim2real.control.env import sim_env
from so101_sim2real.control.pilots import PolicyPilot, ScriptedPilot
from so101_sim2real.control.recording import Recorder, Recording
from so101_sim2real.control.runner import Runner
from so101_sim2real.control.video import VideoWriter
from so101_sim2real.errors import So101Error
from so101_sim2real.policy.runtime import Policy


@pytest.fixture(scope="module")
def policy(snapshot):
    return Policy.load(snapshot)


@pytest.fixture(scope="module")
def rig(policy):
    rig = sim_env(policy.spec)
    yield rig
    rig.close()


class StopAt:
    """Wraps a pilot and raises or signals at a given tick, like a user pressing Ctrl-C."""

    def __init__(self, pilot, tick, how):
        self.inner, self.tick, self.how, self.calls = pilot, tick, how, 0
        self.name, self.needs_pixels = pilot.name, pilot.needs_pixels

    def reset(self, obs):
        self.inner.reset(obs)

    def act(self, obs):
        self.calls += 1
        if self.calls == self.tick:
            if self.how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise self.how()
        return self.inner.act(obs)


@pytest.mark.slow
def test_policy_runs_and_records(rig, policy, tmp_path):
    rec = Recorder(tmp_path / "rec", policy.spec, "sim", "snapshot", rig.period_s)
    summary = Runner(rig, PolicyPilot(policy), recorder=rec, max_steps=6).run([3])
    assert [(e.steps, e.interrupted) for e in summary.episodes] == [(6, False)]
    assert {"obs", "policy", "control", "sim"} <= set(summary.timing)
    recording = Recording(tmp_path / "rec")
    assert recording.meta["episodes"][0]["steps"] == 6 and recording.spec == policy.spec
    arrays = recording.load(0)
    assert arrays["obs"].shape == (6, 2, 84, 84) and arrays["obs"].dtype == np.uint8
    assert arrays["joint_pos"].shape == (6, 6) and arrays["action"].shape == (6, 4)
    assert np.all(np.abs(arrays["target"] - arrays["joint_pos"]) <= rig.robot.limits.max_step + 1e-9)
    assert np.all(np.diff(arrays["time"]) == pytest.approx(rig.period_s))  # one control period per row
    rgb = recording.rgb(arrays, 0)
    assert rgb.shape == (480, 640, 3)
    # The first row is the observation after reset: re-render it and compare.
    rig.reset(3)
    again = rig.perception.observe(with_rgb=True)
    assert np.array_equal(arrays["obs"][0], again.frame)
    assert np.abs(rgb.astype(int) - again.rgb.astype(int)).mean() < 3  # JPEG at quality 95
    # The same seed with the same deterministic policy gives the same actions.
    rerun = Runner(rig, PolicyPilot(policy), max_steps=6).run([3])
    assert rerun.episodes[0].ret == pytest.approx(summary.episodes[0].ret)


@pytest.mark.slow
def test_video_shows_the_camera_and_both_channels(rig, policy, tmp_path):
    path = tmp_path / "run.mp4"
    Runner(rig, PolicyPilot(policy), video=VideoWriter(path, 50), max_steps=4).run([0])
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    hold = round(0.5 / rig.period_s)  # the last frame, held half a second with the outcome
    assert len(frames) == 4 + hold
    h, w = frames[0].shape[:2]
    assert h == 240 and w == 320 + 240 + 240  # RGB 4:3 | seg | disparity


def test_video_frames_name_the_episode_its_seed_and_its_outcome(rig, monkeypatch, tmp_path):
    import so101_sim2real.control.runner as runner

    captions = []

    def compose(rgb, frame, channels, caption=""):
        captions.append(caption)
        return np.zeros((8, 8, 3), np.uint8)

    monkeypatch.setattr(runner, "compose", compose)
    video = VideoWriter(tmp_path / "run.mp4", 50)
    summary = Runner(rig, ScriptedPilot(rig.twin), video=video, max_steps=3).run([7, 8])
    assert video.frames == 2 * (3 + round(0.5 / rig.period_s))  # each outcome frame held half a second
    first = summary.episodes[0]
    assert captions[0].startswith("episode 1/2  seed 7\nstep 1  return ")
    assert captions[2:4] == [f"episode 1/2  seed 7\nstep 3  return {first.ret:.1f}",
                             "episode 1/2  seed 7\nno success after 3 steps"]
    assert captions[4].startswith("episode 2/2  seed 8\nstep 1")
    assert captions[-1] == "episode 2/2  seed 8\nno success after 3 steps"


@pytest.mark.parametrize("how", [KeyboardInterrupt, "sigterm"])
def test_ctrl_c_and_sigterm_stop_with_torque_off_and_keep_the_recording(rig, how, tmp_path):
    rec = Recorder(tmp_path / "rec", rig.spec, "sim", "scripted", rig.period_s, with_rgb=False)
    pilot = StopAt(ScriptedPilot(rig.twin), tick=5, how=how)
    summary = Runner(rig, pilot, recorder=rec).run([0, 1, 2])
    assert summary.interrupted and len(summary.episodes) == 1 and summary.episodes[0].interrupted
    assert summary.to_dict()["episodes"] == 0  # an interrupted episode is not scored
    assert not rig.robot.torque_enabled
    meta = json.loads((tmp_path / "rec" / "recording.json").read_text())
    assert meta["episodes"][0]["interrupted"] and meta["episodes"][0]["steps"] == 4
    assert Recording(tmp_path / "rec").load(0)["joint_pos"].shape == (4, 6)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back


def test_an_error_in_the_pilot_still_turns_torque_off(rig):
    pilot = StopAt(ScriptedPilot(rig.twin), tick=3, how=RuntimeError)
    with pytest.raises(RuntimeError):
        Runner(rig, pilot).run([0])
    assert not rig.robot.torque_enabled


def test_recording_refuses_a_folder_with_files(rig, tmp_path):
    (tmp_path / "old.txt").write_text("keep me")
    with pytest.raises(So101Error, match="not empty"):
        Recorder(tmp_path, rig.spec, "sim", "scripted", rig.period_s)
    assert (tmp_path / "old.txt").read_text() == "keep me"


def test_recording_of_another_format_is_refused(tmp_path):
    (tmp_path / "recording.json").write_text(json.dumps({"format": "so101-recording", "version": 99}))
    with pytest.raises(So101Error, match="v99"):
        Recording(tmp_path)
    with pytest.raises(So101Error, match="not a recording"):
        Recording(tmp_path / "nowhere")


def test_rate_keeper_counts_missed_deadlines_instead_of_catching_up():
    import time

    from so101_sim2real.control.timing import RateKeeper

    fast = RateKeeper(10.0, realtime=False)
    fast.start()
    fast.wait()  # not real time: never sleeps, never counts
    assert fast.overruns == 0
    keeper = RateKeeper(0.05, realtime=True)
    keeper.start()
    time.sleep(0.2)  # a tick four periods late
    keeper.wait()
    keeper.wait()  # the next deadline is one period after the late tick, not four behind
    assert keeper.overruns == 1


@pytest.mark.slow
def test_the_real_driver_moves_the_twin_through_the_emulator(policy):
    """--robot so101 --port emulator: bus, STS3215 emulator, follower, calibration, on the twin."""
    import time

    from so101_sim2real.control.env import so101_env

    rig = so101_env(policy.spec, "emulator", with_camera=True)
    try:
        summary = Runner(rig, ScriptedPilot(rig.twin), realtime=True).run([0])
        assert summary.episodes[0].success and summary.episodes[0].steps < 80
        assert {"policy", "control", "so101"} <= set(summary.timing)
        assert not rig.robot.torque_enabled
        gains = rig.twin.model.actuator_gainprm[:, 0]
        deadline = time.monotonic() + 1.0
        while gains.any() and time.monotonic() < deadline:  # the servos apply torque-off on their next update
            time.sleep(0.01)
        assert not gains.any()  # every servo limp: the twin's actuators have no gain
        short = Runner(rig, PolicyPilot(policy), realtime=True, max_steps=3).run([1])
        assert short.episodes[0].steps == 3 and "obs" in short.timing
    finally:
        rig.close()
