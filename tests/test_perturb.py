"""The perturbed twin: the camera moved, another control period, noisy seg edges and disparity."""

import re

import numpy as np
import pytest

from fixtures import run_cli as run
from so101_sim2real.control.description import describe
from so101_sim2real.errors import So101Error
from so101_sim2real.sim import scene as S
from so101_sim2real.sim.perturb import (
    NoisyPerception,
    Perturbation,
    cube_dropout,
    load_perturbation,
    seg_edge_noise,
    seg_erode,
)
from so101_sim2real.spec import default_spec


def test_the_camera_moves_by_the_given_millimetres_and_degrees():
    p = Perturbation(camera_shift_mm=(3.0, -2.0, 1.0), camera_tilt_deg=(4.0, 0.0, 0.0))
    nominal, moved = S.build_model(S.SceneConfig()), S.build_model(p.scene())
    cam = S.WRIST_CAMERA
    assert np.allclose(moved.camera(cam).pos - nominal.camera(cam).pos, [0.003, -0.002, 0.001])
    a, b = nominal.camera(cam).quat, moved.camera(cam).quat
    angle = 2 * np.degrees(np.arccos(min(1.0, abs(float(np.dot(a, b))))))
    assert angle == pytest.approx(4.0, abs=1e-3)


def test_a_control_period_of_100_ms_steps_50_physics_steps_per_tick():
    from so101_sim2real.control.env import sim_env

    rig = sim_env(default_spec(), with_camera=False, perturbation=Perturbation(period_s=0.1))
    try:
        rig.reset(0)
        t0 = rig.twin.data.time
        rig.robot.advance(rig.period_s)
        assert rig.period_s == 0.1 and rig.twin.data.time - t0 == pytest.approx(0.1)
    finally:
        rig.close()


def test_seg_noise_touches_only_class_boundaries_and_keeps_valid_classes():
    seg = np.zeros((84, 84), np.uint8)
    seg[20:50, 30:60] = 2  # a cube on the table
    seg[60:, :] = 4
    rng = np.random.default_rng(0)
    noisy = seg_edge_noise(seg, 1.0, rng)
    changed = noisy != seg
    padded = np.pad(seg, 1, mode="edge")
    edge = (np.stack([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]) != seg).any(0)
    assert changed.any() and not (changed & ~edge).any()
    assert set(np.unique(noisy)) <= {0, 2, 4}
    assert np.array_equal(seg_edge_noise(seg, 0.0, rng), seg)


class _Flat:
    def __init__(self, frame):
        self.frame = frame

    def observe(self, with_rgb=False):
        from so101_sim2real.interfaces import Perceived

        return Perceived(self.frame.copy(), np.zeros((4, 4)), np.zeros((4, 4)), None, 0.0)

    def close(self):
        pass


def test_noisy_perception_corrupts_the_frame_not_its_source():
    frame = np.zeros((2, 84, 84), np.uint8)
    frame[0, 30:50, 30:50] = 2
    frame[1] = 250
    inner = _Flat(frame)
    seen = NoisyPerception(inner, Perturbation(seg_edge_flip=0.5, disparity_noise=6.0), ["seg", "disparity"]).observe()
    assert seen.frame.dtype == np.uint8 and (seen.frame[0] != frame[0]).any()
    assert seen.frame[1].max() == 255 and 3.0 < np.std(seen.frame[1].astype(float)) < 9.0  # clipped, not wrapped
    assert np.array_equal(inner.frame, frame)


@pytest.mark.parametrize("text, expected", [
    ("camera_shfit_mm: [1, 2, 3]\n", "unknown setting (did you mean 'camera_shift_mm'?)"),
    ("camera_tilt_deg: [1, 2]\n", "expected three numbers"),
    ("period_s: -0.1\n", "positive number of seconds"),
    ("seg_edge_flip: lots\n", "expected a number"),
    ("- 1\n", "expected a mapping"),
    ("joint_offset_deg: [1, 2]\n", "six numbers"),
    ("disparity_region: corner\n", "crop or full_frame"),
    ("seg_erode_px: 1.5\n", "whole number"),
    ("cube_dropout: 2\n", "[0, 1]"),
])
def test_a_bad_perturbation_file_is_one_line(tmp_path, text, expected):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(So101Error, match=re.escape(expected)):
        load_perturbation(path)


