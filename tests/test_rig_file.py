"""rig.yaml: the measured geometry the twin and the real side share."""

import math

import numpy as np
import pytest

from so101_sim2real.calib.rig_file import RigGeometry, default_rig, load_rig, pinhole_from_fovy
from so101_sim2real.errors import So101Error


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
