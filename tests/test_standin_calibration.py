"""Calibrating on the stand-in (issue 29, its first stage): the emulated arm's camera, picture and joints
are the stand-in world's, and each calibration recovers what the world put there."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from fixtures import run_cli

CAMERA_WORLD = {"seed": 0, "gaps": {"lens_distortion": None, "intrinsics": None, "camera_mount": None,
                                    "joint_offsets": None}}


@pytest.fixture()
def world(tmp_path):
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump(CAMERA_WORLD))
    return path


def test_the_worlds_true_rig_is_its_camera_its_mount_and_the_negative_of_its_offsets():
    from so101_sim2real.geometry.rig_file import default_rig
    from so101_sim2real.sim.standin import CameraMount, Intrinsics, JointOffsets, LensDistortion, StandIn
    from so101_sim2real.sim.standin_scene import standin_rig

    guess = default_rig()
    assert np.allclose(standin_rig(StandIn({}), guess).camera.K, guess.camera.K)
    rig = standin_rig(StandIn({"lens_distortion": LensDistortion(), "intrinsics": Intrinsics(),
                               "camera_mount": CameraMount(), "joint_offsets": JointOffsets()}), guess)
    assert rig.camera.fx == pytest.approx(guess.camera.fx * 1.02)
    assert rig.camera.cx == pytest.approx(guess.camera.cx + 6)
    assert rig.camera.D[0] == -0.06 and rig.calibrated
    assert np.allclose(np.subtract(rig.mount_pos, guess.mount_pos) * 1000, (2.0, -1.5, 1.5))
    assert np.allclose(np.degrees(rig.joint_offsets_rad), [-1.5, 1.0, -2.0, 1.5, -1.0, 0.0])


def test_the_camera_calibration_finds_the_worlds_lens(capsys, tmp_path, world):
    from so101_sim2real.geometry.camera_model import CameraModel

    code, out, err = run_cli(capsys, "calibrate", "camera", "--camera", "twin", "--standin", str(world), "--out",
                             str(tmp_path / "camera.yaml"), "--views", "12")
    assert code == 0, err
    assert "against the stand-in's lens" in out and "k1 -0.06" in out
    model = CameraModel.load(tmp_path / "camera.yaml")
    assert model.fx == pytest.approx(346.5, rel=0.01) and model.cx == pytest.approx(325.5, abs=2.0)
    assert model.D[0] == pytest.approx(-0.06, abs=0.01)


@pytest.mark.slow
def test_the_rig_calibration_finds_the_worlds_joint_offsets_through_its_lens(capsys, tmp_path, world):
    from so101_sim2real.geometry.rig_file import RigGeometry

    code, _, err = run_cli(capsys, "calibrate", "camera", "--camera", "twin", "--standin", str(world), "--out",
                           str(tmp_path / "camera.yaml"), "--views", "12")
    assert code == 0, err
    code, out, err = run_cli(capsys, "calibrate", "rig", "--port", "emulator", "--standin", str(world),
                             "--camera-model", str(tmp_path / "camera.yaml"), "--out", str(tmp_path / "rig.yaml"))
    assert code == 0, err
    assert "rehearsal on the stand-in world" in out
    rig = RigGeometry.load(tmp_path / "rig.yaml")
    # the world's offsets, negated (a rig adds them to a reading); the wrist roll's lands in the mount
    assert np.degrees(rig.joint_offsets_rad[:4]) == pytest.approx([-1.5, 1.0, -2.0, 1.5], abs=0.3)
    assert rig.camera.D[0] == pytest.approx(-0.06, abs=0.01)  # the camera.yaml's lens, kept


@pytest.mark.parametrize("args, message", [
    (["calibrate", "rig", "--port", "/dev/ttyACM0", "--out", "r.yaml", "--standin", "W"],
     "a stand-in is rehearsed on the emulated arm"),
    (["calibrate", "align", "--port", "/dev/ttyACM0", "--out", "r.yaml", "--standin", "W"],
     "a stand-in is rehearsed on the emulated arm"),
    (["calibrate", "camera", "--camera", "0", "--out", "c.yaml", "--standin", "W"],
     "a stand-in's camera is the twin's"),
    (["calibrate", "rig", "--port", "emulator", "--out", "r.yaml", "--standin", "W"],
     "the fit needs the stand-in camera's lens"),
    (["calibrate", "align", "--port", "emulator", "--out", "r.yaml", "--standin", "W"],
     "reads the stand-in's picture with a segmentation network"),
])
def test_a_stand_in_with_a_real_device_is_refused(capsys, tmp_path, world, args, message):
    args = [str(world) if a == "W" else str(tmp_path / a) if a.endswith(".yaml") else a for a in args]
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def _settled(env) -> np.ndarray:
    """The twin's joints once they stop moving (an emulated arm's physics runs on in its own thread, slower
    on a busy machine)."""
    import time

    last = None
    for _ in range(100):
        q = np.array(env.twin.qpos()[:6], dtype=float)
        if last is not None and np.abs(q - last).max() < 1e-4:
            return q
        last = q
        time.sleep(0.05)
    return q


@pytest.mark.parametrize("port", [None, "emulator"])
def test_on_a_stand_in_a_rig_file_corrects_the_arms_readings_and_leaves_its_camera(port):
    """A stand-in is an arm: its rig file (what calibrating it found) is added to its readings, as an arm's
    calibration adds it; the world's camera stays where the world put it."""
    from so101_sim2real.control.env import sim_env, so101_env
    from so101_sim2real.geometry.rig_file import default_rig
    from so101_sim2real.sim.standin import CameraMount, JointOffsets, StandIn
    from so101_sim2real.sim.standin_scene import standin_rig
    from so101_sim2real.spec import default_spec

    world = StandIn({"joint_offsets": JointOffsets(), "camera_mount": CameraMount()})
    rig = standin_rig(world, default_rig())
    spec = default_spec()
    for geometry, off in ((None, np.radians(JointOffsets().deg)), (rig, 0.0)):
        env = (sim_env(spec, with_camera=False, standin=world, geometry=geometry) if port is None else
               so101_env(spec, port, with_camera=False, standin=world, geometry=geometry))
        try:
            env.task.reset(1)
            true = _settled(env)
            # the servos' steps and a physics thread that runs on: within 0.5 deg, under the smallest offset (1 deg)
            assert np.allclose(env.robot.read().position[:5], (true + off)[:5], atol=np.radians(0.5))
            camera_pos = env.twin.model.cam_pos[env.twin.model.camera("wrist_cam").id].copy()
        finally:
            env.close()
        if geometry is None:
            uncorrected = camera_pos
    assert np.allclose(camera_pos, uncorrected)  # the rig did not move the world's camera