def test_the_shipped_perturbation_loads():
    p = load_perturbation(S.__file__.rsplit("/src/", 1)[0] + "/configs/perturbed_twin.yaml")
    assert p.period_s == 0.1 and not p.is_nominal and "100 ms" in p.describe()


def test_infer_runs_in_the_perturbed_twin(capsys, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("period_s: 0.1\ncamera_shift_mm: [2, 0, 0]\n")
    code, text, err = run(capsys, "infer", "--ckpt", "scripted", "-n", "2", "--perturb", str(path))
    assert code == 0, err
    assert "perturbed twin: period 100 ms" in text and "success 2/2" in text
    code, _, err = run(capsys, "infer", "--ckpt", "scripted", "-n", "1", "--perturb", str(tmp_path / "nope.yaml"))
    assert code == 2 and "cannot read the perturbation file" in err


def test_a_run_folder_keeps_its_perturbation(tmp_path):
    from so101_sim2real.hilserl.run import RunFolder, RunOptions
    from so101_sim2real.hilserl.trainer import TrainConfig

    p = Perturbation(period_s=0.1, camera_tilt_deg=(1.0, 2.0, 3.0), seg_edge_flip=0.2, seed=4)
    RunFolder.create(tmp_path / "run", RunOptions(describe(ckpt="x.pt", perturb=p)), TrainConfig())
    assert RunFolder.open(tmp_path / "run").options.where.world == p


def test_erosion_takes_rings_off_the_thin_parts_only():
    seg = np.ones((12, 12), np.uint8)  # table
    seg[2:10, 2:10] = 2  # an 8x8 cube
    once, twice = seg_erode(seg, 1, (2, 3, 4)), seg_erode(seg, 2, (2, 3, 4))
    assert (once == 2).sum() == 36 and (twice == 2).sum() == 16
    assert set(np.unique(twice)) == {1, 2}  # what the cube lost became the table around it
    assert (seg_erode(seg, 0, (2, 3, 4)) == seg).all()


def test_cube_dropout_reads_cube_pixels_as_the_table():
    seg = np.full((40, 40), 2, np.uint8)
    rng = np.random.default_rng(0)
    half = cube_dropout(seg, 0.5, cube=2, table=1, rng=rng)
    assert 0.4 < (half == 1).mean() < 0.6 and set(np.unique(half)) == {1, 2}
    assert (cube_dropout(seg, 1.0, 2, 1, rng) == 1).all() and (cube_dropout(seg, 0.0, 2, 1, rng) == seg).all()


def test_joint_offsets_shift_what_is_read_and_where_targets_land():
    from so101_sim2real.control.env import sim_env

    offset = (5.0, 0.0, -3.0, 0.0, 0.0, 2.0)
    rig = sim_env(default_spec(), with_camera=False, perturbation=Perturbation(joint_offset_deg=offset))
    try:
        rig.reset(0)
        true = rig.robot.inner.read().position
        assert np.allclose(rig.robot.read().position - true, np.deg2rad(offset))
        rig.robot.write(np.zeros(6))
        assert np.allclose(rig.task.data.ctrl[:6], -np.deg2rad(offset))
    finally:
        rig.close()


def test_the_field_of_view_and_the_disparity_region_change_what_the_twin_sees():
    from so101_sim2real.control.env import sim_env

    assert Perturbation(camera_fovy_deg=-5.0).scene().camera_fovy == S.SceneConfig().camera_fovy - 5.0
    frames = {}
    for region in (None, "crop"):
        rig = sim_env(default_spec(), perturbation=Perturbation(disparity_region=region))
        try:
            assert rig.perception.spec.disparity.normalise_region == (region or "full_frame")
            rig.reset(0)
            frames[region] = rig.perception.observe().frame
        finally:
            rig.close()
    assert (frames[None][0] == frames["crop"][0]).all()  # the classes are the same
    # at the reset pose the crop holds nearly the frame's nearest and farthest points: a small change
    assert (frames[None][1] != frames["crop"][1]).any()
