"""The stand-in world: its gaps read from YAML, built into the scene, the picture and the arm."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from so101_sim2real.errors import So101Error
from so101_sim2real.sim import scene as S
from so101_sim2real.sim.standin import GAPS, StandIn, default_standin, load_standin, standin_from_dict
from so101_sim2real.sim.standin_scene import DISTRACTOR_BODY, standin_scene

ROOT = Path(__file__).resolve().parents[1]
SIZE = (480, 640)


def test_the_shipped_world_is_every_gap_at_its_default_and_documents_every_amount():
    text = (ROOT / "configs" / "standin.yaml").read_text()
    assert load_standin(ROOT / "configs" / "standin.yaml") == default_standin()
    for name, cls in GAPS.items():
        assert f"  {name}:" in text
        for amount in cls.__dataclass_fields__:
            assert f"{amount}:" in text, (name, amount)


def test_a_world_round_trips_through_its_dict_and_a_gap_named_alone_takes_its_defaults():
    world = standin_from_dict({"seed": 3, "gaps": {"latency": {"ms": 40}, "jpeg": None}})
    assert world.get("latency").ms == 40 and world.get("jpeg").quality == 70 and not world.has("cube")
    assert standin_from_dict(world.to_dict()) == world
    assert world.alone("latency") == StandIn({"latency": world.get("latency")}, 3)
    assert default_standin().alone("cube").gaps == {"cube": GAPS["cube"]()}


@pytest.mark.parametrize("data, message", [
    ({"gaps": {"latnecy": {}}}, "gaps.latnecy: unknown gap (did you mean 'latency'?)"),
    ({"gaps": {"latency": {"sec": 1}}}, "gaps.latency.sec: unknown"),
    ({"gaps": {"cube": {"mass_kg": -1}}}, "gaps.cube.mass_kg: must be positive"),
    ({"gaps": {"camera_mount": {"shift_mm": [1, 2]}}}, "gaps.camera_mount.shift_mm: expected 3 numbers"),
    ({"gaps": {"jpeg": {"quality": 0}}}, "gaps.jpeg: out of range (quality: 1-100)"),
    ({"gaps": {"jpeg": {"quality": 7.5}}}, "gaps.jpeg.quality: expected a whole number"),
    ({"gaps": {"lighting": {"colour": [1, 2, 0]}}}, "gaps.lighting.colour: each channel in [0, 1]"),
    ({"gaps": {"period": {"ms": "fast"}}}, "gaps.period.ms: expected a number"),
    ({"seed": 1.5}, "seed: expected a whole number"),
    ({"gap": {}}, "gap: unknown (did you mean 'gaps'?)"),
    ([1, 2], "expected a mapping"),
])
def test_a_bad_world_is_refused_in_one_line(data, message):
    with pytest.raises(So101Error, match=None) as err:
        standin_from_dict(data, "w.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_bad_file_is_refused_in_one_line(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("gaps:\n  cube: {size_m: [\n")
    with pytest.raises(So101Error, match="w.yaml"):
        load_standin(path)
    with pytest.raises(So101Error, match="no such stand-in world"):
        load_standin(tmp_path / "missing.yaml")


def test_a_world_without_gaps_is_the_twins_scene_and_each_scene_gap_changes_its_part():
    base = S.SceneConfig()
    assert standin_scene(StandIn(), base, SIZE) == base
    world = default_standin()
    cfg = standin_scene(world, base, SIZE)
    assert cfg.cube_half == pytest.approx(0.0125) and cfg.cube_mass == 0.025 and cfg.cube_friction[0] == 0.3
    assert cfg.kp == pytest.approx(base.kp * 0.15) and cfg.gripper_kp == pytest.approx(base.kp * 0.6)
    assert cfg.camera_pos[0] == pytest.approx(base.camera_pos[0] + 0.002)
    fx, fy, cx, cy = cfg.camera_intrinsics
    assert cx == pytest.approx(319.5 + 6) and cy == pytest.approx(239.5 - 4) and fx == pytest.approx(fy)
    model = S.build_model(cfg)
    assert model.body(DISTRACTOR_BODY).id > 0
    assert model.geom_size[model.geom(S.CUBE_GEOM).id][0] == pytest.approx(0.0125)
    # compliance alone leaves the gripper as stiff as the twin's
    soft = standin_scene(world.alone("compliance"), base, SIZE)
    assert soft.gripper_kp == pytest.approx(base.kp) and soft.kp == pytest.approx(base.kp * 0.15)


@pytest.fixture
def envs():
    from so101_sim2real.control.env import sim_env
    from so101_sim2real.spec import default_spec

    made = []

    def make(world, with_camera=False):
        env = sim_env(default_spec(), with_camera=with_camera, standin=world)
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()


def test_the_stand_in_looks_different_but_its_truth_channels_are_the_renders(envs):
    twin, stand_in = envs(None, True), envs(default_standin().alone("exposure"), True)
    for env in (twin, stand_in):
        env.reset(3)
    plain, exposed = twin.perception.camera.read().rgb, stand_in.perception.camera.read().rgb
    assert exposed.astype(float).mean() > plain.astype(float).mean() + 10  # brighter: 1.2 x 1.1, warmer
    assert exposed[..., 0].mean() / exposed[..., 2].mean() > plain[..., 0].mean() / plain[..., 2].mean()
    assert np.array_equal(twin.perception.camera.seg_ids(), stand_in.perception.camera.seg_ids())


def test_the_period_is_the_stand_ins(envs):
    assert envs(default_standin().alone("period")).period_s == pytest.approx(0.1)
    assert envs(None).period_s == pytest.approx(0.02)


def _robot(envs, **gaps):
    from so101_sim2real.sim.standin_robot import StandInRobot

    env = envs(StandIn(gaps))
    env.reset(3)
    assert isinstance(env.robot, StandInRobot)
    return env, env.robot


def test_latency_holds_a_command_back_until_it_arrives(envs):
    from so101_sim2real.sim.standin import Latency

    env, robot = _robot(envs, latency=Latency(ms=60.0))
    before = env.twin.data.ctrl.copy()
    target = robot.read().position + 0.1
    robot.write(target)
    robot.advance(0.05)
    assert np.array_equal(env.twin.data.ctrl, before)  # 50 ms: still on its way
    robot.advance(0.02)
    assert np.allclose(env.twin.data.ctrl[:6], target)


def test_the_top_speed_limits_how_fast_the_target_moves(envs):
    from so101_sim2real.sim.standin import MaxSpeed

    env, robot = _robot(envs, max_speed=MaxSpeed(deg_s=90.0))
    start = robot.read().position
    robot.write(start + 1.0)  # a rad on every joint, at once
    robot.advance(0.1)
    moved = env.twin.data.ctrl[:6] - start
    assert np.allclose(moved, np.deg2rad(90.0) * 0.1, atol=np.deg2rad(90.0) * 0.002 + 1e-9)


def test_backlash_takes_up_the_play_before_a_reversal_moves_the_joint(envs):
    from so101_sim2real.sim.standin import Backlash

    env, robot = _robot(envs, backlash=Backlash(deg=(2.0,) * 6))
    start, play = robot.read().position, np.deg2rad(2.0)
    robot.write(start + 0.1)
    robot.advance(0.02)
    out = env.twin.data.ctrl[:6].copy()
    assert np.allclose(out, start + 0.1 - play / 2)  # driven from behind: half the play behind
    robot.write(start + 0.1 - play / 2)  # turning back by less than the play
    robot.advance(0.02)
    assert np.allclose(env.twin.data.ctrl[:6], out)  # the output has not moved
    robot.write(start)
    robot.advance(0.02)
    assert np.allclose(env.twin.data.ctrl[:6], start + play / 2)


def test_joint_offsets_are_read_and_sent_through_and_a_reset_drops_commands_in_flight(envs):
    from so101_sim2real.sim.standin import JointOffsets, Latency

    offsets = (2.0, -1.0, 0.5, 0.0, 1.0, -0.5)
    env, robot = _robot(envs, joint_offsets=JointOffsets(deg=offsets), latency=Latency(ms=100.0))
    truth = env.twin.data.qpos[:6].copy()
    assert np.allclose(robot.read().position, truth + np.deg2rad(offsets))
    robot.advance(0.02)  # a tick: the world's clock runs
    robot.write(robot.read().position + 0.2)
    env.reset(4)  # a new episode (its clock back to 0) before the command arrived
    ctrl = env.twin.data.ctrl.copy()
    robot.advance(0.2)
    assert np.array_equal(env.twin.data.ctrl, ctrl)


def test_each_picture_gap_changes_the_frame_and_the_noise_repeats_with_the_seed():
    from so101_sim2real.sim.camera_effects import CameraEffects, distort

    rng = np.random.default_rng(0)
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[:, ::8] = 200  # vertical lines: blur, distortion and JPEG all show on them
    frame += rng.integers(0, 40, frame.shape, dtype=np.uint8)
    spin = np.array([0.0, 3.0, 0.0])  # the wrist turning about the camera's y axis
    for name in ("lens_distortion", "motion_blur", "exposure", "sensor_noise", "jpeg"):
        out = CameraEffects(default_standin().alone(name), 150.0).apply(frame, spin)
        assert out.shape == frame.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - frame).mean() > 1.0, name
    a = CameraEffects(default_standin(seed=1), 150.0).apply(frame, spin)
    b = CameraEffects(default_standin(seed=1), 150.0).apply(frame, spin)
    c = CameraEffects(default_standin(seed=2), 150.0).apply(frame, spin)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.abs(distort(frame, 150.0, (0.0,) * 5).astype(int) - frame).max() <= 1  # no distortion: the frame
    still = CameraEffects(default_standin().alone("motion_blur"), 150.0).apply(frame, np.zeros(3))
    assert np.array_equal(still, frame)  # a still wrist: no blur


def test_the_scripted_expert_settles_where_backlash_stops_the_arm_short_and_the_twin_is_unchanged(envs):
    """Gear play leaves the TCP a few mm from each phase's goal: the expert (privileged: it reads
    the cube from the sim) moves on once the arm has settled there, as a person would. Without
    that it waits forever; in the twin the rule never fires (150 seeds: the same actions)."""
    from so101_sim2real.control.pilots import ScriptedPilot
    from so101_sim2real.control.runner import Runner
    from so101_sim2real.sim.scripted import ExpertConfig

    def successes(world, cfg=ExpertConfig()):
        env = envs(world)
        pilot = ScriptedPilot(env.twin)
        pilot.expert.cfg = cfg
        return sum(bool(e.success) for e in Runner(env, pilot).run([100, 101]).episodes)

    backlash = default_standin().alone("backlash")
    assert successes(None) == 2 and successes(backlash) == 2
    assert successes(backlash, ExpertConfig(settled_within=0.0)) == 0


def test_replacing_a_gap_keeps_the_others():
    from so101_sim2real.sim.standin import Latency, with_gaps

    world = with_gaps(default_standin(), latency=Latency(ms=10.0))
    assert world.get("latency").ms == 10.0 and world.get("cube") == GAPS["cube"]()
    assert replace(world, seed=5).seed == 5


def test_the_command_line_runs_the_stand_in_records_it_and_refuses_what_cannot_work(capsys, tmp_path):
    import json

    from fixtures import run_cli

    world = str(ROOT / "configs" / "standin.yaml")
    code, out, err = run_cli(capsys, "infer", "--ckpt", "scripted", "-n", "1", "--max-steps", "5", "--standin", world,
                             "--record", str(tmp_path / "rec"), "--no-record-rgb")
    assert code == 0, err
    assert "the stand-in world (18 gaps: lighting" in out
    meta = json.loads((tmp_path / "rec" / "recording.json").read_text())
    assert meta["period_s"] == 0.1 and load_standin(ROOT / "configs" / "standin.yaml") == standin_from_dict(
        meta["description"]["standin"])
    code, _, err = run_cli(capsys, "infer", "--ckpt", "policy.pt", "--standin", world)
    assert code == 2 and "a policy sees the stand-in through --perception real" in err
    code, _, err = run_cli(capsys, "infer", "--ckpt", "policy.pt", "--standin", world, "--robot", "so101", "--port",
                           "/dev/ttyACM0", "--calibration", "twin", "--camera", "0", "--perception", "real",
                           "--seg-ckpt", "seg.ckpt")
    assert code == 2 and "an emulated arm on a pty carries it from its own side" in err
    code, _, err = run_cli(capsys, "infer", "--ckpt", "scripted", "--standin", world, "--perturb",
                           str(ROOT / "configs" / "perturbed_twin.yaml"))
    assert code == 2 and "one world at a time" in err
    (tmp_path / "bad.yaml").write_text("gaps:\n  cube: {size_m: 0.2}\n")
    code, _, err = run_cli(capsys, "infer", "--ckpt", "scripted", "--standin", str(tmp_path / "bad.yaml"))
    assert code == 2 and "gaps.cube: out of range" in err and err.count("\n") <= 1


def test_a_run_folder_keeps_the_stand_in_as_its_description_reads_back():
    from so101_sim2real.control.description import RunDescription, describe

    d = describe(ckpt="p.pt", perception="real", seg_ckpt="s.ckpt", standin=default_standin(seed=4))
    back = RunDescription.from_dict(d.to_dict(), "run.yaml: where")
    assert back == d and back.standin.seed == 4
    with pytest.raises(So101Error, match="run.yaml: where.standin: gaps.cube.size_m: expected a number"):
        RunDescription.from_dict({**d.to_dict(), "standin": {"gaps": {"cube": {"size_m": "big"}}}}, "run.yaml: where")


def test_the_emulated_arm_carries_the_stand_ins_arm_between_its_servos_and_the_joints():
    """Behind the real driver (so101 emulate --twin --standin, --port emulator): the servos read
    the joints through the stand-in's calibration error and drive them at its top speed."""
    from so101_sim2real.control.twin_bus import attach_twin
    from so101_sim2real.hardware.emulator import BusEmulator
    from so101_sim2real.interfaces import JOINT_NAMES
    from so101_sim2real.sim.standin import JointOffsets, MaxSpeed

    world = StandIn({"joint_offsets": JointOffsets(deg=(2.0, 0.0, 0.0, 0.0, 0.0, 0.0)),
                     "max_speed": MaxSpeed(deg_s=90.0)})
    bridge = attach_twin(BusEmulator(list(range(1, 7))), standin=world)
    truth = float(bridge.task.data.qpos[bridge._qpos[0]])
    assert bridge.present(0) == bridge.calibration.sim_to_raw(JOINT_NAMES[0], truth + np.deg2rad(2.0))
    start = bridge.task.data.qpos[bridge._qpos].copy()
    for joint, name in enumerate(JOINT_NAMES):  # every servo told to go 0.5 rad further, at once
        bridge.drive(joint, bridge.calibration.sim_to_raw(name, start[joint] + np.deg2rad(2.0 * (joint == 0)) + 0.5))
    with bridge.lock:
        bridge._physics(50)  # 0.1 s
    moved = bridge.task.data.ctrl[bridge._act] - start
    assert np.all(moved <= np.deg2rad(90.0) * 0.1 + 0.01) and np.all(moved > 0.1)  # a ramp, not a jump to 0.5


