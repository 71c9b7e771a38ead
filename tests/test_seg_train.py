"""so101 seg train: the user's segmentation architecture fitted to the stand-in's labelled renders."""

from pathlib import Path

import numpy as np
import pytest

from fixtures import run_cli

ROOT = Path(__file__).resolve().parents[1]
WORLD = str(ROOT / "configs" / "standin.yaml")


@pytest.fixture(scope="module")
def frames():
    from so101_sim2real.sim.standin import default_standin
    from so101_sim2real.sim.standin_frames import standin_frames
    from so101_sim2real.spec import default_spec

    return standin_frames(default_spec(), default_standin(), 12, seed=3, per_world=4)


def test_the_frames_are_labelled_with_the_real_networks_ids_and_repeat_with_their_seed(frames):
    from so101_sim2real.sim.standin import default_standin
    from so101_sim2real.sim.standin_frames import randomised, standin_frames
    from so101_sim2real.spec import default_spec

    assert frames.rgb.shape == (12, 480, 640, 3) and frames.labels.shape == (12, 480, 640)
    assert frames.labels.min() >= 1 and frames.labels.max() <= 5  # sim id + 1: 'unlabeled' (0) is never drawn
    assert (frames.labels == 3).any(axis=(1, 2)).sum() >= 6  # the cube is in most frames
    again = standin_frames(default_spec(), default_standin(), 2, seed=3, per_world=4)
    assert np.array_equal(again.rgb[:2], frames.rgb[:2]) and np.array_equal(again.labels[:2], frames.labels[:2])
    a, b = (randomised(default_standin(), np.random.default_rng(s)) for s in (0, 1))
    assert list(a.gaps) == list(default_standin().gaps) and a != b
    train, held = frames.split(0.25)
    assert len(train) == 9 and len(held) == 3


def test_training_fits_the_network_to_the_labels(frames):
    from so101_sim2real.perception.seg_train import SegTrainConfig, class_iou, train_segmentation
    from so101_sim2real.perception.segmentation import SegmentationNet
    from so101_sim2real.spec import default_spec

    classes = list(default_spec().observation.segmentation.real_classes)
    import torch

    torch.manual_seed(0)
    before = class_iou(SegmentationNet(len(classes)), frames, classes)
    net, report = train_segmentation(frames, frames, classes, SegTrainConfig(epochs=4, batch_size=6, lr=3e-3))
    assert [e["epoch"] for e in report.epochs] == [1, 2, 3, 4]
    assert report.epochs[-1]["loss"] < report.epochs[0]["loss"]
    assert report.per_class_iou["table"] > 0.7 and report.miou > np.mean(list(before.values()))
    assert report.miou == max(e["miou"] for e in report.epochs)  # the best epoch is the one kept
    first = report.epochs[0]["miou"]
    _, near = train_segmentation(frames, frames, classes, SegTrainConfig(epochs=4, batch_size=6, lr=3e-3,
                                                                          target_miou=first))
    assert near.best_epoch == 1 and near.miou == pytest.approx(first)  # the epoch nearest the target, not the best
    assert class_iou(net, frames, classes) == pytest.approx(report.per_class_iou)


@pytest.mark.slow
def test_the_command_writes_a_checkpoint_the_loader_reads_with_its_report_and_plot(capsys, tmp_path):
    from so101_sim2real.perception.segmentation import load_segmentation
    from so101_sim2real.safe_pickle import torch_load

    out = tmp_path / "seg.ckpt"
    code, stdout, err = run_cli(capsys, "seg", "train", "--standin", WORLD, "--frames", "6", "--epochs", "1",
                                "--out", str(out))
    assert code == 0, err
    assert "epoch   1: loss" in stdout and "the user's own network: val IoU 0.81" in stdout
    model = load_segmentation(out)
    assert model.input_size == (240, 320) and model.num_classes == 6 and not model.example
    report = torch_load(out)["so101_seg_train"]
    assert report["train_frames"] + report["held_out_frames"] == 6 and "stand-in world" in report["source"]
    assert out.with_suffix(".png").stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["--frames", "2"], "--frames at least 5"),
    (["--held-out", "1.5"], "--held-out in (0, 1)"),
    (["--init", "missing.ckpt"], "missing.ckpt: no such segmentation checkpoint"),
    (["--gap-share", "0"], "--gap-share 0.0: a probability above 0, at most 1"),
])
def test_bad_options_are_refused_in_one_line_before_rendering(capsys, tmp_path, args, message):
    code, _, err = run_cli(capsys, "seg", "train", "--standin", WORLD, "--out", str(tmp_path / "s.ckpt"), *args)
    assert code == 2 and message in err and err.count("\n") <= 1
    assert not (tmp_path / "s.ckpt").exists()


def test_a_real_arm_refuses_a_stand_ins_network_before_opening_anything(capsys, tmp_path, snapshot):
    import torch

    from so101_sim2real.perception import STANDIN_MARK
    from so101_sim2real.perception.examples import marked_sources
    from so101_sim2real.perception.seg_train import SegReport, save_checkpoint
    from so101_sim2real.perception.segmentation import SegmentationNet

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "standin-seg.ckpt", SegmentationNet(6), SegReport(["x"] * 6))
    own = save_checkpoint(tmp_path / "own-seg.ckpt", SegmentationNet(6), SegReport(["x"] * 6), standin=False)
    assert marked_sources(ckpt, "depth", STANDIN_MARK) == [str(ckpt)] and marked_sources(own, "d", STANDIN_MARK) == []
    (tmp_path / "ttyACM0").touch()  # stands for a USB adapter: the weights are refused before it is opened
    code, _, err = run_cli(capsys, "infer", "--ckpt", str(snapshot), "--robot", "so101", "--port",
                           str(tmp_path / "ttyACM0"), "--calibration", "twin", "--camera", "0", "--perception", "real",
                           "--seg-ckpt", str(ckpt))
    assert code == 2 and "fitted to a stand-in world's renders" in err and len(err.strip().splitlines()) == 1


def test_a_split_that_leaves_nothing_to_train_on_is_refused(capsys, tmp_path):
    code, _, err = run_cli(capsys, "seg", "train", "--standin", WORLD, "--out", str(tmp_path / "s.ckpt"), "--frames",
                           "5", "--held-out", "0.95")
    assert code == 2 and "leaves none to train on" in err
