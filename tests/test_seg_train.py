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


def _label_folder(frames, folder, count: int = 4):
    """``count`` of the fixture's renders laid out as a person's labelled pictures (no frames.json: pictures
    of unknown source read as the arm's own)."""
    import cv2

    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        cv2.imwrite(str(folder / "images" / f"p{i}.png"), cv2.cvtColor(frames.rgb[i], cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(folder / "masks" / f"p{i}.png"), frames.labels[i])
    return folder


def test_a_persons_folder_is_read_with_its_masks_and_unlabelled_pictures_skipped(frames, tmp_path):
    import cv2

    from so101_sim2real.perception.label_folder import read_labelled

    folder = _label_folder(frames, tmp_path / "labels", 5)
    (folder / "masks" / "p4.png").unlink()  # not labelled yet
    cv2.imwrite(str(folder / "masks" / "p3.png"), np.zeros((480, 640), np.uint8))  # nothing painted
    read = read_labelled(folder, ["u", "b", "t", "c", "s", "m"])
    assert read.names == ["p0", "p1", "p2"] and read.twin == []
    assert np.array_equal(read.labels, frames.labels[:3]) and np.array_equal(read.rgb, frames.rgb[:3])


def test_palette_and_16_bit_masks_are_read_as_class_ids(frames, tmp_path):
    from PIL import Image

    from so101_sim2real.perception.label_folder import read_labelled

    folder = _label_folder(frames, tmp_path / "labels", 2)
    palette = Image.fromarray(frames.labels[0], mode="P")
    palette.putpalette([0, 0, 0, 90, 90, 90, 200, 150, 100, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 750)
    palette.save(folder / "masks" / "p0.png")  # as CVAT and VOC write them
    Image.fromarray(frames.labels[1].astype(np.uint16)).save(folder / "masks" / "p1.png")
    read = read_labelled(folder, ["u", "b", "t", "c", "s", "m"])
    assert np.array_equal(read.labels, frames.labels[:2])


@pytest.mark.parametrize("mask, message", [
    (np.zeros((240, 320), np.uint8) + 2, "320x240, its picture is 640x480"),
    (np.zeros((480, 640), np.uint8) + 9, "class id 9; the network's table has ids 0-5"),
    (np.zeros((480, 640, 3), np.uint8) + 2, "a mask is one channel of class ids (grey or palette PNG), not mode RGB"),
])
def test_a_mask_that_does_not_fit_is_refused_naming_its_file(frames, tmp_path, mask, message):
    import cv2

    from so101_sim2real.errors import So101Error
    from so101_sim2real.perception.label_folder import read_labelled

    folder = _label_folder(frames, tmp_path / "labels", 2)
    cv2.imwrite(str(folder / "masks" / "p1.png"), mask)
    with pytest.raises(So101Error, match="p1.png") as error:
        read_labelled(folder, ["u", "b", "t", "c", "s", "m"])
    assert message in str(error.value)


def test_one_labelled_picture_or_two_of_one_name_are_refused(frames, tmp_path):
    import shutil

    from so101_sim2real.errors import So101Error
    from so101_sim2real.perception.label_folder import read_labelled

    folder = _label_folder(frames, tmp_path / "labels", 2)
    (folder / "masks" / "p1.png").unlink()
    with pytest.raises(So101Error, match="1 of its 2 pictures labelled .* at least 2"):
        read_labelled(folder, ["u", "b", "t", "c", "s", "m"])
    shutil.copy(folder / "images" / "p0.png", folder / "images" / "p0.jpg")
    with pytest.raises(So101Error, match="two pictures named p0"):
        read_labelled(folder, ["u", "b", "t", "c", "s", "m"])


def test_renders_and_a_persons_pictures_mix_about_a_quarter_theirs(frames):
    from so101_sim2real.perception.seg_train import mixed

    small = type(frames)(frames.rgb[:2, ::2, ::2].copy(), frames.labels[:2, ::2, ::2].copy())
    mix = mixed(frames, small)
    assert mix.rgb.shape[1:] == frames.rgb.shape[1:] and len(mix.rgb) == 12 + 2 * 2  # 2 pictures twice: 4 of 16
    assert np.array_equal(mix.labels[-1][::2, ::2], small.labels[1])  # a mask resized nearest: ids kept


@pytest.mark.slow
def test_training_on_a_persons_pictures_alone_makes_a_network_for_their_camera(capsys, frames, tmp_path):
    from so101_sim2real.perception import STANDIN_MARK
    from so101_sim2real.safe_pickle import torch_load

    folder = _label_folder(frames, tmp_path / "labels", 5)
    out = tmp_path / "own.ckpt"
    code, stdout, err = run_cli(capsys, "seg", "train", "--labelled", str(folder), "--epochs", "1",
                                "--batch-size", "2", "--out", str(out), "--json")
    assert code == 0, err
    raw = torch_load(out)
    report = raw["so101_seg_train"]
    assert report["labelled_frames"] == 5 and report["train_frames"] == 4 and report["held_out_frames"] == 1
    assert "5 pictures a person labelled" in report["source"] and "stand-in" not in report["source"]
    assert STANDIN_MARK not in raw  # a network for the user's own camera: a real arm takes it


@pytest.mark.slow
def test_renders_and_pictures_together_pick_the_epoch_on_the_pictures_and_score_the_renders(capsys, frames, tmp_path):
    from so101_sim2real.perception import STANDIN_MARK
    from so101_sim2real.safe_pickle import torch_load

    folder = _label_folder(frames, tmp_path / "labels", 4)
    out = tmp_path / "mixed.ckpt"
    code, stdout, err = run_cli(capsys, "seg", "train", "--standin", WORLD, "--frames", "6", "--labelled",
                                str(folder), "--epochs", "1", "--batch-size", "2", "--out", str(out), "--json")
    assert code == 0, err
    raw = torch_load(out)
    report = raw["so101_seg_train"]
    # 6 renders (5 to train, 1 held out) and 4 pictures (3 to train, 1 held out: the one that scores)
    assert report["labelled_frames"] == 4 and report["held_out_frames"] == 1 and report["train_frames"] == 8
    assert report["rendered_miou"] is not None and set(report["rendered_iou"]) <= {"background", "table", "cube",
                                                                                   "static_finger", "moving_finger"}
    assert "on the held-out renders: mean" in stdout and STANDIN_MARK not in raw


def test_nothing_to_learn_from_is_refused(capsys, tmp_path):
    code, _, err = run_cli(capsys, "seg", "train", "--out", str(tmp_path / "s.ckpt"))
    assert code == 2 and "nothing to learn from" in err
    code, _, err = run_cli(capsys, "seg", "train", "--labelled", str(tmp_path), "--out", str(tmp_path / "s.ckpt"))
    assert code == 2 and "no images/ folder" in err


@pytest.mark.slow
def test_a_recordings_pictures_come_out_for_labelling_with_guesses_apart_and_a_persons_mask_safe(capsys, tmp_path):
    import cv2
    import torch

    from so101_sim2real.perception import STANDIN_MARK
    from so101_sim2real.perception.label_folder import read_labelled
    from so101_sim2real.perception.seg_train import SegReport, save_checkpoint
    from so101_sim2real.perception.segmentation import SegmentationNet
    from so101_sim2real.safe_pickle import torch_load

    rec = tmp_path / "rec"
    code, _, err = run_cli(capsys, "infer", "--ckpt", "scripted", "--episodes", "1", "--max-steps", "5",
                           "--record", str(rec))
    assert code == 0, err
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "s.ckpt", SegmentationNet(6), SegReport(["x"] * 6))
    out = tmp_path / "labels"
    code, stdout, err = run_cli(capsys, "seg", "frames", str(rec), "--out", str(out), "--every", "2",
                                "--seg-ckpt", str(ckpt))
    assert code == 0, err
    names = ["rec_e000_t0000.png", "rec_e000_t0002.png", "rec_e000_t0004.png"]
    assert sorted(p.name for p in (out / "images").iterdir()) == names
    guess = cv2.imread(str(out / "guesses" / names[0]), cv2.IMREAD_UNCHANGED)
    assert guess.shape == (480, 640) and guess.max() < 6 and not (out / "masks").exists()  # a guess is no label
    assert (out / "classes.txt").read_text().splitlines()[3] == "3 cube" and "seg train --labelled" in stdout
    # a person labels two; the twin's pictures are a stand-in's, and a network they teach keeps the mark
    (out / "masks").mkdir()
    for name in names[:2]:
        cv2.imwrite(str(out / "masks" / name), np.full((480, 640), 3, np.uint8))
    assert read_labelled(out, ["u", "b", "t", "c", "s", "m"]).twin == [n[:-4] for n in names[:2]]
    code, _, err = run_cli(capsys, "seg", "train", "--labelled", str(out), "--epochs", "1", "--batch-size", "1",
                           "--out", str(tmp_path / "t.ckpt"))
    assert code == 0, err
    assert STANDIN_MARK in torch_load(tmp_path / "t.ckpt")
    # the same names from another recording would land under the person's masks: refused, nothing written
    other = tmp_path / "other" / "rec"
    code, _, err = run_cli(capsys, "infer", "--ckpt", "scripted", "--episodes", "1", "--seed", "7", "--max-steps",
                           "3", "--record", str(other))
    assert code == 0, err
    before = (out / "images" / names[0]).read_bytes()
    code, _, err = run_cli(capsys, "seg", "frames", str(other), "--out", str(out), "--every", "2")
    assert code == 2 and "already there, labelled, and another picture" in err
    assert (out / "images" / names[0]).read_bytes() == before
    code, _, err = run_cli(capsys, "seg", "frames", str(tmp_path / "nope"), "--out", str(out))
    assert code == 2 and "no such recording folder" in err
