"""The emulated arm's camera (``so101 emulate --twin`` serves it; ``--camera twin`` reads it), the
emulated person who places the cube, the checks that come before any network loads, and the
period an arm runs at."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from fixtures import run_cli as run


@pytest.fixture()
def emulated_twin():
    """``so101 emulate --twin`` in this process: servos on a pty, the twin behind them, its camera served."""
    from so101_sim2real.control.twin_bus import attach_twin
    from so101_sim2real.control.twin_camera import TwinCameraServer
    from so101_sim2real.hardware.emulator import BusEmulator

    emu = BusEmulator(list(range(1, 7)))
    bridge = attach_twin(emu, seed=3)
    port = emu.start()
    server = TwinCameraServer(bridge, bridge.task.spec.observation, port)
    server.start()
    try:
        yield port, bridge, server
    finally:
        server.stop()
        emu.stop()


def test_the_emulated_arm_has_a_camera_at_the_real_cameras_size_posed_by_its_joints(emulated_twin):
    from so101_sim2real.cameras import open_camera

    port, bridge, _ = emulated_twin
    camera = open_camera("twin", port=port)  # as --camera twin beside --port PTY
    try:
        first = camera.read()
        assert first.rgb.shape == (480, 640, 3) and first.rgb.dtype == np.uint8 and first.rgb.flags.writeable
        assert camera.frame_size() == (480, 640)
        with bridge.lock:  # the wrist turns: the picture must turn with it
            bridge.task.data.qpos[bridge._qpos[4]] += 0.6
            import mujoco

            mujoco.mj_forward(bridge.task.model, bridge.task.data)
        turned = camera.read()
        assert turned.index == first.index + 1
        assert np.abs(turned.rgb.astype(int) - first.rgb.astype(int)).mean() > 5
    finally:
        camera.close()


def test_the_emulated_person_places_the_cube_and_the_frames_count_the_episodes_ticks(emulated_twin):
    from so101_sim2real.cameras import open_camera

    port, bridge, server = emulated_twin
    assert server.now() is None  # no episode yet: a hand waiting for "episode 1" waits
    camera = open_camera(f"twin:{port}")
    try:
        camera.start_episode(2, (0.262, -0.013))
        with bridge.lock:
            cube = bridge.task.data.qpos[bridge.task._cube_qpos:bridge.task._cube_qpos + 3].copy()
        np.testing.assert_allclose(cube[:2], [0.262, -0.013], atol=1e-9)
        assert server.now() == (2, 0)
        camera.read()
        camera.read()
        assert server.now() == (2, 2)
    finally:
        camera.close()


def test_a_camera_whose_emulator_stopped_is_a_device_fault_and_none_at_all_is_one_line(emulated_twin, tmp_path):
    from so101_sim2real.cameras import CameraError, CameraStopped, open_camera
    from so101_sim2real.errors import DeviceFault

    port, _, server = emulated_twin
    camera = open_camera("twin", port=port)
    server.stop()
    with pytest.raises(CameraStopped) as stopped:  # a session pauses on it, as on an unplugged camera
        camera.read()
    assert isinstance(stopped.value, DeviceFault) and "so101 emulate --twin" in str(stopped.value)
    camera.close()
    with pytest.raises(CameraError, match="port PTY .from .so101 emulate --twin"):
        open_camera("twin")
    with pytest.raises(CameraError, match="no emulated camera there"):
        open_camera(f"twin:{tmp_path}/nothing")


def test_a_client_idle_for_a_while_keeps_its_connection_and_a_new_session_its_own_clock(emulated_twin):
    """infer says hello, then loads its networks for a minute; a reset waits seconds between frames."""
    import time

    from so101_sim2real.cameras import TwinCamera

    port, _, server = emulated_twin
    camera = TwinCamera(port)
    try:
        camera.start_episode(3, None)
        camera.read()
        time.sleep(1.5)
        camera.read()
        assert camera.reconnects == 0 and server.now() == (3, 2)
    finally:
        camera.close()
    again = TwinCamera(port)  # the next session: its episodes are its own
    try:
        assert server.now() is None
    finally:
        again.close()


def test_a_request_the_emulator_cannot_answer_is_one_line_and_the_camera_goes_on(emulated_twin):
    from so101_sim2real.cameras import CameraError, TwinCamera

    port, _, _ = emulated_twin
    camera = TwinCamera(port)
    try:
        with pytest.raises(CameraError, match="the emulator says KeyError"):
            camera._ask({"op": "episode"})  # no episode number
        assert camera.read().rgb.shape == (480, 640, 3) and camera.reconnects == 0
    finally:
        camera.close()


def _video(path, size):
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    for _ in range(3):
        writer.write(np.full((h, w, 3), 90, np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize("command", ["perceive", "infer"])
def test_a_camera_of_the_wrong_size_is_refused_before_any_network_loads(capsys, tmp_path, snapshot, command,
                                                                        emulated_twin):
    """The networks' paths do not exist: had they been loaded first, the error would be about them."""
    video = _video(tmp_path / "panels.mp4", (800, 240))  # what 'infer --video' writes
    models = ["--seg-ckpt", str(tmp_path / "missing.ckpt"), "--depth-model", str(tmp_path / "missing-depth")]
    if command == "perceive":
        line = ["perceive", str(video), *models]
    else:
        line = ["infer", "--ckpt", str(snapshot), "--robot", "so101", "--port", emulated_twin[0], "--calibration",
                "twin", "--camera", str(video), "--perception", "real", *models]
    code, _, err = run(capsys, *line)
    assert code == 2 and "800x240" in err and "640x480" in err and err.count("\n") == 1, err


