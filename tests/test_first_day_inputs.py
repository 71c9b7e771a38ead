"""Inputs of a first day that were accepted, crashed, or were refused only after the work (issue 26):
each is now refused in one line before anything runs, and the rehearsals take the real day's flags."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from fixtures import run_cli
from so101_sim2real.errors import So101Error


def one_line_refusal(code: int, err: str, expected: str) -> None:
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err and expected in err, (code, err)


def listing(folder) -> list:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


# --------------------------------------------------------------------------- thread budgets


def test_a_thread_budget_beyond_the_cores_this_process_may_use_is_refused(monkeypatch):
    from so101_sim2real.perception import backends

    monkeypatch.setattr(backends.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    backends.check_threads(2)  # every core: fine
    with pytest.raises(So101Error, match=r"perception_threads 3: this process may use 2 CPU core\(s\); give 1 to 2"):
        backends.check_threads(3)
    with pytest.raises(So101Error, match="options.perception_threads 100000"):
        backends.check_threads(100000, "options.perception_threads")


# --------------------------------------------------------------------------- perceive --check


@pytest.fixture
def example_models(tmp_path):
    """Files marked as 'so101 models example' marks them, without writing the real networks."""
    from so101_sim2real.perception import EXAMPLE_MARK
    from so101_sim2real.perception.examples import NOTE

    seg = tmp_path / "models" / "segmentation.ckpt"
    seg.parent.mkdir()
    torch.save({"state_dict": {}, EXAMPLE_MARK: NOTE}, seg)
    depth = tmp_path / "models" / "depth"
    depth.mkdir()
    (depth / "config.json").write_text(f'{{"{EXAMPLE_MARK}": "{NOTE}"}}')
    return seg, depth


@pytest.fixture
def image(tmp_path):
    import cv2

    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), np.full((480, 640, 3), 90, np.uint8))
    return path


def test_example_weights_are_told_apart_without_loading_them(example_models, seg_ckpt, depth_folder):
    from so101_sim2real.perception.examples import example_sources

    seg, depth = example_models
    assert example_sources(seg, depth) == [str(seg), str(depth)]
    assert example_sources(seg_ckpt, depth_folder) == []  # the user's own (random weights, unmarked)
    assert example_sources(None, "depth-anything/Depth-Anything-V2-Small-hf") == []


@pytest.mark.parametrize("option", [("--out", "seen"), ("--backend", "torch"), ("--frames", "2"), ("--json",)])
def test_perceive_check_refuses_the_options_it_does_not_use(capsys, tmp_path, image, example_models, option):
    seg, depth = example_models
    before = listing(tmp_path)
    code, _, err = run_cli(capsys, "perceive", str(image), "--seg-ckpt", str(seg), "--depth-model", str(depth),
                           "--check", *option)
    one_line_refusal(code, err, f"{option[0]}: not with --check")
    assert listing(tmp_path) == before


def test_perceive_check_warns_about_example_weights(capsys, monkeypatch, image, example_models):
    from so101_sim2real.control import frames

    seg, depth = example_models
    monkeypatch.setattr(frames, "check_backends", lambda *args: ["(every backend's line)"])  # no networks to run
    code, out, err = run_cli(capsys, "perceive", str(image), "--seg-ckpt", str(seg), "--depth-model", str(depth),
                             "--check")
    assert code == 0 and "(every backend's line)" in out, err
    assert f"warning: {seg} and {depth}: example weights (random)" in err


# --------------------------------------------------------------------------- checked before the work


def test_models_example_refuses_an_existing_folder_before_importing_the_networks(capsys, monkeypatch, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.txt").write_text("kept\n")
    (tmp_path / "a_file").write_text("kept\n")
    for library in ("transformers", "transformers.utils"):  # seconds to import: not before the checks
        monkeypatch.setitem(sys.modules, library, None)
    code, _, err = run_cli(capsys, "models", "example", "--out", str(tmp_path / "models"))
    one_line_refusal(code, err, "already exists; pass --force")
    code, _, err = run_cli(capsys, "models", "example", "--out", str(tmp_path / "a_file"), "--force")
    one_line_refusal(code, err, "a file, not a folder; --force replaces a previous folder, not a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "models"]
    assert (tmp_path / "a_file").read_text() == "kept\n"


def test_reward_train_refuses_an_unwritable_out_before_training(capsys, monkeypatch, tmp_path):
    from so101_sim2real import files
    from so101_sim2real.reward import classifier
    from test_reward_classifier import LIFTED_EPISODE, fake_recording

    rec = fake_recording(tmp_path / "rec", [(LIFTED_EPISODE, True), ([0.015] * 8, False)])
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    real_access = os.access  # root may write anywhere: the folder is read-only for the check as for a user
    monkeypatch.setattr(files.os, "access", lambda p, mode: real_access(p, mode) and os.path.realpath(p) !=
                        str(locked.resolve()))

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking --out")

    monkeypatch.setattr(classifier, "_fit", no_training)
    try:
        code, _, err = run_cli(capsys, "reward", "train", str(rec), "--out", str(locked / "clf"))
        one_line_refusal(code, err, "is not writable")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_calibrate_rig_refuses_a_board_out_of_reach_before_the_arm_moves(capsys, monkeypatch, tmp_path):
    from so101_sim2real.calibrate import rig_rehearsal

    @contextmanager
    def no_arm(*args, **kwargs):
        raise AssertionError("the arm was started")
        yield

    monkeypatch.setattr(rig_rehearsal, "rig_rehearsal", no_arm)
    code, _, err = run_cli(capsys, "calibrate", "rig", "--port", "emulator", "--out", str(tmp_path / "rig.yaml"),
                           "--board-at", "0.6,0.4")
    one_line_refusal(code, err, "--board-at: the board's middle is 0.78 m from the arm's base")
    assert "1 would see its squares at least 15 px wide" in err and list(tmp_path.iterdir()) == []


def test_the_default_board_place_is_in_reach():
    from so101_sim2real.calibrate.rig_poses import check_reach
    from so101_sim2real.calibrate.rig_session import arm_ranges
    from so101_sim2real.geometry.board import BoardSpec
    from so101_sim2real.geometry.rig_file import default_rig
    from so101_sim2real.sim.table_board import TableBoard

    check_reach(TableBoard(BoardSpec()), default_rig(), arm_ranges(), 12, 0)  # raises nothing


# --------------------------------------------------------------------------- the rehearsals take the real day's flags


@pytest.fixture
def stop_at_the_twin(monkeypatch):
    """The rehearsal's twin refuses to start: what ran before it (the flags' checks) is what a test sees."""
    from so101_sim2real.calibrate import rig_rehearsal

    @contextmanager
    def stop(*args, **kwargs):
        raise So101Error("(the twin would start here)")
        yield

    monkeypatch.setattr(rig_rehearsal, "rig_rehearsal", stop)


def test_calibrate_rig_rehearsal_takes_the_real_days_flags(capsys, tmp_path, stop_at_the_twin):
    from so101_sim2real.geometry.rig_file import pinhole_from_fovy

    camera_yaml = pinhole_from_fovy(72.0).save(tmp_path / "camera.yaml")
    code, out, err = run_cli(capsys, "calibrate", "rig", "--port", "emulator", "--calibration", "my_follower",
                             "--camera", "0", "--camera-model", str(camera_yaml), "--out", str(tmp_path / "rig.yaml"))
    assert code == 2 and "(the twin would start here)" in err, err
    said = [line for line in out.splitlines() if "stands in" in line]
    assert said == [f"rehearsal: the twin stands in for --calibration my_follower (the twin's arm), --camera 0 (the "
                    f"twin's camera), --camera-model {camera_yaml} (the sim's lens, fovy 70.5); not used today"]
    broken = tmp_path / "broken.yaml"
    broken.write_text("K: [1, 2\n")
    code, _, err = run_cli(capsys, "calibrate", "rig", "--port", "emulator", "--camera-model", str(broken),
                           "--out", str(tmp_path / "rig.yaml"))
    one_line_refusal(code, err, "broken.yaml")  # a file the real day would refuse is refused today


def test_calibrate_align_rehearsal_takes_the_real_days_flags(capsys, tmp_path, seg_ckpt, stop_at_the_twin):
    code, out, err = run_cli(capsys, "calibrate", "align", "--port", "emulator", "--calibration", "my_follower",
                             "--camera", "/dev/video2", "--seg-ckpt", str(seg_ckpt), "--out", str(tmp_path / "r.yaml"))
    assert code == 2 and "(the twin would start here)" in err, err
    assert (f"rehearsal: the twin stands in for --calibration my_follower (the twin's arm), --camera /dev/video2 "
            f"(the twin's camera), --seg-ckpt {seg_ckpt} (the twin's own segmentation); not used today") in out
    code, _, err = run_cli(capsys, "calibrate", "align", "--port", "emulator", "--seg-ckpt", str(tmp_path / "no.ckpt"),
                           "--out", str(tmp_path / "r.yaml"))
    one_line_refusal(code, err, "no.ckpt: no such file")


# --------------------------------------------------------------------------- YAML numbers as a person means them


@pytest.mark.parametrize(("text", "value"), [("1e308", 1e308), ("1.0e+9", 1e9), ("1e-5", 1e-5), ("2E3", 2000.0),
                                             ("-1e3", -1000.0), ("1.5e-3", 0.0015), (".5", 0.5), ("10", 10),
                                             ("0x1F", 31), ("1e", "1e"), ("e5", "e5"), ("1.2.3", "1.2.3")])
def test_yaml_reads_numbers_in_exponent_form_as_numbers(text, value):
    from so101_sim2real.records import parse_yaml

    read = parse_yaml(f"x: {text}")["x"]
    assert read == value and type(read) is type(value)


def test_a_record_field_takes_an_exponent_and_its_range_check_refuses_too_much(tmp_path):
    from so101_sim2real.geometry.board import BoardSpec

    path = tmp_path / "board.yaml"
    path.write_text("squares: [7, 5]\nsquare_mm: 3e1\nmarker_mm: 2.25e1\n")
    assert BoardSpec.load(path) == BoardSpec()
    path.write_text("squares: [7, 5]\nsquare_mm: 1e308\nmarker_mm: 22.5\n")
    with pytest.raises(So101Error, match="square size 1e.308 mm: at most 500 mm"):
        BoardSpec.load(path)
