"""`so101 infer` end to end on the twin: the scripted expert, a user's snapshot, bad input."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from fixtures import run_cli as run


def test_scripted_expert_reports_success_as_json(capsys):
    code, out, _ = run(capsys, "infer", "--ckpt", "scripted", "--episodes", "3", "--seed", "5", "--json")
    assert code == 0
    lines = out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["episodes"] == 3 and result["success_rate"] == 1.0
    assert 20 < result["mean_length"] < 100 and result["mean_return"] > 100
    assert [e["seed"] for e in result["per_episode"]] == [5, 6, 7]
    assert any(line.startswith("success 3/3") for line in lines)
    assert "twin: MuJoCo 3.4.0 (as trained); kinematics: live physics (as trained)" in lines


def test_a_policy_trained_under_another_mujoco_is_warned_about(capsys, tmp_path):
    from so101_sim2real.spec import default_spec_text

    spec = tmp_path / "spec.yaml"
    spec.write_text(default_spec_text().replace('version: "3.4.0"', 'version: "3.17.0"'))
    code, out, err = run(capsys, "infer", "--ckpt", "scripted", "--episodes", "1", "--max-steps", "2",
                         "--spec", str(spec))
    assert code == 0
    assert "MuJoCo 3.4.0 (trained under 3.17.0)" in out
    assert "warning: the policy was trained under MuJoCo 3.17.0" in err and "pip install mujoco==3.17.0" in err


def test_the_twin_can_run_the_real_arms_kinematics_when_asked(capsys):
    code, out, _ = run(capsys, "infer", "--ckpt", "scripted", "--episodes", "1", "--max-steps", "2",
                       "--set-spec", "action.ik.pose_from=measured_joints")
    assert code == 0 and "kinematics: FK of the measured joints; trained with live physics" in out


def test_the_emulated_arm_says_it_uses_fk_of_measured_joints(capsys):
    code, out, _ = run(capsys, "infer", "--ckpt", "scripted", "--robot", "so101", "--port", "emulator",
                       "--episodes", "1", "--max-steps", "2")
    assert code == 0 and "kinematics: FK of the measured joints; trained with live physics" in out


@pytest.mark.slow
def test_a_robobase_snapshot_runs_end_to_end(snapshot, tmp_path):
    video, record = tmp_path / "eval.mp4", tmp_path / "rec"
    proc = subprocess.run(
        [sys.executable, "-m", "so101_sim2real", "infer", "--ckpt", str(snapshot), "--episodes", "2",
         "--max-steps", "4", "--video", str(video), "--record", str(record), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["episodes"] == 2 and result["mean_length"] == 4
    assert {"obs", "policy", "control", "sim"} <= set(result["latency_ms"])
    held = 25  # each episode's last frame held half a second (25 ticks of 20 ms) with its outcome
    assert cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT) == 2 * (4 + held)
    meta = json.loads((record / "recording.json").read_text())
    assert [e["steps"] for e in meta["episodes"]] == [4, 4] and meta["pilot"] == snapshot.name


@pytest.mark.slow
def test_spec_overrides_reach_the_observation(capsys, snapshot, tmp_path):
    frames = {}
    for name, extra in (("trained", []), ("crop", ["--set-spec", "observation.disparity.normalise_region=crop"])):
        code, out, _ = run(capsys, "infer", "--ckpt", str(snapshot), "--episodes", "1", "--max-steps", "2",
                           "--record", str(tmp_path / name), "--no-record-rgb", *extra)
        assert code == 0, out
        frames[name] = np.load(tmp_path / name / "episode_0000.npz")["obs"]
    assert "spec overrides for this run (not what the policy was trained with): " \
           "observation.disparity.normalise_region=crop" in out
    assert np.array_equal(frames["trained"][:, 0], frames["crop"][:, 0])  # the same scene, the same classes
    assert not np.array_equal(frames["trained"][:, 1], frames["crop"][:, 1])  # disparity normalised over the crop


@pytest.mark.parametrize("args, expected", [
    (["--ckpt", "missing.pt"], "no such file"),
    (["--ckpt", "scripted", "--robot", "so101"], "needs --port"),
    (["--ckpt", "scripted", "--robot", "ur5"], "unknown"),
    (["--ckpt", "scripted", "--camera", "0"], "--camera: only for --robot so101"),
    (["--ckpt", "scripted", "--port", "/dev/ttyACM0"], "--port: only for --robot so101"),
    (["--ckpt", "scripted", "--robot", "so101", "--port", "/dev/ttyACM0"], "the scripted expert reads the cube"),
    (["--ckpt", "scripted", "--set-spec", "observation.crop=diagonal"], "observation.crop"),
    (["--ckpt", "scripted", "--set-spec", "observaton.crop=none"], "observaton"),
    (["--ckpt", "scripted", "--set-spec", "nonsense"], "KEY=VALUE"),
    (["--ckpt", "scripted", "--video", "out.gif"], ".mp4"),
    (["--ckpt", "scripted", "--episodes", "0"], "at least 1"),
    (["--ckpt", "scripted", "--record", __file__], "not a folder"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, expected):
    code, out, err = run(capsys, "infer", *args)
    assert code == 2 and expected in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_used_record_folder_is_refused_before_anything_runs(capsys, tmp_path):
    (tmp_path / "episode_0000.npz").write_bytes(b"precious")
    code, out, err = run(capsys, "infer", "--ckpt", "scripted", "--record", str(tmp_path))
    assert code == 2 and "not empty" in err and "episode" not in out
    assert (tmp_path / "episode_0000.npz").read_bytes() == b"precious"


def _in_a_terminal(*args: str) -> str:
    """Run ``so101 ARGS`` on a pseudo-terminal of 100 columns; everything it drew, carriage returns as lines."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "so101_sim2real", *args], stdin=child, stdout=child, stderr=child)
    os.close(child)
    out = b""
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        out += data
    os.close(main)
    assert proc.wait(timeout=120) == 0, out.decode(errors="replace")
    return out.decode(errors="replace").replace("\r", "\n")


@pytest.mark.slow
def test_in_a_terminal_a_bar_shows_the_episode_the_step_and_the_time(tmp_path):
    drawn = _in_a_terminal("infer", "--ckpt", "scripted", "-n", "2", "--max-steps", "15", "--video",
                           str(tmp_path / "v.mp4"))
    assert "| 0/2 [" in drawn and "step 15]" in drawn and "| 1/2 [" in drawn
    assert "episode 1/2  seed 0: no success after 15 steps" in drawn