def test_the_emulated_arm_runs_the_stand_in_through_the_real_driver(capsys):
    from fixtures import run_cli

    code, out, err = run_cli(capsys, "infer", "--ckpt", "scripted", "-n", "1", "--max-steps", "5", "--standin",
                             str(ROOT / "configs" / "standin.yaml"), "--robot", "so101", "--port", "emulator")
    assert code == 0, err
    assert "the stand-in world (18 gaps" in out and "control period 100 ms" in out
    code, _, err = run_cli(capsys, "emulate", "--standin", str(ROOT / "configs" / "standin.yaml"))
    assert code == 2 and "--standin: only with --twin" in err


def test_the_truth_channels_go_through_the_lens_with_the_picture(envs):
    """Labels must be the pixels' the frame shows: a lens moves the corners by ~18 px here."""
    from so101_sim2real.sim.camera_effects import distort
    from so101_sim2real.sim.standin_frames import randomised

    env = envs(default_standin().alone("lens_distortion"), True)
    env.reset(3)
    camera = env.perception.camera
    lens = camera.effects.world.get("lens_distortion")
    ideal = camera.inner.seg_ids()
    seen = camera.seg_ids()
    assert np.array_equal(seen, distort(ideal, camera.effects.focal_px, lens.coefficients, nearest=True))
    assert not np.array_equal(seen, ideal) and set(np.unique(seen)) <= set(np.unique(ideal))  # moved, not blended
    drawn = [randomised(default_standin(), np.random.default_rng(s)) for s in range(20)]
    assert all(1.0119 <= w.get("intrinsics").focal_scale <= 1.028 for w in drawn)  # a factor varies around 1
    assert all(0.07 <= w.get("compliance").stiffness_scale <= 0.33 for w in drawn)  # and stays positive
