"""so101 depth fit: Depth Anything's architecture fitted to a stand-in's disparity, marked as a stand-in's."""

from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures import run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_the_loss_ignores_the_predictions_scale_and_shift_but_not_its_sign():
    from so101_sim2real.perception.depth_fit import normalised_disparity, scale_shift_loss

    target = normalised_disparity(np.random.default_rng(0).uniform(0.05, 1.0, (2, 48, 64)), (14, 28))
    assert float(target.min()) == 0.0 and float(target.max()) == pytest.approx(1.0)
    assert float(scale_shift_loss(3.0 * target + 7.0, target)) < 1e-5  # relative disparity: any scale, any shift
    assert float(scale_shift_loss(torch.flip(target, [-1]), target)) > 0.1  # another picture is wrong
    assert float(scale_shift_loss(1.0 - target, target)) > 1.0  # and so is the picture inverted (far bright)
    # near is bright: the nearer of two depths has the larger normalised disparity
    assert float(normalised_disparity(np.array([[[0.1, 0.5]]]), (1, 2))[0, 0, 0]) == 1.0


@pytest.mark.slow
def test_the_command_writes_a_marked_folder_the_loader_reads(capsys, tmp_path):
    from so101_sim2real.perception import STANDIN_MARK
    from so101_sim2real.perception.depth import load_depth
    from so101_sim2real.perception.examples import example_sources, marked_sources

    out = tmp_path / "standin-depth"
    code, stdout, err = run_cli(capsys, "depth", "fit", "--standin", str(ROOT / "configs" / "standin.yaml"),
                                "--frames", "6", "--epochs", "1", "--batch-size", "4", "--out", str(out))
    assert code == 0, err
    assert "held-out Spearman" in stdout and "a real arm refuses it" in stdout
    model = load_depth(out)
    assert model.predict(np.zeros((48, 64, 3), np.uint8), side=28).shape == (48, 64)
    assert marked_sources(None, out, STANDIN_MARK) == [str(out)] and example_sources(None, out) == []
    assert (out / "so101_depth_fit.json").is_file()
    code, _, err = run_cli(capsys, "depth", "fit", "--standin", str(ROOT / "configs" / "standin.yaml"), "--out",
                           str(tmp_path / "d"), "--frames", "3")
    assert code == 2 and "--frames at least 5" in err
    code, _, err = run_cli(capsys, "depth", "fit", "--standin", str(ROOT / "configs" / "standin.yaml"), "--out",
                           str(tmp_path / "d"), "--init", str(tmp_path / "nowhere"))
    assert code == 2 and err.startswith("error: --init ") and "--depth-model" not in err  # the option given


def test_a_constant_map_ranks_nothing_and_ties_share_their_rank():
    from so101_sim2real.perception.depth_fit import spearman

    truth = np.linspace(0.0, 1.0, 100)
    assert spearman(np.zeros(100), truth) == 0.0  # a dead head: ties broken by pixel order would score ~1
    assert spearman(truth**3, truth) == pytest.approx(1.0) and spearman(-truth, truth) == pytest.approx(-1.0)
    steps = np.repeat([0.0, 1.0], 50)  # two plateaus: ties averaged, the correlation is the steps' own
    assert 0.8 < spearman(steps, truth) < 0.9
