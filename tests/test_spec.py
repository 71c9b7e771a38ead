import pytest
import yaml

from so101_sim2real.errors import SpecError
from so101_sim2real.spec import default_spec, default_spec_text, load_spec, save_spec, spec_from_dict


def test_default_spec_holds_the_training_task():
    spec = default_spec()
    assert spec.observation.image_size == (84, 84)
    assert spec.observation.frame_stack == 3
    assert spec.observation.channels == ["seg", "disparity"]
    assert spec.state.size == 18
    assert spec.action.dim == 4
    assert spec.observation.segmentation.real_to_sim == [0, 0, 1, 2, 3, 4]
    assert spec.control.period_s == pytest.approx(0.02)


def test_save_and_load_round_trip(tmp_path):
    spec = default_spec().replace("observation.disparity.normalise_region", "crop")
    spec = spec.replace("simulator.version", "3.17.0").replace("action.ik.pose_from", "measured_joints")
    save_spec(spec, tmp_path / "spec.yaml")
    assert load_spec(tmp_path / "spec.yaml") == spec
    assert load_spec(tmp_path / "spec.yaml").simulator.version == "3.17.0"


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("simulator.version", "3.4", 'like "3.4.0"'),
    ("simulator.version", 3.4, "expected string"),
    ("action.ik.pose_from", "physics", "live_physics"),
    ("observation.disparity.normalise_region", "whole", "full_frame"),
])
def test_the_new_fields_refuse_bad_values(field, value, expected):
    with pytest.raises(SpecError, match=expected):
        default_spec().replace(field, value)


def _write(tmp_path, mutate):
    data = yaml.safe_load(default_spec_text())
    mutate(data)
    path = tmp_path / "my_spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_typo_names_file_field_and_suggestion(tmp_path):
    path = _write(tmp_path, lambda d: d["observation"].update(frame_stak=3))
    expected = r"my_spec.yaml: observation.frame_stak: unknown field \(did you mean 'frame_stack'\?\)"
    with pytest.raises(SpecError, match=expected):
        load_spec(path)


def test_wrong_type_names_what_was_expected(tmp_path):
    path = _write(tmp_path, lambda d: d["observation"].update(image_size=[84]))
    expected = r"my_spec.yaml: observation.image_size: expected a list of 2 integers, got \[84\]"
    with pytest.raises(SpecError, match=expected):
        load_spec(path)


def test_literal_field_lists_the_choices(tmp_path):
    path = _write(tmp_path, lambda d: d["observation"]["disparity"].update(interpolation="bilinear"))
    with pytest.raises(SpecError, match="observation.disparity.interpolation: expected one of 'nearest', 'area'"):
        load_spec(path)


def test_cross_field_rule_real_to_sim_range(tmp_path):
    path = _write(tmp_path, lambda d: d["observation"]["segmentation"].update(real_to_sim=[0, 1, 2, 3, 4, 5]))
    with pytest.raises(SpecError, match=r"real_to_sim\[5\]: expected a sim id in 0..4, got 5"):
        load_spec(path)


def test_missing_field(tmp_path):
    path = _write(tmp_path, lambda d: d["action"].pop("xyz_scale_m"))
    with pytest.raises(SpecError, match="action.xyz_scale_m: missing, expected number"):
        load_spec(path)


def test_invalid_yaml_reports_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("observation:\n  frame_stack: [3\n")
    with pytest.raises(SpecError, match=r"broken.yaml: YAML error at line \d+"):
        load_spec(path)


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "absent.yaml")


def test_workspace_bounds_must_be_ordered():
    data = default_spec().to_dict()
    data["action"]["workspace"]["z"] = [0.4, 0.01]
    with pytest.raises(SpecError, match=r"action.workspace.z: expected \[low, high\] with low < high"):
        spec_from_dict(data, "x.yaml")


def test_the_twin_takes_its_physics_timestep_from_the_spec():
    from so101_sim2real.control.env import sim_env

    spec = default_spec().replace("control.physics_timestep_s", 0.001)
    rig = sim_env(spec, with_camera=False)
    try:
        rig.reset(0)
        t0 = rig.twin.data.time
        rig.robot.advance(rig.period_s)
        assert rig.twin.model.opt.timestep == 0.001 and rig.period_s == pytest.approx(0.01)
        assert rig.twin.data.time - t0 == pytest.approx(0.01)  # ten steps of the spec's timestep
    finally:
        rig.close()


def test_a_tcp_site_is_the_ik_site_and_must_exist():
    from so101_sim2real.errors import So101Error
    from so101_sim2real.sim.task import LiftCubeTask

    with pytest.raises(SpecError, match="state.tcp_site"):
        default_spec().replace("state.tcp_site", "wrist")
    data = default_spec().to_dict()
    data["action"]["ik"]["site"] = data["state"]["tcp_site"] = "tcp"
    spec = spec_from_dict(data)
    with pytest.raises(So101Error, match="action.ik.site 'tcp': the SO-101 model has no such site.*gripperframe"):
        LiftCubeTask(spec)


def test_the_code_default_source_size_is_the_packaged_specs():
    from so101_sim2real.spec import SOURCE_SIZE

    assert tuple(default_spec().observation.source_size) == SOURCE_SIZE


@pytest.mark.parametrize(("field", "value"), [
    ("action.xyz_scale_m", -1.0), ("action.xyz_scale_m", 0.0), ("action.ik.gain", 0.0), ("action.ik.gain", 2.0),
    ("action.ik.damping", -0.1), ("action.ik.max_dq_rad", 0.0), ("control.physics_timestep_s", 1.0),
    ("observation.disparity.epsilon_m", 0.0),
])
def test_numeric_fields_outside_their_range_are_refused(field, value):
    with pytest.raises(SpecError, match=field):
        default_spec().replace(field, value)
