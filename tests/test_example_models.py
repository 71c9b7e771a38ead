"""``so101 models example``: the README's perception workflows without one's own networks."""

from __future__ import annotations

import json
import stat

import pytest

from fixtures import run_cli
from so101_sim2real.perception import DEFAULT_DEPTH_MODEL

pytestmark = pytest.mark.slow  # writes and loads the two real architectures (about 15 s)


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    from so101_sim2real.perception.examples import write_example_models

    return write_example_models(tmp_path_factory.mktemp("examples") / "example-models")


def test_the_command_writes_readable_marked_models_and_keeps_an_existing_folder(capsys, tmp_path):
    out = tmp_path / "models"
    code, stdout, err = run_cli(capsys, "models", "example", "--out", str(out))
    assert code == 0, err
    assert "so101 perceive IMAGE --seg-ckpt" in stdout and "random" in stdout
    assert (out / "segmentation.ckpt").is_file() and (out / "depth" / "config.json").is_file()
    assert "random weights" in (out / "README.md").read_text()
    weights = out / "depth" / "model.safetensors"
    assert weights.stat().st_mode & stat.S_IROTH  # not safetensors' private 0600
    assert not list(tmp_path.glob("*.partial"))
    before = (out / "segmentation.ckpt").stat().st_mtime_ns
    code, _, err = run_cli(capsys, "models", "example", "--out", str(out))
    assert code == 2 and "already exists; pass --force" in err
    assert (out / "segmentation.ckpt").stat().st_mtime_ns == before


def test_perceive_runs_on_the_examples_and_says_they_are_random(capsys, tmp_path, examples):
    import cv2
    import numpy as np

    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.full((480, 640, 3), 128, np.uint8))
    code, out, err = run_cli(capsys, "perceive", str(image), "--seg-ckpt", str(examples.seg_ckpt), "--depth-model",
                             str(examples.depth_model), "--out", str(tmp_path / "seen"), "--backend", "torch")
    assert code == 0, err
    assert "example weights (random)" in err and "frame 0: seg" in out
    assert len(list((tmp_path / "seen").glob("*.png"))) == 1


def test_infer_on_the_twin_warns_and_a_real_arm_refuses_them(capsys, tmp_path, examples, snapshot):
    from so101_sim2real.perception.load import real_perception_factory
    from so101_sim2real.perception.real import RealModels
    from so101_sim2real.spec import default_spec

    code, out, err = run_cli(capsys, "infer", "--ckpt", "scripted", "-n", "1", "--max-steps", "2", "--perception",
                             "real", "--seg-ckpt", str(examples.seg_ckpt), "--depth-model",
                             str(examples.depth_model), "--json", "--backend", "torch")
    assert code == 0, err
    assert "example weights (random)" in err
    assert json.loads(out.strip().splitlines()[-1])["per_episode"][0]["steps"] == 2
    models = RealModels(str(examples.seg_ckpt), str(examples.depth_model), backend="torch")
    with pytest.raises(Exception, match="example weights .*a real arm needs your trained"):
        real_perception_factory(default_spec().observation, models, allow_examples=False)
    assert real_perception_factory(default_spec().observation, models, allow_examples=True)
    (tmp_path / "ttyACM0").touch()  # stands for a USB adapter: the weights are refused before it is opened
    code, _, err = run_cli(capsys, "infer", "--ckpt", str(snapshot), "--robot", "so101", "--port",
                           str(tmp_path / "ttyACM0"), "--calibration", "twin", "--camera", "0", "--perception", "real",
                           "--seg-ckpt", str(examples.seg_ckpt), "--depth-model", str(examples.depth_model))
    assert code == 2 and "example weights" in err and len(err.strip().splitlines()) == 1


def test_examples_are_never_filed_as_the_official_model(capsys, tmp_path, examples):
    cache = str(tmp_path / "cache")
    code, _, err = run_cli(capsys, "models", "add", str(examples.depth_model), "--cache-dir", cache)
    assert code == 2 and "example weights" in err and "--depth-model" in err
    code, out, _ = run_cli(capsys, "models", "list", "--cache-dir", cache, "--json")
    assert json.loads(out) == []
    code, _, err = run_cli(capsys, "models", "add", str(examples.depth_model), "--name", "me/example-depth",
                           "--cache-dir", cache)
    assert code == 0, err
    code, out, _ = run_cli(capsys, "models", "list", "--cache-dir", cache)
    assert "me/example-depth" in out and "EXAMPLE: random weights" in out
    assert out.count(DEFAULT_DEPTH_MODEL) == 1  # only in the hint that the real one is not cached


def test_the_emulators_pty_counts_as_a_rehearsal_not_an_arm(tmp_path):
    from so101_sim2real.hardware.emulator import BusEmulator
    from so101_sim2real.hardware.protocol import is_emulated as _pseudo_terminal  # the rig's one test of it

    with BusEmulator([1]) as emu:
        assert _pseudo_terminal(emu.path)
    (tmp_path / "ttyACM0").touch()
    assert not _pseudo_terminal(str(tmp_path / "ttyACM0")) and not _pseudo_terminal("/dev/ttyUSB0")
