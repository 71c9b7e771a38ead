"""Action -> joint targets: accumulated target, IK from measured joints, safety clamp."""

import mujoco
import numpy as np
import pytest

from so101_sim2real.control.controller import Controller
from so101_sim2real.errors import So101Error
from so101_sim2real.interfaces import SafetyLimits
from so101_sim2real.kinematics import Kinematics
from so101_sim2real.sim import scene as S
from so101_sim2real.sim.robot import sim_safety_limits
from so101_sim2real.spec import default_spec

RANGES = np.array([[-1.91986, 1.91986], [-1.74533, 1.74533], [-1.69, 1.69], [-1.65806, 1.65806],
                   [-2.74385, 2.84121], [-0.17453, 1.74533]])
HOME = np.array([0.0, -0.3, 0.6, np.pi / 2, np.pi / 2, 0.5])


@pytest.fixture(scope="module")
def model():
    return S.build_model()


def kinematics(model, spec=None):
    return Kinematics(model, (spec or default_spec()).action.ik, S.ARM_JOINTS)


def test_limits_clamp_to_the_step_then_the_range():
    limits = SafetyLimits(RANGES[:, 0], RANGES[:, 1], np.full(6, 0.1))
    measured = np.array([0.0, 0.0, 1.65, 0.0, 0.0, 0.0])
    out, moved = limits.clamp(np.array([0.05, 0.5, 1.9, -0.3, 0.0, 0.0]), measured)
    assert out == pytest.approx([0.05, 0.1, 1.69, -0.1, 0.0, 0.0])
    assert moved.tolist() == [False, True, True, True, False, False]


def test_fk_matches_the_physics(model):
    data = mujoco.MjData(model)
    qpos = [model.jnt_qposadr[model.joint(j).id] for j in S.ARM_JOINTS]
    data.qpos[qpos] = HOME[:5]
    mujoco.mj_forward(model, data)
    pos, rot = kinematics(model).fk(HOME[:5])
    site = model.site(S.TCP_SITE).id
    assert pos == pytest.approx(data.site_xpos[site], abs=1e-12)
    assert rot == pytest.approx(data.site_xmat[site].reshape(3, 3), abs=1e-12)


def test_ik_steps_toward_the_goal_and_respects_max_dq(model):
    kin = kinematics(model)
    start, _ = kin.fk(HOME[:5])
    goal = start + np.array([0.03, 0.02, -0.02])
    q = HOME[:5].copy()
    for _ in range(60):
        nxt = kin.ik(q, goal)
        assert np.abs(nxt - q).max() <= default_spec().action.ik.max_dq_rad + 1e-12
        q = nxt
    assert np.linalg.norm(kin.fk(q)[0] - goal) < 1e-3


def test_ik_clips_each_joint_step_before_the_gain(model):
    # The training IK clipped dq to max_dq and only then scaled it by the gain: a far goal
    # moves a joint by at most gain * max_dq per step (clipping after the gain would allow max_dq).
    ik = default_spec().action.ik
    kin = kinematics(model)
    start, _ = kin.fk(HOME[:5])
    step = kin.ik(HOME[:5], start + np.array([0.0, 0.0, 5.0])) - HOME[:5]
    assert np.abs(step).max() == pytest.approx(ik.gain * ik.max_dq_rad)


