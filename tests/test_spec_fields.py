"""Every spec field is honoured or refused: change it, and something observable changes, or a
clear error comes. Each case says which; the last test checks the cases cover every field."""

import numpy as np
import pytest

from so101_sim2real.errors import So101Error
from so101_sim2real.observation import depth_to_disparity, finish_frame, real_to_sim_ids
from so101_sim2real.policy.state import Proprio, StateBuilder
from so101_sim2real.simulator import mujoco_warning
from so101_sim2real.spec import default_spec, flatten, spec_from_dict

BASE = default_spec()
ACTION = np.array([1.0, -0.5, 0.3, -1.0])


def frame(spec) -> np.ndarray:
    """The observation of a fixed synthetic scene at the spec's source size."""
    h, w = spec.observation.source_size
    yy, xx = np.mgrid[0:h, 0:w]
    seg = ((xx // 37 + yy // 23) % 5).astype(np.uint8)
    depth = (0.05 + 0.5 * (xx + 2 * yy) / (w + 2 * h)).astype(np.float32)
    return finish_frame(spec.observation, seg, depth_to_disparity(depth, spec.observation.disparity.epsilon_m))


def twin_tick(spec) -> np.ndarray:
    """Three ticks of the twin from a fixed reset: the command, the EE target, the time, the step limit
    and the state after."""
    from so101_sim2real.control.env import sim_env

    rig = sim_env(spec, with_camera=False)
    try:
        rig.reset(0)
        for _ in range(3):
            cmd = rig.controller.command(ACTION, rig.robot.read().position)
            rig.robot.write(cmd.targets)
            rig.robot.advance(rig.period_s)
            result = rig.task.evaluate(ACTION)
        return np.concatenate([cmd.targets, cmd.ee_target, [rig.twin.data.time, result.truncated],
                               rig.twin.qpos()])
    finally:
        rig.close()


def state(spec) -> np.ndarray:
    reading = Proprio(np.arange(6) * 0.1, np.ones(6), np.array([0.2, 0.0, 0.1]), np.eye(3))
    return StateBuilder(spec.state).build(reading)


def camera_classes(spec) -> np.ndarray:
    from so101_sim2real.sim import scene as S
    from so101_sim2real.sim.camera import segmentation_lut

    return segmentation_lut(S.build_model(), spec.observation.segmentation.classes)


def real_ids(spec) -> np.ndarray:
    return real_to_sim_ids(np.arange(6), spec.observation.segmentation.real_to_sim)


def simulator(spec) -> str | None:
    return mujoco_warning(spec)


def policy(spec):
    """A checkpoint of the user's layout acting under this spec."""
    import dataclasses

    from so101_sim2real.policy.checkpoint import load_checkpoint
    from so101_sim2real.policy.frame_stack import FrameStack
    from so101_sim2real.policy.runtime import Policy

    ckpt = load_checkpoint(pytest.snapshot_path)
    p = Policy(dataclasses.replace(ckpt, spec=spec))
    frames = FrameStack(spec.observation.frame_stack).reset(frame(spec))
    states = FrameStack(spec.observation.frame_stack).reset(np.zeros(spec.state.size, np.float32))
    return p.act(frames, states)


# field -> (new value, the probe whose output must change; None: the change must be refused)
CASES = {
    "spec_version": (2, None),
    "observation.source_size": ([600, 800], frame),
    "observation.crop": ("none", frame),
    "observation.image_size": ([64, 64], frame),
    "observation.frame_stack": (2, policy),
    "observation.stack_order": ("newest_first", None),
    "observation.channels": (["disparity", "seg"], frame),
    "observation.value_range": ([0, 1], None),
    "observation.segmentation.classes": (["background", "table", "box", "static_finger", "moving_finger"],
                                         camera_classes),
    "observation.segmentation.real_classes": (["background", "table", "cube", "finger", "jaw"], None, "real_to_sim"),
    "observation.segmentation.real_to_sim": ([0, 1, 1, 2, 3, 4], real_ids),
    "observation.segmentation.interpolation": ("linear", frame),
    "observation.disparity.rule": ("depth", None),
    "observation.disparity.epsilon_m": (0.05, frame),
    "observation.disparity.normalise": ("none", None),
    "observation.disparity.normalise_region": ("crop", frame),
    "observation.disparity.interpolation": ("nearest", frame),
    "observation.disparity.near": ("low", None),
    "state.fields[0].name": ("cube_pos", state),
    "state.fields[0].size": (5, state),
    "state.tcp_site": ("wrist", None),
    "state.rpy_convention": ("intrinsic_zyx", None),
    "state.velocity_on_robot": ("reported", None),
    "action.type": ("joint_delta", None),
    "action.dim": (5, twin_tick),
    "action.xyz_scale_m": (0.01, twin_tick),
    "action.frame": ("tcp", None),
    "action.target": ("current_pose", None),
    "action.workspace.x": ([0.1, 0.2], twin_tick),
    "action.workspace.y": ([0.05, 0.3], twin_tick),
    "action.workspace.z": ([0.01, 0.05], twin_tick),
    "action.gripper.low_rad": (0.0, twin_tick),
    "action.gripper.high_rad": (1.5, twin_tick),
    "action.ik.site": ("tcp", None),
    "action.ik.damping": (0.5, twin_tick),
    "action.ik.max_dq_rad": (0.01, twin_tick),
    "action.ik.gain": (0.9, twin_tick),
    "action.ik.pose_from": ("measured_joints", twin_tick),
    "action.wrist": ("locked", twin_tick),
    "control.physics_timestep_s": (0.001, twin_tick),
    "control.substeps": (20, twin_tick),
    "control.action_repeat": (2, twin_tick),
    "episode.max_steps": (2, twin_tick),
    "simulator.engine": ("bullet", None),
    "simulator.version": ("3.17.0", simulator),
}
# Labels: what a person reads in `so101 inspect`, with no effect to check (real_classes' names
# too; its length is checked against real_to_sim).
LABELS = {"name", "state.fields[0].unit", "state.fields[0].source"}


def _mutated(field: str, value):
    data = BASE.to_dict()
    node, keys = data, field.replace("[", ".").replace("]", "").split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    node[keys[-1]] = value
    return spec_from_dict(data, "<mutation>")


@pytest.fixture(scope="module", autouse=True)
def _snapshot(snapshot):
    pytest.snapshot_path = snapshot


@pytest.mark.parametrize("field", sorted(CASES))
def test_a_changed_field_changes_what_it_governs_or_is_refused(field):
    value, probe, *named = CASES[field]
    if probe is None:
        with pytest.raises(So101Error, match=named[0] if named else field.split(".")[-1].split("[")[0]):
            _mutated(field, value)
        return
    before = probe(BASE)
    try:
        after = probe(_mutated(field, value))
    except So101Error as exc:  # refused where it would matter: as good as honoured, if it says what
        assert str(exc) and "\n" not in str(exc)
        return
    assert not np.array_equal(np.asarray(before, dtype=object), np.asarray(after, dtype=object)), \
        f"{field} = {value!r} changed nothing that {probe.__name__} sees"


def test_the_cases_cover_every_field():
    fields = {k.replace("[1]", "[0]").replace("[2]", "[0]").replace("[3]", "[0]") for k in flatten(BASE.to_dict())}
    assert fields - set(CASES) - LABELS == set()
