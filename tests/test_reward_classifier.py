"""The reward classifier: twin labels, the split by episode, training to the acceptance bar on
held-out twin episodes, the in-the-loop judge, save/load without pickle, and the CLI's one-line
errors that leave files as they were."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from fixtures import run_cli
from so101_sim2real.control.recording import Recorder, Recording
from so101_sim2real.hilserl.rewards import ClassifierReward
from so101_sim2real.interfaces import StepResult
from so101_sim2real.reward import classifier as C
from so101_sim2real.reward import labels as L
from so101_sim2real.reward import metrics as M
from so101_sim2real.sim.task import TaskConfig
from so101_sim2real.spec import default_spec

LIFT = TaskConfig().lift_height_m


# ------------------------------------------------------------------------------- helpers


def fake_recording(folder: Path, episodes: list[tuple[list[float], bool | None]], rgb: bool = False,
                   twin: bool = True) -> Path:
    """A recording without rendering: per episode the cube's height after each row and the outcome.

    The policy frame's disparity is bright where the frame shows the cube lifted, so a net can
    learn it in a few updates; the RGB (when kept) is the same signal in the centre square only.
    """
    rec = Recorder(folder, default_spec(), "sim", "test", 0.02, with_rgb=rgb)
    for k, (heights, success) in enumerate(episodes):
        rec.begin(k, k)
        shown = [0.015, *heights[:-1]]
        for z_after, z_shown in zip(heights, shown, strict=True):
            lifted = z_shown > LIFT
            obs = np.zeros((2, 84, 84), np.uint8)
            obs[0] = 1
            obs[1] = 200 if lifted else 30
            image = np.zeros((480, 640, 3), np.uint8)
            image[:, 80:560] = 220 if lifted else 20
            joints = np.zeros(6)
            joints[5] = 0.1  # closed
            rec.add(obs=obs, joint_pos=joints, reward=0.0, rgb=image if rgb else None,
                    cube_pos=[0.25, 0.0, z_after] if twin else None)
        rec.end(len(heights), success if twin else None, 0.0, False)
    return folder


LIFTED_EPISODE = [0.015] * 6 + [0.05, 0.09, 0.12, 0.13, 0.13]  # rows 7.. are above; frames show it from row 8


def _so101(*args: str) -> None:
    from so101_sim2real.cli.app import main

    try:
        main(list(args))
    except SystemExit as exc:
        assert not exc.code, f"so101 {' '.join(args)} failed"


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def cli(capsys):
    """``so101 reward ...`` in-process through the console entry point (user errors: exit 2, one line)."""
    from so101_sim2real.cli.app import app
    from so101_sim2real.cli.reward import reward_app

    added = None
    if not any(group.name == "reward" for group in app.registered_groups):
        app.add_typer(reward_app, name="reward")
        added = app.registered_groups[-1]
    yield lambda *args: run_cli(capsys, "reward", *map(str, args))
    if added is not None:
        app.registered_groups.remove(added)


# --------------------------------------------------------------------------- twin data (slow)


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """Two twin recordings of the scripted expert, rendered once: training seeds 0-7, held-out seeds 100-103."""
    root = tmp_path_factory.mktemp("twin")
    _so101("infer", "--ckpt", "scripted", "-n", "8", "--record", str(root / "train"), "--no-record-rgb")
    _so101("infer", "--ckpt", "scripted", "-n", "4", "--seed", "100", "--record", str(root / "heldout"),
           "--no-record-rgb")
    return root / "train", root / "heldout"


@pytest.fixture(scope="module")
def twin_classifier(twin, tmp_path_factory):
    out = tmp_path_factory.mktemp("clf") / "classifier"
    threads = torch.get_num_threads()
    # A 37k-parameter net: one thread is steady; two thrash (5x slower) whenever another process shares the cores.
    torch.set_num_threads(1)
    try:
        return C.train_classifier([twin[0]], out, "obs", C.TrainOptions(seed=0))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_twin_labels_start_where_the_frame_first_shows_the_cube_held_above_the_lift_height(twin):
    rec = Recording(twin[0])
    labels = L.label_from_twin(rec)
    assert sorted(labels.episodes) == [e["index"] for e in rec.episodes]
    hold = TaskConfig().hold_steps
    for position, meta in enumerate(rec.episodes):
        label = labels.episodes[meta["index"]]
        z = rec.load(position)["cube_pos"][:, 2]
        if not meta["success"]:
            assert label.first_success is None
            continue
        first = label.first_success
        # row r's frame shows the cube where row r-1's step left it
        assert z[first - 1] > LIFT and z[first - 2] <= LIFT
        assert np.all(z[first - 1:-1] > LIFT)
        assert len(z) - first >= hold - 1  # the task held it hold_steps ticks; all but the last are seen
        assert label.source == "twin"


@pytest.mark.slow
def test_trained_on_twin_recordings_it_reaches_95_percent_balanced_accuracy_on_held_out_seeds(
        twin, twin_classifier, cli, tmp_path):
    result = twin_classifier
    assert result.metrics is not None and result.metrics.balanced_accuracy >= 0.95  # its own held-out episodes
    mistakes = tmp_path / "mistakes.png"
    code, out, err = cli("eval", result.folder, twin[1], "--json", "--mistakes", mistakes)
    assert code == 0, err
    metrics = json.loads(out.strip().splitlines()[-1])
    print("held-out seeds 100-103:", {k: metrics[k] for k in ("balanced_accuracy", "precision", "recall", "roc_auc",
                                                               "confusion")})
    assert metrics["positives"] > 0 and metrics["negatives"] > 0
    assert metrics["balanced_accuracy"] >= 0.95  # the acceptance bar
    assert metrics["roc_auc"] >= 0.95
    assert cv2.imread(str(mistakes)) is not None


@pytest.mark.slow
def test_the_saved_config_says_what_it_was_trained_on_and_how_it_scored(twin, twin_classifier):
    cfg = yaml.safe_load((twin_classifier.folder / C.CONFIG_FILE).read_text())
    spec = Recording(twin[0]).spec.observation
    assert cfg["input"] == "obs" and cfg["channels"] == list(spec.channels)
    assert cfg["image_size"] == list(spec.image_size) and cfg["crop"] == spec.crop
    assert cfg["metrics"]["balanced_accuracy"] == twin_classifier.metrics.balanced_accuracy
    (source,) = cfg["trained_on"]
    assert source["recording"] == str(twin[0].resolve()) and source["labels"] == "twin"
    held = {k for _, k in twin_classifier.heldout_episodes}
    assert held and set(source["heldout"]) == held and held < set(source["episodes"])
    assert twin_classifier.train_frames < sum(e["steps"] for e in Recording(twin[0]).episodes)


@pytest.mark.slow
def test_a_contact_sheet_shows_each_row_of_an_episode(twin, cli, tmp_path):
    sheet = tmp_path / "ep2.png"
    code, out, err = cli("label", twin[0], "--episode", 2, "--contact-sheet", sheet, "--every", 4)
    assert code == 0, err
    image = cv2.imread(str(sheet))
    rows = Recording(twin[0]).episodes[2]["steps"]
    tiles = -(-rows // 4)
    assert image.shape[1] == min(8, tiles) * 2 * 168 and image.shape[0] == -(-tiles // 8) * 168
    assert not (twin[0] / L.LABELS_FILE).exists()  # drawing labels nothing


# ------------------------------------------------------------------------------ labels (fast)


def test_the_twin_rule_counts_from_the_frame_that_shows_the_lift_to_the_end():
    z = np.array(LIFTED_EPISODE)
    closed = np.full(len(z), 0.1)
    assert L.twin_first_success(z, closed, True) == 8  # z[7] > lift: row 8's frame shows it
    assert L.twin_first_success(z, closed, False) is None  # a failed episode has no success frames
    assert L.twin_first_success(z, closed, None) is None
    open_gripper = closed.copy()
    open_gripper[9] = 1.0  # not grasped at row 9: success starts after it
    assert L.twin_first_success(z, open_gripper, True) == 10
    dropped = np.array([0.015, 0.09, 0.09, 0.05, 0.09, 0.1, 0.1])  # lifted, dropped, lifted again
    assert L.twin_first_success(dropped, np.full(7, 0.1), True) == 5


def test_labels_round_trip_through_a_file_a_person_can_read(tmp_path):
    rec = Recording(fake_recording(tmp_path / "rec", [(LIFTED_EPISODE, True), ([0.015] * 9, False)]))
    labels, kept = L.write_twin_labels(rec)
    assert kept == 0
    text = (rec.folder / L.LABELS_FILE).read_text()
    assert '{"episode": 0, "first_success": 8, "source": "twin"}' in text
    assert '{"episode": 1, "first_success": null, "source": "twin"}' in text
    assert L.load_labels(rec).episodes == labels.episodes
    L.set_label(rec, 1, 4)
    again, kept = L.write_twin_labels(rec)  # the twin's rule never overwrites a person
    assert kept == 1 and again.episodes[1] == L.EpisodeLabel(1, 4, "person")


def test_the_split_keeps_each_episode_on_one_side():
    eps = 12
    rows = 20
    episode = np.repeat(np.arange(eps), rows)
    labels = np.tile(np.arange(rows) >= 15, eps) & (episode % 3 != 0)  # every third episode has no success
    frames = C.Frames(np.zeros((len(episode), 2, 4, 4), np.uint8), labels, episode, np.tile(np.arange(rows), eps),
                      [("rec", k) for k in range(eps)], [])
    for seed in range(5):
        train, held = C.split_by_episode(frames, 0.25, seed)
        assert not (train & held).any() and (train | held).all()
        assert set(episode[train]).isdisjoint(episode[held])
        assert len(set(episode[held])) == 3  # a quarter of each kind, rounded
        assert labels[held].any() and labels[train].any() and (~labels[held]).any()


# --------------------------------------------------------------------------- metrics (fast)


def test_metrics_agree_with_their_definitions():
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.3
    probs = np.clip(labels * 0.3 + rng.random(200) * 0.7, 0, 1).round(2)  # ties on purpose
    pos, neg = probs[labels], probs[~labels]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert M.roc_auc(probs, labels) == pytest.approx(pairs)
    m = M.score(probs, labels, threshold=0.5, target_precision=0.9)
    tp, fp = ((probs >= 0.5) & labels).sum(), ((probs >= 0.5) & ~labels).sum()
    fn, tn = ((probs < 0.5) & labels).sum(), ((probs < 0.5) & ~labels).sum()
    assert m.confusion == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    assert m.precision == pytest.approx(tp / (tp + fp)) and m.recall == pytest.approx(tp / (tp + fn))
    assert m.balanced_accuracy == pytest.approx((tp / (tp + fn) + tn / (tn + fp)) / 2)
    assert m.f1 == pytest.approx(2 * m.precision * m.recall / (m.precision + m.recall))
    t = m.threshold_at_target_precision
    assert ((probs >= t) & labels).sum() / (probs >= t).sum() >= 0.9
    lower = probs[probs < t].max()  # the next threshold down misses the target
    assert ((probs >= lower) & labels).sum() / (probs >= lower).sum() < 0.9
    assert M.score(probs, np.zeros(200, bool)).roc_auc is None


# ----------------------------------------------------------------------------- judge (fast)


class ScriptedClassifier:
    def __init__(self, probabilities):
        self.probabilities = iter(probabilities)

    def probability(self, frame):
        return next(self.probabilities)


def test_the_judge_needs_consecutive_frames_at_the_threshold():
    judge = C.SuccessJudge(ScriptedClassifier([0.9, 0.9, 0.2, 0.8, 0.7, 0.95, 0.1]), threshold=0.7, consecutive=3,
                           min_steps=0)
    verdicts = [judge.update(None, step)[1] for step in range(1, 8)]
    assert verdicts == [False, False, False, False, False, True, False]


def test_the_judge_waits_for_min_steps_and_starts_again_on_reset():
    judge = C.SuccessJudge(ScriptedClassifier([0.99] * 20), threshold=0.7, consecutive=3, min_steps=10)
    verdicts = [judge.update(None, step) for step in range(1, 13)]
    assert [s for _, s in verdicts] == [False] * 9 + [True] * 3
    assert verdicts[0][0] == 0.99
    judge.reset()
    assert [judge.update(None, step)[1] for step in (11, 12, 13)] == [False, False, True]


def test_classifier_reward_ends_the_episode_on_the_judges_success():
    reward = ClassifierReward(C.SuccessJudge(ScriptedClassifier([0.9, 0.9]), consecutive=2, min_steps=0))
    reward.reset()
    from types import SimpleNamespace

    obs = SimpleNamespace(perceived=SimpleNamespace(frame=None))  # what the runner passes: its tick's frame
    first = reward.judge(obs, StepResult(0.5, False, False, {}), 1)
    second = reward.judge(obs, StepResult(0.5, False, False, {}), 2)
    assert (first.terminated, reward.reward(first)) == (False, 0.0)
    assert (second.terminated, reward.reward(second)) == (True, 1.0)
    assert second.info["classifier_p"] == 0.9 and second.info["task_success"] is False


# -------------------------------------------------------------------------- save/load (fast)


def _classifier(input_kind: str = "obs") -> C.Classifier:
    torch.manual_seed(0)
    channels = ["seg", "disparity"] if input_kind == "obs" else ["r", "g", "b"]
    config = C.ClassifierConfig(input_kind, channels, (84, 84), "center_square", (480, 640), threshold=0.6)
    return C.Classifier(C.RewardNet(len(channels)), config)


def test_save_and_load_give_identical_outputs_without_pickle(tmp_path, monkeypatch):
    clf = _classifier()
    assert sum(p.numel() for p in clf.net.parameters()) < 200_000
    frames = np.random.default_rng(0).integers(0, 256, (5, 2, 84, 84), dtype=np.uint8)
    folder = C.save_classifier(clf, tmp_path / "clf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf"]  # no temporary folder left beside it

    def refuse(*args, **kwargs):
        raise AssertionError("loading a classifier must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = C.load_classifier(folder)
    assert loaded.config == clf.config
    np.testing.assert_array_equal(loaded.probabilities(frames), clf.probabilities(frames))


def test_the_net_scales_pixels_once_and_takes_the_newest_frame_of_a_stack():
    clf = _classifier()
    frame = np.random.default_rng(1).integers(0, 256, (2, 84, 84), dtype=np.uint8)
    as_float = torch.from_numpy(frame[None]).float()
    with torch.no_grad():
        assert torch.allclose(clf.net(torch.from_numpy(frame[None])), clf.net(as_float))
    seen = []
    hook = clf.net.convs[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    clf.probability(frame)
    hook.remove()
    assert torch.equal(seen[0][0], torch.from_numpy(frame).float() / 255.0)  # [0, 1], scaled once
    stack = np.concatenate([np.zeros_like(frame), np.zeros_like(frame), frame])  # oldest first
    assert clf.probability(stack) == clf.probability(frame)


def test_rgb_input_is_the_spec_crop_resized():
    clf = _classifier("rgb")
    image = np.full((480, 640, 3), 255, np.uint8)
    image[:, 80:560] = 7  # the centre square; the sides are cropped away
    prepared = clf.prepare(image)
    assert prepared.shape == (3, 84, 84) and (prepared == 7).all()


def test_a_failed_write_leaves_no_folder(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(C, "save_file", broken)
    with pytest.raises(OSError):
        C.save_classifier(_classifier(), tmp_path / "clf")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------- CLI (fast)


def test_train_and_eval_on_camera_rgb(cli, tmp_path):
    rec = fake_recording(tmp_path / "rec", [(LIFTED_EPISODE, True)] * 4, rgb=True)
    out = tmp_path / "clf"
    code, stdout, err = cli("train", rec, "--out", out, "--input", "rgb", "--epochs", 3, "--json")
    assert code == 0, err
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["metrics"]["frames"] == len(LIFTED_EPISODE)  # one of four episodes held out
    loaded = C.load_classifier(out)
    assert loaded.config.input == "rgb" and loaded.config.crop == "center_square"
    code, stdout, err = cli("eval", out, rec)
    assert code == 0, err and "balanced accuracy" in stdout


def test_a_person_labels_an_episode_from_the_command_line(cli, tmp_path):
    rec = fake_recording(tmp_path / "rec", [([0.015] * 10, None)] * 2, twin=False)
    assert cli("label", rec, "--episode", 1, "--first-success", 6)[0] == 0
    assert cli("label", rec, "--episode", 0, "--none")[0] == 0
    code, out, _ = cli("label", rec, "--json")
    assert code == 0 and json.loads(out)["episodes"] == [
        {"episode": 0, "first_success": None, "source": "person"},
        {"episode": 1, "first_success": 6, "source": "person"}]


def test_help_explains_the_commands(cli):
    code, out, _ = cli("--help")
    assert code == 0 and all(word in out for word in ("label", "train", "eval", "success"))
    code, out, _ = cli("label", "--help")
    assert code == 0 and "--first-success" in out and "--contact-sheet" in out


def _typo_labels(rec: Path) -> None:
    (rec / L.LABELS_FILE).write_text(json.dumps({"format": L.LABELS_FORMAT, "version": 1, "episodes": [
        {"episode": 0, "first_sucess": 3, "source": "person"}]}))


BAD = {
    "missing folder": (lambda t: ["train", t / "nope", "--out", t / "o"], "not a recording"),
    "not a recording": (lambda t: ["label", t / "rec" / "episode_0000.npz"], "not a recording"),
    "no RGB for --input rgb": (lambda t: ["train", t / "rec", "--out", t / "o", "--input", "rgb"], "--input obs"),
    "no positives": (lambda t: ["train", t / "failed", "--out", t / "o"], "no success frames"),
    "a typo in the labels": (lambda t: (_typo_labels(t / "rec"), ["train", t / "rec", "--out", t / "o"])[1],
                             "did you mean 'first_success'"),
    "an unknown input": (lambda t: ["train", t / "rec", "--out", t / "o", "--input", "rbg"], "did you mean 'rgb'"),
    "an episode not there": (lambda t: ["label", t / "rec", "--episode", 7, "--none"], "--episode 7"),
    "a row past the end": (lambda t: ["label", t / "rec", "--episode", 0, "--first-success", 99],
                           "--first-success 99"),
    "both --none and a row": (lambda t: ["label", t / "rec", "--episode", 0, "--none", "--first-success", 1],
                              "one or the other"),
    "--out exists": (lambda t: (t.joinpath("o").mkdir(), ["train", t / "rec", "--out", t / "o"])[1], "--force"),
    "no classifier": (lambda t: ["eval", t / "nope", t / "rec"], "no such classifier"),
    "a sheet that is not a PNG": (lambda t: ["label", t / "rec", "--episode", 0, "--contact-sheet", t / "x.jpg"],
                                  ".png"),
    "--labels per recording": (lambda t: ["train", t / "rec", "--out", t / "o", "--labels", t / "a.json",
                                          "--labels", t / "b.json"], "one per recording"),
    # --force replaces a previous classifier folder; a file there is the user's, not ours
    "--out is a file, even with --force": (lambda t: (t.joinpath("o").write_text("mine\n"),
                                                      ["train", t / "rec", "--out", t / "o", "--force"])[1],
                                           "a file, not a folder"),
    # one recording twice would put copies of training episodes among the held-out ones
    "a recording twice": (lambda t: ["train", t / "rec", t / "rec", "--out", t / "o"], "given twice"),
    "a recording twice, spelt another way": (lambda t: ["train", t / "rec", t / "failed" / ".." / "rec", "--out",
                                                        t / "o"], "(the same folder)"),
    "a recording and a link to it": (lambda t: ((t / "link").symlink_to(t / "rec"),
                                                ["train", t / "rec", t / "link", "--out", t / "o"])[1], "given twice"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(cli, tmp_path, case):
    fake_recording(tmp_path / "rec", [(LIFTED_EPISODE, True), ([0.015] * 8, False)])
    fake_recording(tmp_path / "failed", [([0.015] * 8, False)] * 2)
    make_args, expected = BAD[case]
    args = make_args(tmp_path)
    before = files_of(tmp_path)
    code, out, err = cli(*args)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), (code, out, err)
    assert expected in err
    assert files_of(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.slow
def test_in_the_loop_the_classifier_ends_episodes_where_the_task_would(twin_classifier):
    """The runner asks the judge each tick: the scripted expert's episodes on unseen seeds end on the
    classifier's success, within a few ticks of the task's own verdict."""
    from so101_sim2real.control.env import sim_env
    from so101_sim2real.control.pilots import ScriptedPilot
    from so101_sim2real.control.runner import Runner
    from so101_sim2real.sim.task import TaskConfig
    from so101_sim2real.spec import default_spec

    rig = sim_env(default_spec())
    try:
        seeds = [200, 201, 202]
        task = Runner(rig, ScriptedPilot(rig.twin), perceive=True).run(seeds)
        # The task wants the cube held above the lift height for hold_steps; so does the judge here.
        reward = ClassifierReward(C.SuccessJudge(C.load_classifier(twin_classifier.folder), 0.7,
                                                 consecutive=TaskConfig().hold_steps, min_steps=10))
        judged = Runner(rig, ScriptedPilot(rig.twin), perceive=True, judge=reward).run(seeds)
    finally:
        rig.close()
    assert all(e.success for e in task.episodes) and all(e.success for e in judged.episodes)
    for by_task, by_classifier in zip(task.episodes, judged.episodes, strict=True):
        assert abs(by_classifier.steps - by_task.steps) <= 2, (by_task.steps, by_classifier.steps)
