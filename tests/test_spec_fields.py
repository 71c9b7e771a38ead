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


def run_ticks(spec, action=ACTION, ticks: int = 3) -> dict:
    """The twin from a fixed reset, driven by the control loop's own ``tick`` (the one ``Runner``
    calls), reading the joints between ticks as the loop does. Records per tick: the joints the
    command was computed from, the command, the step result and the twin's clock."""
    from so101_sim2real.control.env import sim_env
    from so101_sim2real.control.runner import tick

    rig = sim_env(spec, with_camera=False)
    try:
        joints, _ = rig.reset(0)
        out = {"start_ee": rig.controller.ee_target.copy(), "timestep": rig.twin.model.opt.timestep,
                      "start_time": rig.twin.data.time, "period_s": rig.period_s, "ticks": []}
        for _ in range(ticks):
            cmd, result = tick(rig, np.asarray(action, dtype=np.float32), joints)
            out["ticks"].append({"q": joints.position.copy(), "cmd": cmd, "result": result,
                                 "time": rig.twin.data.time})
            joints = rig.robot.read()
        out["qpos"] = rig.twin.qpos().copy()
        return out
    finally:
        rig.close()


def twin_tick(spec) -> np.ndarray:
    """Three ticks of the twin: the command, the EE target, the time, the step limit and the state after."""
    run = run_ticks(spec)
    last = run["ticks"][-1]
    return np.concatenate([last["cmd"].targets, last["cmd"].ee_target, [last["time"], last["result"].truncated],
                           run["qpos"]])


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
# words for people: the task string goes into datasets and model cards as written (test_lerobot_export)
LABELS = {"name", "state.fields[0].unit", "state.fields[0].source", "episode.task"}


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


GRIP = 0.3  # a gripper action away from the ends, so both ends of the mapping show


def _accumulated(start: np.ndarray, action: np.ndarray, scale: float, low, high, ticks: int) -> np.ndarray:
    """Each tick adds action[:3] * scale to the target and clamps it to the workspace box."""
    ee = np.array(start, dtype=float)
    for _ in range(ticks):
        ee = np.clip(ee + np.clip(action[:3].astype(float), -1, 1) * scale, low, high)
    return ee


@pytest.mark.parametrize("field, value", [
    (None, None),
    ("action.xyz_scale_m", 0.01),
    ("action.workspace.x", [0.1, 0.2]),
    ("action.workspace.z", [0.01, 0.05]),
    ("action.gripper.low_rad", 0.0),
    ("action.gripper.high_rad", 1.5),
    ("control.physics_timestep_s", 0.001),
    ("control.substeps", 20),
    ("control.action_repeat", 2),
    ("episode.max_steps", 2),
    ("action.wrist", "locked"),
])
def test_the_control_loops_tick_does_what_the_spec_says(field, value):
    """Expected values from the spec's numbers by hand, the twin driven by the product's tick."""
    spec = BASE if field is None else _mutated(field, value)
    act = np.array([1.0, -0.5, 0.3, GRIP], dtype=np.float32)  # float32, as the Runner hands actions on
    run = run_ticks(spec, act)
    a, c, ws = spec.to_dict()["action"], spec.to_dict()["control"], spec.to_dict()["action"]["workspace"]
    low, high = [ws["x"][0], ws["y"][0], ws["z"][0]], [ws["x"][1], ws["y"][1], ws["z"][1]]
    # the EE target accumulates action * xyz_scale_m per tick inside the workspace box
    assert np.all(run["start_ee"] >= np.array(low) - 1e-12) and np.all(run["start_ee"] <= np.array(high) + 1e-12)
    for n, t in enumerate(run["ticks"], start=1):
        np.testing.assert_allclose(t["cmd"].ee_target, _accumulated(run["start_ee"], act, a["xyz_scale_m"], low, high,
                                                                    n), rtol=1e-12, atol=1e-12)
        # the gripper maps [-1, 1] linearly onto [low_rad, high_rad]
        g = a["gripper"]
        grip = float(act[3])
        assert t["cmd"].requested[5] == pytest.approx(g["low_rad"] + (grip + 1) / 2 * (g["high_rad"] - g["low_rad"]))
        # a locked wrist is never asked to move from where it was read
        if a["wrist"] == "locked":
            np.testing.assert_allclose(t["cmd"].requested[3:5], t["q"][3:5], atol=1e-9)
        # one tick is physics_timestep_s x substeps x action_repeat of simulated time
        period = c["physics_timestep_s"] * c["substeps"] * c["action_repeat"]
        assert t["time"] - run["start_time"] == pytest.approx(n * period, rel=1e-9)
        # the episode is cut (truncated) at exactly max_steps ticks
        assert t["result"].truncated == (n >= spec.to_dict()["episode"]["max_steps"])
    assert run["timestep"] == c["physics_timestep_s"] and run["period_s"] == pytest.approx(period)
    if a["wrist"] == "free":  # the free wrist does move: the locked check above is not empty
        assert not np.allclose(run["ticks"][-1]["cmd"].requested[3:5], run["ticks"][-1]["q"][3:5], atol=1e-6)
