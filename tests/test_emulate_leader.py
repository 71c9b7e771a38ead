"""``so101 emulate --leader --hand FILE``: the hand script, the emulated leader on its own pty with
a hand on its own clock, and a HIL-SERL session across processes against it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from fixtures import ctrl_c_works, run_cli
from so101_sim2real.errors import So101Error
from so101_sim2real.leader.hand_script import Grab, load_hand_script

# ---------------------------------------------------------------------------------------- the script

GOOD = """\
- {at_s: 2, hold_s: 8, guide: cube}
- at_s: 12.5
  hold_s: 1
  guide: still
- {at_s: 20, hold_s: 3, guide: {shoulder_pan: 30, elbow_flex: -20}}
"""


def test_a_hand_script_is_a_list_of_grabs_in_order(tmp_path):
    path = tmp_path / "hand.yaml"
    path.write_text(GOOD)
    assert load_hand_script(path, twin=True) == [
        Grab(2.0, 8.0, "cube"), Grab(12.5, 1.0, "still"), Grab(20.0, 3.0, {"shoulder_pan": 30.0, "elbow_flex": -20.0})]


@pytest.mark.parametrize(("text", "twin", "message"), [
    ("- {at_s: 1, hold: 2, guide: still}", False, "grab 1: unknown key 'hold' (did you mean 'hold_s'?)"),
    ("- {at_s: -1, hold_s: 2, guide: still}", False, "grab 1: at_s -1: seconds, 0 to 86400"),
    ("- {at_s: 1, hold_s: 0, guide: still}", False, "grab 1: hold_s 0"),
    ("- {at_s: 1, hold_s: 2, guide: still}\n- {at_s: 1, hold_s: 2, guide: grab}", False,
     "grab 2: guide 'grab': choose cube, still, or {JOINT: DEGREES, ...}"),
    ("- {at_s: 1, hold_s: 2, guide: cube}", False, "guide cube: the hand steers toward the twin's cube"),
    ("- {at_s: 1, hold_s: 2, guide: {elbow: 10}}", False, "unknown joint 'elbow' (did you mean 'elbow_flex'?)"),
    ("- {at_s: 1, hold_s: 2, guide: {elbow_flex: ten}}", False, "guide: elbow_flex 'ten': expected a number"),
    ("- {at_s: yes, hold_s: 2, guide: still}", False, "at_s True: expected a number"),
    ("- {at_s: 1, guide: still}", False, "grab 1: needs hold_s"),
    ("- {at_s: 5, hold_s: 2, guide: still}\n- {at_s: 6, hold_s: 2, guide: still}", False,
     "grab 2 at_s 6 starts before grab 1 lets go (at 7 s)"),
    ("at_s: 1", False, "expected a list of grabs"),
    ("", False, "expected a list of grabs"),
    ("- {at_s: [1, hold_s: 2}", False, "YAML error at line 1"),
])
def test_a_bad_hand_script_is_one_line_naming_the_key(tmp_path, text, twin, message):
    path = tmp_path / "hand.yaml"
    path.write_text(text)
    with pytest.raises(So101Error) as err:
        load_hand_script(path, twin)
    assert message in err.value.cli_text() and "\n" not in err.value.cli_text()
    assert err.value.cli_text().startswith(f"--hand {path}: ")


def test_a_missing_hand_script_is_named(tmp_path):
    with pytest.raises(So101Error, match="no such file"):
        load_hand_script(tmp_path / "nope.yaml", True)


# ------------------------------------------------------------------------- the leader and its hand

@pytest.fixture(scope="module")
def spec():
    from so101_sim2real.spec import default_spec

    return default_spec()


@pytest.fixture(scope="module")
def kinematics(spec):
    from so101_sim2real.kinematics import Kinematics
    from so101_sim2real.sim import scene as S

    return Kinematics(S.build_model(), spec.action.ik, S.ARM_JOINTS)


def _session(lead, kinematics, spec, seconds: float):
    """A still follower and the leader intervener on the emulated leader's pty, ticking at 50 Hz for
    ``seconds`` after the leader first follows; per tick (seconds since it did, in control, hand holding)."""
    from so101_sim2real.hardware.bus import MotorBus
    from so101_sim2real.hardware.joint_calibration import resolve_calibration
    from so101_sim2real.hardware.so101 import SO101Leader
    from so101_sim2real.interfaces import JointState
    from so101_sim2real.leader.takeover import LeaderIntervener

    cal = resolve_calibration(str(lead.calibration_file), "leader", "leader_calibration")  # --leader-calibration
    arm = SO101Leader(MotorBus(lead.emulator.path, cal.ids), cal, follows=True, max_step_rad=0.04)
    arm.connect()
    follower = np.array([0.1, -0.2, 0.2, 0.1, 0.3, 0.2])
    obs = SimpleNamespace(joints=JointState(follower, np.zeros(6), 0.0), ee_target=kinematics.fk(follower[:5])[0])
    intervener = LeaderIntervener(arm, kinematics, spec.action, period_s=0.02)
    intervener.reset(0)
    ticks, end = [], None
    try:
        while end is None or time.monotonic() < end:
            intervener.act(obs, np.zeros(4, np.float32))
            started = lead.hand.started_at
            if started is not None:
                end = end or started + seconds
                ticks.append((time.monotonic() - started, intervener.in_control, lead.hand.holding))
            time.sleep(0.02)
        return ticks, intervener, arm.read().position
    finally:
        arm.close()


def test_the_hand_grabs_at_its_time_the_takeover_is_seen_then_it_lets_go(kinematics, spec):
    from so101_sim2real.leader.emulator import EmulatedLeader
    from so101_sim2real.leader.hand_script import parse_hand_script

    # 30 degrees at the hand's 90 deg/s, then held still until the let-go: shorter than the 0.4 s of
    # stillness that ends an intervention, so the hand lets go while the person still has control.
    grabs = parse_hand_script([{"at_s": 1.0, "hold_s": 0.6, "guide": {"shoulder_pan": 30}}], "--hand", False)
    with EmulatedLeader(grabs) as lead:
        ticks, intervener, _ = _session(lead, kinematics, spec, seconds=3.0)
        events = [(e.kind, e.t_s) for e in lead.hand.events]
        held = [lead.emulator.servo(i).held for i in range(1, 7)]
    # on the emulator's clock, from the first follow, within a tick or two of the 50 Hz hand
    assert [kind for kind, _ in events] == ["grab", "let go"]
    assert [t for _, t in events] == pytest.approx([1.0, 1.6], abs=0.06)
    seen = next(t for t, control, _ in ticks if control)
    assert 1.0 <= seen <= 1.2, seen  # a takeover after the grab, within a few ticks, and none before
    assert intervener.takeovers == 1
    assert held == [None] * 6  # let go: the servos are the driver's again
    assert not ticks[-1][1]  # the arms settled after the let-go: the leader follows the follower again


def test_a_leader_with_no_hand_just_follows_and_matches_the_twin_follower(kinematics, spec):
    from so101_sim2real.control.twin_bus import twin_arm_calibration
    from so101_sim2real.interfaces import SafetyLimits
    from so101_sim2real.leader.arm import check_consistent
    from so101_sim2real.leader.emulator import EmulatedLeader, HandThread

    with EmulatedLeader() as lead:
        assert lead.hand is None
        lead.hand = HandThread(lead.emulator, lead.cal, [])  # a hand with nothing to do: only its clock
        lead.hand.start()
        ticks, intervener, q = _session(lead, kinematics, spec, seconds=1.0)
    assert intervener.takeovers == 0 and not any(control for _, control, _ in ticks)
    assert np.allclose(q, [0.1, -0.2, 0.2, 0.1, 0.3, 0.2], atol=0.01)  # it went where the follower is
    twin_follower = SimpleNamespace(robot=SimpleNamespace(limits=SafetyLimits.from_ranges(
        twin_arm_calibration().sim_ranges(), 0.15)))  # --calibration twin
    check_consistent(q, twin_follower)
    assert not lead.folder.exists()  # the calibration file goes with the emulator


# ---------------------------------------------------------------------------- across processes

@pytest.fixture()
def wrist_video(tmp_path):
    import cv2

    from so101_sim2real.sim.camera import SimCamera
    from so101_sim2real.sim.task import LiftCubeTask
    from so101_sim2real.spec import default_spec

    spec = default_spec()
    task = LiftCubeTask(spec)
    camera = SimCamera(task.model, task.data, spec.observation)
    path = tmp_path / "wrist.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 480))
    for seed in range(3):
        task.reset(seed)
        writer.write(cv2.cvtColor(camera.read().rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    camera.close()
    return path


@pytest.fixture()
def classifier(tmp_path):
    import torch

    from so101_sim2real.reward import classifier as C

    torch.manual_seed(0)
    config = C.ClassifierConfig("obs", ["seg", "disparity"], (84, 84), "center_square", (480, 640), threshold=0.6)
    return C.save_classifier(C.Classifier(C.RewardNet(2), config), tmp_path / "classifier")


@pytest.mark.slow  # two processes, the real perception on a video (seconds a tick on 2 CPU cores)
def test_a_session_in_another_process_records_the_hands_takeover(capsys, tmp_path, snapshot, seg_ckpt, depth_folder,
                                                                 wrist_video, classifier):
    hand = tmp_path / "hand.yaml"
    hand.write_text("- {at_s: 1, hold_s: 5, guide: cube}\n")
    proc = subprocess.Popen([sys.executable, "-m", "so101_sim2real", "emulate", "--twin", "--leader", "--hand",
                             str(hand)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_works)
    try:
        follower, leader, calibration = (proc.stdout.readline().strip() for _ in range(3))
        out = tmp_path / "run"
        code, text, err = run_cli(
            capsys, "hilserl", "train", "--ckpt", str(snapshot), "--out", str(out), "--robot", "so101", "--port",
            follower, "--calibration", "twin", "--camera", str(wrist_video), "--perception", "real", "--seg-ckpt",
            str(seg_ckpt), "--depth-model", str(depth_folder), "--reward", "classifier", "--classifier",
            str(classifier), "--intervene", "leader", "--leader-port", leader, "--leader-calibration", calibration,
            "--period", "0.5", "--episodes", "1", "--max-steps", "6", "--set", "success_min_steps=1000", "--set",
            "learner.batch_size=8", "--set", "warmup_steps=1000")
    finally:
        proc.send_signal(2)
        _, emulator_err = proc.communicate(timeout=20)
    assert code == 0, err
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["interventions"] > 0, text
    assert "(1 leader takeovers)" in text
    assert proc.returncode == 0, emulator_err
    assert "a scripted hand makes 1 grab(s)" in emulator_err and "stopped;" in emulator_err
    assert "hand: grab 1 at 1." in emulator_err  # told on stderr as it happens
