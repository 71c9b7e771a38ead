"""One run description: built from option names, checked in one place, kept whole by run folders
and recordings, and read back exactly."""

import json

import pytest
import yaml

from so101_sim2real.control.description import (
    OPTIONS,
    RunDescription,
    check_description,
    describe,
    option_namer,
)
from so101_sim2real.errors import So101Error
from so101_sim2real.sim.perturb import Perturbation


def full() -> RunDescription:
    """A description with no field at its default."""
    from so101_sim2real.sim.standin import default_standin

    return describe(ckpt="p.pt", spec="s.yaml", set_spec=["action.ik.gain=0.5"], trust_pickle=True, device="cuda",
                    robot="so101", port="/dev/ttyACM0", calibration="arm1", camera="0", rig="rig.yaml",
                    perception="real", seg_ckpt="seg.ckpt", depth_model="depth/", profile="exact",
                    backend="openvino", overlap=False, perception_threads=2,
                    perturb=Perturbation(period_s=0.1, camera_tilt_deg=(1.0, 2.0, 3.0), seed=4), period=0.05,
                    standin=default_standin(seed=2))


def test_every_option_has_one_place_and_every_field_one_option():
    d = full()
    default = RunDescription()
    assert set(d.options()) == set(OPTIONS)
    assert all(d.options()[name] != default.options()[name] for name in OPTIONS), "full() leaves a default"
    assert d.robot.port == "/dev/ttyACM0" and d.perception.threads == 2 and d.world.seed == 4 and d.period_s == 0.05
    assert d.policy.spec_sets == ("action.ik.gain=0.5",)


def test_a_description_survives_yaml_and_json_whole():
    d = full()
    assert RunDescription.from_dict(yaml.safe_load(yaml.safe_dump(d.to_dict())), "run.yaml: where") == d
    assert RunDescription.from_dict(json.loads(json.dumps(d.to_dict())), "recording.json: description") == d
    assert RunDescription.from_dict(RunDescription().to_dict(), "x") == RunDescription()


@pytest.mark.parametrize("data, expected", [
    ({"robot": {"prot": "/dev/ttyACM0"}}, "run.yaml: where.robot.prot: unknown (did you mean 'port'?)"),
    ({"robto": {}}, "run.yaml: where.robto: unknown (did you mean 'robot'?)"),
    ({"perception": {"overlap": "yes"}}, "run.yaml: where.perception.overlap: expected true or false"),
    ({"perception": {"threads": 1.5}}, "run.yaml: where.perception.threads: expected a whole number"),
    ({"period_s": "fast"}, "run.yaml: where.period_s: expected a number"),
    ({"camera": ["0"]}, "run.yaml: where.camera: expected a mapping"),
    ({"policy": {"spec_sets": "a=1"}}, "run.yaml: where.policy.spec_sets: expected a list of KEY=VALUE"),
])
def test_a_wrong_key_or_type_is_one_line_naming_it(data, expected):
    with pytest.raises(So101Error) as err:
        RunDescription.from_dict(data, "run.yaml: where")
    assert err.value.args[0].startswith(expected), err.value.args[0]


def test_given_lists_exactly_the_options_away_from_their_defaults():
    assert describe(ckpt="p.pt").given() == []
    assert describe(ckpt="p.pt", robot="so101", overlap=True, period=0.1).given() == ["@robot", "@overlap", "@period"]


@pytest.mark.parametrize("options, expected", [
    ({"robot": "arm"}, "@robot arm: unknown"),
    ({"port": "/dev/ttyACM0"}, "@port: only for @robot so101"),
    ({"robot": "so101"}, "@robot so101 needs @port"),
    ({"robot": "so101", "port": "/dev/nonexistent-tty", "calibration": "twin", "camera": "0", "perception": "real",
      "seg_ckpt": "s.ckpt", "ckpt": "scripted"}, "@ckpt scripted: the scripted expert reads"),
    ({"seg_ckpt": "s.ckpt", "profile": "exact"}, "@seg_ckpt, @profile: only with @perception real"),
    ({"perception": "real", "seg_ckpt": "s.ckpt", "overlap": False}, "@overlap: only for an arm on a serial port"),
    ({"ckpt": "scripted", "trust_pickle": True}, "@trust_pickle: only for a @ckpt file"),
    ({"robot": "so101", "port": "emulator", "perturb": Perturbation(period_s=0.1)}, "@perturb changes the sim twin"),
    ({"period": 0.1}, "@period: only for @robot so101"),
    ({"robot": "so101", "port": "emulator", "period": 5.0}, "@period 5.0: seconds per tick"),
    ({"robot": "so101", "port": "/dev/nonexistent-tty"}, "@port /dev/nonexistent-tty: the arm needs its calibration"),
    ({"robot": "so101", "port": "/dev/nonexistent-tty", "calibration": "twin", "camera": "0", "perception": "real",
      "seg_ckpt": "s.ckpt"}, "@port /dev/nonexistent-tty: no such serial port"),
    ({"device": "tpu"}, "@device tpu: not a torch device"),
])
def test_what_cannot_work_is_refused_in_one_style(options, expected):
    with pytest.raises(So101Error) as err:
        check_description(describe(**options))
    assert err.value.args[0].startswith(expected), err.value.args[0]


