import numpy as np
import pytest
import torch

from fixtures import robobase_agent_state, robobase_reference_actor
from scipy_free_rotations import rot_x, rot_y, rot_z
from so101_sim2real.errors import ObservationError
from so101_sim2real.kinematics import JointVelocity
from so101_sim2real.policy.frame_stack import FrameStack
from so101_sim2real.policy.runtime import Policy
from so101_sim2real.policy.state import Proprio, StateBuilder, rpy_from_matrix
from so101_sim2real.spec import default_spec


@pytest.fixture(scope="module")
def policy(snapshot):
    return Policy.load(snapshot)


def _frame(seed=0):
    rng = np.random.default_rng(seed)
    seg = rng.integers(0, 5, (84, 84))
    disp = rng.integers(0, 256, (84, 84))
    return np.stack([seg, disp]).astype(np.uint8)


def test_frame_stack_reset_fills_with_copies_and_keeps_oldest_first():
    stack = FrameStack(3)
    first, second = np.full((2, 4, 4), 1, np.uint8), np.full((2, 4, 4), 2, np.uint8)
    s = stack.reset(first)
    assert s.shape == (3, 2, 4, 4) and all((s[i] == 1).all() for i in range(3))
    s = stack.push(second)
    assert [int(s[i, 0, 0, 0]) for i in range(3)] == [1, 1, 2]
    first[:] = 9  # the stack holds copies
    assert int(stack.stacked()[0, 0, 0, 0]) == 1


def robobase_actor_mean(sd, frames: np.ndarray, states: np.ndarray) -> np.ndarray:
    """RoboBase's DrQ-v2 actor mean from the snapshot's own keys: frames (3, 2, 84, 84) in [0, 255]
    flattened frame-major, oldest first, to [f0.seg, f0.disp, f1.seg, ...]; the (3, 18) state the same way."""
    obs = torch.as_tensor(frames, dtype=torch.float32).reshape(1, 6, 84, 84)
    state = torch.as_tensor(states, dtype=torch.float32).reshape(1, 54)
    return robobase_reference_actor(sd, obs, state, prefix="actor_model.")[0].numpy()


def _moving_stacks():
    """Three different frames and states, so a stack flattened in the wrong order gives another action."""
    frames, states = FrameStack(3), FrameStack(3)
    rng = np.random.default_rng(4)
    f, s = frames.reset(_frame(0)), states.reset(rng.normal(scale=0.5, size=18).astype(np.float32))
    for seed in (1, 2):
        f, s = frames.push(_frame(seed)), states.push(rng.normal(scale=0.5, size=18).astype(np.float32))
    return f, s


def test_act_is_the_robobase_actor_mean_of_the_uint8_stack(policy):
    frames, states = _moving_stacks()
    action = policy.act(frames, states)
    assert action.shape == (4,) and action.dtype == np.float32
    expected = robobase_actor_mean(robobase_agent_state(), frames, states)
    np.testing.assert_allclose(action, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(expected).max() > 0.05  # not a saturated or dead output that any input would give


def test_act_rejects_a_stack_divided_by_255(policy):
    frames = FrameStack(3).reset(_frame()).astype(np.float32) / 255.0
    with pytest.raises(ObservationError, match="double normalisation"):
        policy.act(frames, np.zeros((3, 18)))


def test_act_rejects_a_pre_flattened_stack(policy):
    flat = FrameStack(3).reset(_frame()).reshape(6, 84, 84)
    with pytest.raises(ObservationError, match="pre-flattened"):
        policy.act(flat, np.zeros((3, 18)))


def test_act_rejects_unmapped_real_segmentation_ids(policy):
    frames = FrameStack(3).reset(_frame())
    frames[:, 0, 0, 0] = 5  # the real model's moving_finger id
    with pytest.raises(ObservationError, match="seg ids 0-5 vs 0-4"):
        policy.act(frames, np.zeros((3, 18)))


@pytest.mark.parametrize("state, message", [
    (np.zeros((3, 21)), "cube position leaked"),
    (np.zeros(54), "unflattened"),
    (np.zeros((3, 17)), r"expected \(3, 18\)"),
    (None, "needs a state"),
])
def test_act_rejects_a_state_of_the_wrong_size(policy, state, message):
    with pytest.raises(ObservationError, match=message):
        policy.act(FrameStack(3).reset(_frame()), state)


def _state(joint_pos) -> np.ndarray:
    one = np.zeros(18, np.float32)
    one[:6] = joint_pos
    one[12:15] = [0.25, 0.0, 0.1]
    return FrameStack(3).reset(one)


def test_act_refuses_joint_positions_in_degrees(policy):
    frames = FrameStack(3).reset(_frame())
    wrists_up_in_degrees = [0.0, 0.0, 0.0, 90.0, 90.0, 0.0]  # the user's mistake: 90 where pi/2 belongs
    with pytest.raises(ObservationError, match="look like degrees"):
        policy.act(frames, _state(wrists_up_in_degrees))
    with pytest.raises(ObservationError, match="0-100 gripper scale"):
        policy.act(frames, _state([0.0, 0.0, 0.0, np.pi / 2, np.pi / 2, 45.0]))
    at_the_limits = [1.92, -1.75, 1.69, -1.66, 2.84, 1.745]  # the widest real readings, in radians
    at_limits = _state(at_the_limits)  # accepted, and acted on as given
    np.testing.assert_allclose(policy.act(frames, at_limits), robobase_actor_mean(robobase_agent_state(), frames,
                                                                                   at_limits), rtol=1e-5, atol=1e-6)


def test_rpy_inverts_extrinsic_xyz_rotation():
    roll, pitch, yaw = 0.3, -0.4, 1.2
    rot = rot_z(yaw) @ rot_y(pitch) @ rot_x(roll)
    assert np.allclose(rpy_from_matrix(rot), [roll, pitch, yaw])


def test_rpy_at_gimbal_lock_puts_the_rotation_in_roll():
    rot = rot_z(0.7) @ rot_y(np.pi / 2) @ rot_x(0.2)  # only roll - yaw is observable here
    roll, pitch, yaw = rpy_from_matrix(rot)
    assert yaw == 0.0 and pitch == pytest.approx(np.pi / 2)
    assert np.allclose(rot_y(pitch) @ rot_x(roll), rot, atol=1e-9)


def test_state_builder_orders_fields_as_the_spec():
    builder = StateBuilder(default_spec().state)
    reading = Proprio(joint_pos=np.arange(6) * 0.1, joint_vel=np.arange(6) * -0.1,
                      tcp_pos=np.array([0.25, 0.0, 0.05]), tcp_rot=rot_z(0.5))
    state = builder.build(reading)
    assert state.shape == (18,) and state.dtype == np.float32
    assert np.allclose(state[:6], np.arange(6) * 0.1) and np.allclose(state[6:12], np.arange(6) * -0.1)
    assert np.allclose(state[12:15], [0.25, 0.0, 0.05]) and np.allclose(state[15:], [0, 0, 0.5])


def test_state_builder_refuses_a_privileged_state(leaked_snapshot):
    from so101_sim2real.policy.checkpoint import load_checkpoint

    with pytest.raises(ObservationError, match="cube_pos"):
        StateBuilder(load_checkpoint(leaked_snapshot).spec.state)


def test_finite_difference_velocity():
    vel = JointVelocity()
    assert np.allclose(vel.update(0.0, np.zeros(6)), 0)
    assert np.allclose(vel.update(0.1, np.full(6, 0.05)), 0.5)