def test_live_kinematics_reads_the_physics_as_its_last_step_left_it(model):
    """Training's IK and state read MjData after mj_step: positions lag the joints by one substep."""
    data = mujoco.MjData(model)
    qpos = [model.jnt_qposadr[model.joint(j).id] for j in S.ARM_JOINTS]
    data.qpos[qpos] = HOME[:5]
    data.qvel[:5] = 1.0  # moving: the lag shows
    mujoco.mj_forward(model, data)
    mujoco.mj_step(model, data)
    live = Kinematics(model, default_spec().action.ik, S.ARM_JOINTS, live=data)
    measured = kinematics(model)
    q = data.qpos[qpos].copy()
    before = data.qpos.copy()
    site = model.site(S.TCP_SITE).id
    assert live.source == "live_physics" and measured.source == "measured_joints"
    assert live.fk(q)[0] == pytest.approx(data.site_xpos[site], abs=0)
    assert np.linalg.norm(live.fk(q)[0] - measured.fk(q)[0]) > 1e-5  # one 2 ms substep behind
    goal = data.site_xpos[site] + np.array([0.01, 0.0, 0.0])
    assert not np.allclose(live.ik(q, goal), measured.ik(q, goal), atol=1e-9, rtol=0)
    assert np.array_equal(data.qpos, before)  # the physics is read, never written


def test_controller_accumulates_and_maps_the_gripper(model):
    spec = default_spec()
    ctl = Controller(spec.action, kinematics(model), sim_safety_limits(model, spec))
    start = ctl.reset(HOME)
    cmd = ctl.command(np.array([1.0, -0.5, 0.0, -1.0]), HOME)
    assert cmd.ee_target == pytest.approx(start + [0.02, -0.01, 0.0])
    assert cmd.targets[5] == pytest.approx(spec.action.gripper.low_rad)
    ctl.command(np.array([1.0, 0.0, 0.0, 0.0]), HOME)  # the same measured pose: the target still accumulates
    assert ctl.ee_target == pytest.approx(start + [0.04, -0.01, 0.0])
    for _ in range(100):
        ctl.command(np.array([0.0, 0.0, 1.0, 0.0]), HOME)
    assert ctl.ee_target[2] == pytest.approx(spec.action.workspace.z[1])  # clamped to the workspace


def test_twin_limits_never_bind_on_what_training_allowed(model):
    spec = default_spec()
    limits = sim_safety_limits(model, spec)
    assert limits.max_step[:5] == pytest.approx(spec.action.ik.max_dq_rad)
    assert limits.low == pytest.approx(RANGES[:, 0], abs=1e-5) and limits.high == pytest.approx(RANGES[:, 1], abs=1e-5)
    ctl = Controller(spec.action, kinematics(model), limits)
    ctl.reset(HOME)
    for action in np.random.default_rng(0).uniform(-1, 1, (50, 4)):
        cmd = ctl.command(action, HOME)
        assert not cmd.clamped.any() and np.array_equal(cmd.targets, cmd.requested)


def test_a_tight_robot_limit_clamps_every_joint_step(model):
    spec = default_spec()
    tight = SafetyLimits(RANGES[:, 0], RANGES[:, 1], np.full(6, 0.02))
    ctl = Controller(spec.action, kinematics(model), tight)
    ctl.reset(HOME)
    for _ in range(5):
        cmd = ctl.command(np.array([1.0, 1.0, -1.0, 1.0]), HOME)
    assert np.abs(cmd.targets - HOME).max() <= 0.02 + 1e-12
    assert cmd.clamped.any() and np.abs(cmd.requested - HOME).max() > 0.02


def test_locked_wrist_keeps_the_wrist_where_it_is(model):
    spec = default_spec().replace("action.wrist", "locked")
    ctl = Controller(spec.action, kinematics(model, spec), sim_safety_limits(model, spec))
    ctl.reset(HOME)
    cmd = ctl.command(np.array([1.0, 1.0, -1.0, 0.0]), HOME)
    assert cmd.targets[3:5] == pytest.approx(HOME[3:5]) and not np.allclose(cmd.targets[:3], HOME[:3])


@pytest.mark.parametrize("action", [[0.0, 0.0, np.nan, 0.0], [0.0, 0.0, 0.0], [[0.0] * 4]])
def test_bad_actions_are_refused(model, action):
    spec = default_spec()
    ctl = Controller(spec.action, kinematics(model), sim_safety_limits(model, spec))
    ctl.reset(HOME)
    with pytest.raises(So101Error, match="finite numbers"):
        ctl.command(np.array(action), HOME)