def test_the_recording_keeps_the_period_that_ran_on_an_arm(capsys, tmp_path):
    """On the emulated arm the loop keeps a period it measured; the recording says which, and
    the summary names the deadline its late ticks missed."""
    code, out, err = run(capsys, "infer", "--ckpt", "scripted", "--robot", "so101", "--port", "emulator",
                         "-n", "1", "--max-steps", "6", "--record", str(tmp_path / "rec"), "--no-record-rgb")
    assert code == 0, err
    meta = json.loads((tmp_path / "rec" / "recording.json").read_text())
    assert f"control period {meta['period_s'] * 1e3:.0f} ms: a tick takes" in out  # measured, and said
    assert np.isfinite(meta["episodes"][0]["tick_p50_s"])  # what ran, beside what was asked for


def test_a_given_period_is_the_one_recorded(capsys, tmp_path):
    code, out, err = run(capsys, "infer", "--ckpt", "scripted", "--robot", "so101", "--port", "emulator",
                         "-n", "1", "--max-steps", "4", "--period", "0.15", "--record", str(tmp_path / "rec"),
                         "--no-record-rgb")
    assert code == 0, err
    meta = json.loads((tmp_path / "rec" / "recording.json").read_text())
    assert meta["period_s"] == 0.15 and "control period 150 ms, as asked" in out
    assert np.isfinite(meta["episodes"][0]["tick_p50_s"])


def test_the_summary_names_the_deadline_late_ticks_missed():
    from so101_sim2real.control.infer import render_summary
    from so101_sim2real.control.runner import EpisodeResult, RunSummary

    summary = RunSummary([EpisodeResult(0, 0, None, 10, 0.0)], overruns=7, ticks=10, period_s=0.12)
    assert "7 of 10 ticks took longer than the 120 ms period" in render_summary(summary)


def test_a_session_its_rig_refuses_leaves_no_run_folder(capsys, tmp_path, snapshot):
    """The rig's own checks (its networks here, an arm's camera or weights) come after the run's options
    are checked; a start they refuse is not a run to --resume."""
    code, _, err = run(capsys, "hilserl", "train", "--ckpt", str(snapshot), "--out", str(tmp_path / "run"),
                       "--robot", "so101", "--port", "emulator", "--perception", "real", "--seg-ckpt",
                       str(tmp_path / "missing.ckpt"), "--episodes", "1")
    assert code == 2 and "missing.ckpt" in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()
