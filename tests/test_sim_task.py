import mujoco
import numpy as np
import pytest

from so101_sim2real.sim import scene as S
from so101_sim2real.sim.scripted import ScriptedExpert
from so101_sim2real.sim.task import LiftCubeTask
from so101_sim2real.spec import default_spec


@pytest.fixture(scope="module")
def task():
    return LiftCubeTask(default_spec())


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


def test_reset_puts_the_tcp_above_the_cube(task):
    for seed in range(3):
        info = task.reset(seed)
        cube = info["cube_pos"]
        assert abs(cube[0] - 0.25) <= 0.02 and abs(cube[1]) <= 0.02
        assert np.linalg.norm(task.tcp_pos() - (cube + [0, 0, 0.035])) < 0.005
        assert task.data.qpos[task._qpos[3]] == pytest.approx(np.pi / 2, abs=0.3)


def test_reset_is_seeded(task):
    a = task.reset(7)["cube_pos"]
    b = task.reset(7)["cube_pos"]
    assert np.array_equal(a, b) and not np.array_equal(a, task.reset(8)["cube_pos"])


def test_target_accumulates_and_is_clamped_to_the_workspace(task):
    task.reset(0)
    start = task.target.copy()
    task.step(np.array([0.5, 0.0, 0.0, 0.0]))
    assert task.target == pytest.approx(start + [0.01, 0, 0])
    for _ in range(40):
        task.step(np.array([0.0, 0.0, -1.0, 0.0]))
    assert task.target[2] == pytest.approx(default_spec().action.workspace.z[0])


def test_gripper_mapping_follows_the_spec(task):
    g = default_spec().action.gripper
    assert task.gripper_ctrl(-1) == pytest.approx(g.low_rad) and task.gripper_ctrl(1) == pytest.approx(g.high_rad)
    assert task.gripper_ctrl(0) == pytest.approx((g.low_rad + g.high_rad) / 2)


def test_scripted_expert_lifts_the_cube(task):
    wins = 0
    for seed in range(4):
        task.reset(seed)
        expert = ScriptedExpert(task)
        while True:
            result = task.step(expert.act())
            if result.terminated or result.truncated:
                break
        wins += result.terminated
        if result.terminated:
            assert result.info["is_grasping"] and result.info["cube_z"] > 0.08 and result.info["hold_count"] >= 10
    assert wins == 4


def test_doing_nothing_never_succeeds(task):
    task.reset(0)
    for _ in range(default_spec().episode.max_steps):
        result = task.step(np.zeros(4))
    assert result.truncated and not result.terminated and not result.info["is_success"]
