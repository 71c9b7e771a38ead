"""rig.yaml: the measured geometry the twin and the real side share."""

import math

import numpy as np
import pytest

from so101_sim2real.errors import So101Error
from so101_sim2real.geometry.rig_file import RigGeometry, default_rig, load_rig, pinhole_from_fovy


def test_the_default_rig_is_the_sims_camera_and_says_it_is_not_calibrated():
    rig = default_rig()
    assert not rig.calibrated and "not calibrated" in rig.describe()
    assert rig.camera.fovy_deg() == pytest.approx(70.5, abs=0.01)  # what MuJoCo renders for fovy 70.5
    assert rig.mount_pos == (0.008, -0.065, -0.019) and load_rig(None).camera.size == (480, 640)


def test_a_rig_file_round_trips_and_bad_fields_are_named(tmp_path):
    rig = RigGeometry(camera=pinhole_from_fovy(80.0), mount_pos=(0.01, -0.06, -0.02), mount_euler=(0.4, 0.01, 3.1),
                      joint_offsets_rad=np.radians([-3, -3, 5, 5, 0, 0]), fitted={"rig": {"poses": 12}})
    back = RigGeometry.load(rig.save(tmp_path / "rig.yaml"))
    assert back.mount_pos == rig.mount_pos and back.mount_euler == rig.mount_euler and back.calibrated
    assert np.allclose(back.joint_offsets_rad, rig.joint_offsets_rad) and back.fitted == rig.fitted
    assert np.allclose(back.camera.K, rig.camera.K)
    assert "joint offsets -3.0 -3.0 +5.0 +5.0" in back.describe()
    text = (tmp_path / "rig.yaml").read_text()
    for old, new, problem in (("shoulder_pan: -3.0", "shoulder_pann: -3.0", "shoulder_pann: unknown field"),
                              ("pos: [", "pos: [1, ", "pos: expected 3 numbers"),
                              ("model: pinhole", "model: zoom", "camera: model:")):
        (tmp_path / "bad.yaml").write_text(text.replace(old, new, 1))
        with pytest.raises(So101Error, match=problem) as info:
            RigGeometry.load(tmp_path / "bad.yaml")
        assert "\n" not in str(info.value) and "bad.yaml" in str(info.value)
    assert math.isclose(np.degrees(back.joint_offsets_rad[2]), 5.0)


def test_a_rig_fitted_on_the_sims_intrinsics_says_so_in_one_voice(tmp_path):
    """A rehearsal fits the mount and offsets on the sim's guessed intrinsics: the file, its reader and
    describe() all say which is which, and a file written before (calibrated: true) still reads."""
    fitted = RigGeometry(camera=pinhole_from_fovy(70.5), joint_offsets_rad=np.radians([-3, -3, 5, 5, 0, 0]),
                         fitted={"rig": {"views": 12}})
    assert fitted.measured == ["mount", "joint offsets"]
    assert "measured: mount, joint offsets; the sim's guess: intrinsics (so101 calibrate camera)" in fitted.describe()
    text = fitted.save(tmp_path / "rig.yaml").read_text()
    assert "calibrated:" not in text and "# measured: mount, joint offsets; the sim's guess: intrinsics" in text
    back = RigGeometry.load(tmp_path / "rig.yaml")
    assert back.calibrated and back.measured == fitted.measured and back.describe() == fitted.describe()
    (tmp_path / "old.yaml").write_text(text.replace("version: 1\n", "version: 1\ncalibrated: true\n"))
    assert RigGeometry.load(tmp_path / "old.yaml").describe() == fitted.describe()
    # nothing measured: the file of the sim's guesses reads back as not calibrated
    guess = RigGeometry.load(default_rig().save(tmp_path / "guess.yaml"))
    assert not guess.calibrated and guess.measured == [] and "not calibrated" in guess.describe()
    from so101_sim2real.geometry.camera_model import CameraModel

    lens = CameraModel(size=(480, 640), K=np.array([[400.0, 0, 320], [0, 400, 240], [0, 0, 1]]), D=np.zeros(5),
                       source="so101 calibrate camera")
    measured = RigGeometry(camera=lens)
    assert measured.measured == ["intrinsics"] and "the sim's guess: mount" in measured.describe()
