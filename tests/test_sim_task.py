import mujoco
import numpy as np
import pytest

from so101_sim2real.control.env import sim_env
from so101_sim2real.control.pilots import ScriptedPilot
from so101_sim2real.control.runner import Runner, tick
from so101_sim2real.sim import scene as S
from so101_sim2real.spec import default_spec


@pytest.fixture(scope="module")
def rig():
    rig = sim_env(default_spec(), with_camera=False)
    yield rig
    rig.close()


@pytest.fixture(scope="module")
def task(rig):
    return rig.twin


def step(rig, action):
    return tick(rig, np.asarray(action, dtype=float), rig.robot.read())[1]


def test_scene_carries_the_users_task_numbers(task):
    m, cfg = task.model, S.SceneConfig()
    assert m.opt.timestep == cfg.timestep and m.opt.noslip_iterations == 3 and m.opt.impratio == 10
    assert m.opt.cone == mujoco.mjtCone.mjCONE_ELLIPTIC
    assert np.allclose(m.actuator_gainprm[:, 0], cfg.kp) and np.allclose(m.actuator_biasprm[:, 2], -cfg.kv)
    assert np.allclose(m.actuator_forcerange[:5], [-3.35, 3.35]) and np.allclose(m.actuator_forcerange[5], [-10, 10])
    assert np.allclose(m.site(S.TCP_SITE).pos, cfg.tcp_pos)
    assert m.camera(S.WRIST_CAMERA).fovy[0] == pytest.approx(70.5)
    assert m.geom(S.CUBE_GEOM).size == pytest.approx([0.015] * 3)
    for pad in (S.STATIC_PAD, S.MOVING_PAD):
        assert np.allclose(m.geom(pad).size, cfg.pad_half_size)
    names = {m.geom(i).name for i in range(m.ngeom)}
    assert "fixed_jaw_pad" not in names and "moving_jaw_pad" not in names  # the package's own pads are gone


def test_scene_copies_what_the_training_mjcf_adds(task):
    """The values that made the user's scripted grasp lift the cube (docs/reference.md section 4)."""
    m, cfg = task.model, S.SceneConfig()
    for geom in (S.FLOOR_GEOM, S.CUBE_GEOM):  # the scene file's top-level default: stiff contacts
        assert m.geom(geom).solref == pytest.approx([0.001, 1.0])
        assert m.geom(geom).solimp[:3] == pytest.approx([0.99, 0.99, 0.001])
    assert m.geom(S.FLOOR_GEOM).size[:2] == pytest.approx([0.0, 0.0])  # an infinite plane
    visual = [i for i in range(m.ngeom) if m.geom_group[i] == 2]
    assert len(visual) == 17 and all(m.geom_contype[i] == 1 and m.geom_conaffinity[i] == 1 for i in visual)
    colliding = [i for i in range(m.ngeom) if m.geom_type[i] == mujoco.mjtGeom.mjGEOM_MESH and m.geom_contype[i]]
    assert len(colliding) == 30
    pairs = {tuple(sorted((m.body(b1).name, m.body(b2).name)))
             for b1, b2 in (divmod(int(sig), 1 << 16) for sig in m.exclude_signature)}
    assert pairs == {tuple(sorted(p)) for p in cfg.excluded_pairs} and len(pairs) == 6
    assert ("base", "shoulder") in cfg.excluded_pairs
    for pad in (S.STATIC_PAD, S.MOVING_PAD):
        assert m.geom(pad).group[0] == 0  # drawn: the wrist camera sees the pads
    assert m.sensor(S.CUBE_SENSOR).type[0] == mujoco.mjtSensor.mjSENS_FRAMEPOS


def test_success_reads_the_cube_sensor_of_the_last_substep(task):
    task.reset(0)
    cube_z = task.model.jnt_qposadr[task.model.joint(S.CUBE_JOINT).id] + 2
    task.data.qpos[cube_z] = 0.5  # moved, but no physics step has seen it yet
    assert task.cube_pos()[2] == pytest.approx(0.015, abs=1e-3)
    task.reset(0)


def test_reset_puts_the_tcp_beside_and_above_the_cube(task):
    for seed in range(3):
        info = task.reset(seed)
        cube = info["cube_pos"]
        assert abs(cube[0] - 0.25) <= 0.02 and abs(cube[1]) <= 0.02
        # the finger-width offset: the static finger beside the cube, 5 mm + 3 cm above its centre
        assert np.linalg.norm(task.tcp_pos() - (cube + [0, -0.015, 0.035])) < 0.002
        assert task.data.qpos[task._qpos[3]] == pytest.approx(np.pi / 2, abs=0.3)


def test_reset_is_seeded(task):
    a = task.reset(7)["cube_pos"]
    b = task.reset(7)["cube_pos"]
    assert np.array_equal(a, b) and not np.array_equal(a, task.reset(8)["cube_pos"])


def test_target_accumulates_and_is_clamped_to_the_workspace(rig):
    rig.reset(0)
    start = rig.controller.ee_target.copy()
    assert start == pytest.approx(rig.twin.tcp_pos(), abs=1e-6)
    step(rig, [0.5, 0.0, 0.0, 0.0])
    assert rig.controller.ee_target == pytest.approx(start + [0.01, 0, 0])
    for _ in range(40):
        step(rig, [0.0, 0.0, -1.0, 0.0])
    assert rig.controller.ee_target[2] == pytest.approx(default_spec().action.workspace.z[0])


def test_gripper_mapping_follows_the_spec():
    g = default_spec().action.gripper
    assert g.to_rad(-1) == pytest.approx(g.low_rad) and g.to_rad(1) == pytest.approx(g.high_rad)
    assert g.to_rad(0) == pytest.approx((g.low_rad + g.high_rad) / 2) and g.to_rad(7) == pytest.approx(g.high_rad)


def test_scripted_expert_lifts_the_cube_through_the_control_loop(rig):
    summary = Runner(rig, ScriptedPilot(rig.twin)).run([0, 1, 2, 3])
    assert [e.success for e in summary.episodes] == [True] * 4
    assert all(e.steps < 100 and e.ret > 100 for e in summary.episodes)
    info = rig.twin.info()
    assert info["is_grasping"] and info["cube_z"] > 0.08 and info["hold_count"] >= 10
    assert not rig.robot.torque_enabled  # the run ends with torque off


def test_doing_nothing_never_succeeds(rig):
    rig.reset(0)
    for _ in range(default_spec().episode.max_steps):
        result = step(rig, np.zeros(4))
    assert result.truncated and not result.terminated and not result.info["is_success"]