def test_a_files_errors_name_its_keys_not_the_options():
    name = option_namer("run.yaml")
    assert name("port") == "where.robot.port" and name("perturb") == "where.world"
    with pytest.raises(So101Error) as err:
        check_description(describe(robot="so101"), "run.yaml")
    assert err.value.args[0].startswith("run.yaml: where.robot.kind so101 needs where.robot.port (")


def test_a_run_folder_keeps_the_description_whole_and_reads_an_old_run_yaml(tmp_path):
    from so101_sim2real.hilserl.options import RunOptions
    from so101_sim2real.hilserl.run_folder import RUN_FILE, RunFolder
    from so101_sim2real.hilserl.trainer import TrainConfig

    where = describe(ckpt="x.pt", perturb=Perturbation(period_s=0.1, seed=3), set_spec=["action.ik.gain=0.5"])
    run = RunFolder.create(tmp_path / "run", RunOptions(where, intervene="none"), TrainConfig())
    data = yaml.safe_load((run.path / RUN_FILE).read_text())
    assert set(data) == {"where", "options", "config"} and "ckpt" not in data["options"]
    back = RunFolder.open(run.path).options
    assert back.where == run.options.where and back.intervene == "none"
    assert back.where.policy.ckpt == str((tmp_path / "x.pt").resolve()) or back.where.policy.ckpt == "x.pt"

    # a run.yaml from before the run description: where and how were flat in options
    old = tmp_path / "old"
    old.mkdir()
    (old / RUN_FILE).write_text(yaml.safe_dump({"options": {
        "ckpt": "x.pt", "intervene": "none", "reward": "success", "device": "cpu", "save_every": 5, "demos": [],
        "perturbation": {"period_s": 0.1, "seed": 3}, "robot": "sim", "port": None, "perception": "sim",
        "depth_model": "depth-anything/Depth-Anything-V2-Small-hf", "profile": "exact", "backend": "openvino",
        "overlap": False, "perception_threads": None, "period_s": None, "rig": None}, "config": {}}))
    (old / "counters.json").write_text('{"env_steps": 0, "updates": 0, "episodes": 0, "next_seed": 0}')
    opened = RunFolder.open(old).options  # the old code kept options the twin did not use: they go
    assert opened.where == describe(ckpt="x.pt", perturb=Perturbation(period_s=0.1, seed=3))
    assert opened.intervene == "none"


def test_a_recording_keeps_the_description_of_its_run(tmp_path):
    from so101_sim2real.control.infer import InferOptions, run_infer
    from so101_sim2real.control.recording import Recording

    where = describe(ckpt="scripted", set_spec=["action.ik.gain=0.5"])
    run_infer(InferOptions(where, episodes=1, max_steps=2, record=tmp_path / "rec", record_rgb=False))
    assert Recording(tmp_path / "rec").description == where


def test_a_camera_index_or_twin_stays_what_it_is_when_paths_are_made_absolute(tmp_path, monkeypatch):
    from so101_sim2real.control.description import absolute_paths

    monkeypatch.chdir(tmp_path)
    for name in ("0", "twin", "p.pt"):
        (tmp_path / name).write_text("")
    d = absolute_paths(describe(ckpt="p.pt", robot="so101", port="/dev/ttyACM0", calibration="twin", camera="0"))
    assert d.policy.ckpt == str(tmp_path / "p.pt") and d.camera.source == "0" and d.robot.calibration == "twin"


def test_a_resume_refuses_what_was_typed_even_when_it_is_the_default(tmp_path):
    from so101_sim2real.hilserl.options import new_run_options

    with pytest.raises(So101Error, match="--device: a resumed run keeps its own"):
        new_run_options(describe(), True, tmp_path, ["--device"])
    assert new_run_options(describe(), True, tmp_path, []) is None
