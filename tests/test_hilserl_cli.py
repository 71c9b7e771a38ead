"""`so101 hilserl train/status` end to end on the twin: run folder, resume, the policy it writes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import lerobot_reader
from fixtures import run_cli as run
from so101_sim2real.control.description import describe

pytestmark = pytest.mark.slow  # whole runs on the twin, subprocesses: `pytest -m "not slow"` skips them

# min_utd: between episodes the actor waits for the learner, so updates happen beside another busy process too
FAST = ["--episodes", "2", "--max-steps", "12", "--set", "learner.batch_size=8", "--set", "warmup_steps=10",
        "--set", "publish_every=2", "--set", "utd=0.5", "--set", "min_utd=0.2"]


def test_train_writes_a_run_that_status_infer_and_resume_accept(capsys, snapshot, tmp_path, monkeypatch):
    out = tmp_path / "run"
    code, text, err = run(capsys, "hilserl", "train", "--ckpt", str(snapshot), "--out", str(out), *FAST)
    assert code == 0, err
    assert "episode 2" in text and "UTD" in text
    counters = json.loads((out / "counters.json").read_text())
    assert counters["episodes"] == 2 and counters["env_steps"] == 24 and counters["updates"] > 0
    episodes = json.loads((out / "episodes" / "recording.json").read_text())["episodes"]
    assert [e["steps"] for e in episodes] == [12, 12]

    from so101_sim2real.hilserl.learner import Learner
    from so101_sim2real.hilserl.run import RunFolder
    from so101_sim2real.policy.checkpoint import load_checkpoint
    from so101_sim2real.policy.runtime import build_agent

    folder = RunFolder.open(out)
    learner = Learner(build_agent(load_checkpoint(out / "policy")), folder.cfg.learner)
    assert folder.load_optimisers(learner)  # the AdamW moments come back with the weights
    assert {float(s["step"]) for s in learner.critic_opt.state.values()} == {float(counters["updates"])}

    # the run's episodes are a recording compare-sim reads: on the nominal twin it matches the twin
    code, text, err = run(capsys, "compare-sim", str(out), "--episode", "1", "--json")
    assert code == 0, err
    report = json.loads(text)
    assert report["ticks"] == 12 and report["segmentation"]["iou"]["table"] > 0.99, report["segmentation"]["iou"]

    code, text, _ = run(capsys, "hilserl", "status", str(out), "--json")
    info = json.loads(text)
    assert code == 0 and info["counters"] == counters and info["episodes_recorded"] == 2
    assert 0.0 <= info["intervention_rate_last_20"] <= 1.0 and info["success_rate_last_20"] is not None
    assert info["last"]["episodes"] == 2 and info["last"]["buffer"] == 24
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["episodes"] for line in lines] == [1, 2]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(out / "tensorboard"))
    board.Reload()
    assert [e.step for e in board.Scalars("episode/success")] == [1, 2]
    assert [e.value for e in board.Scalars("counters/env_steps")] == [12, 24]
    assert {"counters/updates", "rates/utd", "episode/intervention_rate"} <= set(board.Tags()["scalars"])

    code, text, _ = run(capsys, "hilserl", "plot", str(out), "--out", str(tmp_path / "curve.png"))
    import cv2

    image = cv2.imread(str(tmp_path / "curve.png"))
    assert code == 0 and image is not None and image.shape[1] > 400
    code, _, err = run(capsys, "hilserl", "plot", str(tmp_path), "--out", str(tmp_path / "c.png"))
    assert code == 2 and "not a HIL-SERL run folder" in err

    code, text, _ = run(capsys, "infer", "--ckpt", str(out / "policy"), "--episodes", "1", "--max-steps", "2",
                        "--json")
    assert code == 0 and json.loads(text.strip().splitlines()[-1])["episodes"] == 1

    # the run's episodes as a LeRobot dataset: who was in control and the learner's reward, tick by tick
    code, text, err = run(capsys, "export", "lerobot", str(out), "--out", str(tmp_path / "ds"), "--json")
    assert code == 0, err
    data = lerobot_reader.read(tmp_path / "ds")
    assert json.loads(text.strip().splitlines()[-1])["kind"] == "run" and data["info"]["total_frames"] == 24
    assert "observation.images.wrist" not in data["info"]["features"]  # a run keeps no camera images
    from so101_sim2real.control.recording import Recording

    recorded = Recording(out / "episodes")
    for i, frames in enumerate(data["frames"]):
        arrays = recorded.load(i)
        assert np.array_equal(frames["complementary_info.is_intervention"],
                              arrays["is_intervention"].astype(np.float32))
        assert np.array_equal(frames["complementary_info.learner_reward"], arrays["learner_reward"].astype(np.float32))
        terminated, ends = arrays["terminated"].astype(bool), arrays["ends"].astype(bool)
        assert np.array_equal(frames["next.done"], terminated | ends) and frames["next.done"][-1]
        assert np.array_equal(frames["next.truncated"], ends & ~terminated)
        assert frames["next.success"][-1] == bool(recorded.episodes[i]["success"])
        assert np.array_equal(frames["observation.images.seg"][..., 0], arrays["obs"][:, 0])
    # the episodes keep the twin's cube, so the twin's rule labels them for the reward classifier
    assert recorded.load(0)["cube_pos"].shape == (12, 3)
    code, _, err = run(capsys, "reward", "label", str(out / "episodes"), "--twin")
    assert code == 0 and len(json.loads((out / "episodes" / "labels.json").read_text())["episodes"]) == 2, err

    # the policy to the hub with a card made from the run: tested up to the upload, which a fake hub takes
    uploads = []

    class Hub:
        def create_repo(self, repo_id, **kw):
            uploads.append(("create", repo_id, kw["private"]))
            return f"https://huggingface.co/{repo_id}"

        def update_repo_settings(self, repo_id, **kw):
            uploads.append(("visibility", repo_id, kw["private"]))

        def upload_folder(self, folder_path, repo_id, **kw):
            uploads.append(("upload", sorted(os.listdir(folder_path)), (Path(folder_path) / "README.md").read_text()))

    monkeypatch.setattr("huggingface_hub.HfApi", Hub)
    code, text, err = run(capsys, "models", "push", str(out / "policy"), "--repo-id", "alice/so101-lift")
    assert code == 0 and "(private)" in text, err
    (_, repo, private), visibility, (_, files, card) = uploads
    assert repo == "alice/so101-lift" and private is True and visibility == ("visibility", repo, True)
    assert files == ["README.md", "spec.yaml", "weights.safetensors"]
    front = yaml.safe_load(card.split("---")[1])
    assert front["pipeline_tag"] == "robotics" and front["license"] == "apache-2.0"
    assert "2 episodes, 24 steps" in card and "MuJoCo 3.4.0" in card and "seg + disparity, 84x84" in card
    code, _, _ = run(capsys, "models", "push", str(out / "policy"), "--repo-id", "alice/so101-lift", "--public")
    assert code == 0 and uploads[-3:-1] == [("create", "alice/so101-lift", False),
                                            ("visibility", "alice/so101-lift", False)]

    class Offline(Hub):
        def create_repo(self, repo_id, **kw):
            raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("huggingface_hub.HfApi", Offline)
    code, _, err = run(capsys, "models", "push", str(out / "policy"), "--repo-id", "alice/so101-lift")
    assert code == 2 and "cannot upload to the hub" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "models", "push", str(out), "--repo-id", "alice/so101-lift")
    assert code == 2 and "not a policy folder" in err

    code, text, err = run(capsys, "hilserl", "train", "--out", str(out), "--resume", "--episodes", "1",
                          "--max-steps", "12", "--set", "learner.actor_lr=2e-5")
    assert code == 0, err
    assert "setting changed on resume: learner.actor_lr: 0.0002 -> 2e-05" in text
    after = json.loads((out / "counters.json").read_text())
    assert after["episodes"] == 3 and after["env_steps"] == 36 and after["next_seed"] == 3
    assert after["updates"] >= counters["updates"]


@pytest.mark.parametrize(("args", "expected"), [
    (["--out", "{file}", "--ckpt", "{ckpt}"], "not a folder"),
    (["--out", "{tmp}", "--resume"], "not a HIL-SERL run folder"),
    (["--out", "{tmp}/r"], "needs --ckpt"),
    (["--out", "{tmp}/r", "--ckpt", "{ckpt}", "--set", "learner.actr_lr=1"], "did you mean 'actor_lr'"),
    (["--out", "{tmp}/r", "--ckpt", "{ckpt}", "--set", "utd=fast"], "expected a number"),
    (["--out", "{tmp}/r", "--ckpt", "{ckpt}", "--intervene", "human"], "scripted, leader, none"),
    (["--out", "{tmp}/r", "--ckpt", "{tmp}/missing.pt"], "no such file"),
    (["--out", "{tmp}/r", "--ckpt", "{ckpt}", "--episodes", "0"], "at least 1"),
    (["--out", "{tmp}/r", "--ckpt", "{ckpt}", "--device", "banana"], "not a torch device"),
    (["--out", "{tmp}/r", "--ckpt", "{ckpt}", "--set", "utd=["], "not valid YAML"),
    (["--out", "{tmp}/r", "--ckpt", "{ckpt}", "--reward", "sparse"], "success, dense, classifier"),
    (["--out", "{tmp}/r", "--ckpt", "{ckpt}", "--perception-threads", "2"], "only with --perception real"),
])
def test_bad_input_is_one_line_and_changes_nothing(capsys, snapshot, tmp_path, args, expected):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    args = [a.format(file=afile, ckpt=snapshot, tmp=tmp_path) for a in args]
    code, _, err = run(capsys, "hilserl", "train", *args)
    assert code == 2 and expected in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert afile.read_text() == "keep"
    assert not (tmp_path / "r").exists()  # a refused start leaves no run folder behind


def test_a_resume_refuses_new_sources_and_a_hand_broken_run_yaml(capsys, snapshot, tmp_path):
    out = tmp_path / "run"
    code, _, err = run(capsys, "hilserl", "train", "--ckpt", str(snapshot), "--out", str(out), "--episodes", "1",
                       "--max-steps", "6", "--set", "learner.batch_size=4")
    assert code == 0, err
    code, _, err = run(capsys, "hilserl", "train", "--out", str(out), "--resume", "--intervene", "none")
    assert code == 2 and "a resumed run keeps its own" in err
    text = (out / "run.yaml").read_text()
    (out / "run.yaml").write_text(text.replace("reward: success", "reward: sparse"))
    code, _, err = run(capsys, "hilserl", "train", "--out", str(out), "--resume")
    assert code == 2 and "options.reward sparse" in err and err.count("\n") == 1


def test_kill_9_loses_at_most_the_episode_in_progress(snapshot, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "so101_sim2real", "hilserl", "train", "--ckpt", str(snapshot), "--out", str(out),
           "--episodes", "50", "--max-steps", "10", "--set", "learner.batch_size=8", "--set", "utd=0.2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    index = out / "episodes" / "recording.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        if index.is_file() and len(json.loads(index.read_text())["episodes"]) >= 2:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    recorded = json.loads(index.read_text())["episodes"]
    counters = json.loads((out / "counters.json").read_text())
    assert len(recorded) >= 2 and counters["episodes"] in (len(recorded) - 1, len(recorded))
    assert not [p.name for p in (out / "episodes").iterdir() if p.name.endswith(".npz") and "tmp" not in p.name
                and p.name not in {e["file"] for e in recorded}]
    resumed = subprocess.run([sys.executable, "-m", "so101_sim2real", "hilserl", "train", "--out", str(out),
                              "--resume", "--episodes", "1", "--max-steps", "10"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = json.loads((out / "counters.json").read_text())
    assert after["episodes"] == len(recorded) + 1  # counters caught up with the episode files
    final = json.loads(index.read_text())["episodes"]
    assert len(final) == len(recorded) + 1 and final[-1]["seed"] == max(e["seed"] for e in recorded) + 1


def test_demos_from_a_scripted_recording_fill_the_demo_store(capsys, tmp_path):
    from so101_sim2real.hilserl.replay import ReplayBuffer
    from so101_sim2real.hilserl.rewards import SuccessReward
    from so101_sim2real.hilserl.run import load_demos
    from so101_sim2real.spec import default_spec

    demos = tmp_path / "demos"
    code, _, err = run(capsys, "infer", "--ckpt", "scripted", "--episodes", "2", "--record", str(demos),
                       "--no-record-rgb")  # demos need the policy's frames only
    assert code == 0, err
    buffer = ReplayBuffer(1000, (2, 84, 84), 18, 4, seed=0)
    assert load_demos((str(demos),), buffer, SuccessReward(), default_spec()) == 2
    store = buffer.demos
    rows = store.written
    assert rows > 40 and store.intervention[:rows].all() and store.sampleable[:rows].all()
    assert store.terminal[:rows].sum() == 2  # each successful demo ends once, terminal
    assert store.reward[:rows].sum() == 2.0  # the success reward: 1 on each final row
    assert buffer.sample(8).from_demos.all()  # no online data yet: the whole batch from the demos

    code, _, err = run(capsys, "hilserl", "train", "--ckpt", str(tmp_path / "missing.pt"), "--out",
                       str(tmp_path / "r"), "--demos", str(tmp_path / "nothere"))
    assert code == 2 and "neither a recording" in err


def test_a_resume_keeps_the_runs_own_critics(capsys, snapshot, tmp_path, monkeypatch):
    import torch

    from so101_sim2real.hilserl import run as run_module
    from so101_sim2real.policy.checkpoint import load_checkpoint

    out = tmp_path / "run"
    code, _, err = run(capsys, "hilserl", "train", "--ckpt", str(snapshot), "--out", str(out), "--episodes", "1",
                       "--max-steps", "12", "--set", "learner.batch_size=8", "--set", "utd=0.5")
    assert code == 0, err
    saved = {k: v for k, v in load_checkpoint(out / "policy").weights.items() if k.startswith("critic.")}
    seen = {}

    class Spy(run_module.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.update({k: v.clone() for k, v in self.learner.agent.state_dict().items() if k.startswith("critic.")})

    monkeypatch.setattr(run_module, "Trainer", Spy)
    run_module.train(out, 1, resume=True, max_steps=2)
    assert seen and all(torch.equal(seen[k], saved[k]) for k in saved)  # not re-initialised on resume


def test_a_run_in_the_perturbed_twin_keeps_its_world_on_resume(capsys, snapshot, tmp_path):
    import yaml

    world = tmp_path / "perturbed.yaml"
    world.write_text("period_s: 0.1\ncamera_tilt_deg: [2, 0, 0]\n")
    out = tmp_path / "run"
    code, text, err = run(capsys, "hilserl", "train", "--ckpt", str(snapshot), "--out", str(out), "--perturb",
                          str(world), "--episodes", "1", "--max-steps", "6", "--set", "learner.batch_size=4")
    assert code == 0, err
    saved = yaml.safe_load((out / "run.yaml").read_text())["where"]["world"]
    assert saved["period_s"] == 0.1 and saved["camera_tilt_deg"] == [2.0, 0.0, 0.0]
    assert json.loads((out / "episodes" / "recording.json").read_text())["period_s"] == 0.1
    code, _, err = run(capsys, "hilserl", "train", "--out", str(out), "--resume", "--perturb", str(world))
    assert code == 2 and "--perturb: a resumed run keeps its own" in err


def test_a_session_with_the_emulated_leader_records_the_hands_takeovers(capsys, snapshot, tmp_path):
    import numpy as np
    import yaml

    from so101_sim2real.control.recording import Recording

    out = tmp_path / "run"  # both arms emulated: the follower is the twin through the real driver
    code, stdout, err = run(capsys, "hilserl", "train", "--ckpt", str(snapshot), "--out", str(out), "--robot",
                            "so101", "--port", "emulator", "--intervene", "leader", "--leader-port", "emulator",
                            "--episodes", "1", "--max-steps", "40")
    assert code == 0, err
    assert "(1 leader takeovers)" in stdout  # the hand grabs once, at step 10
    saved = yaml.safe_load((out / "run.yaml").read_text())
    options = saved["options"]
    assert options["intervene"] == "leader" and options["leader_port"] == "emulator"
    assert saved["where"]["robot"] == {"kind": "so101", "port": "emulator", "calibration": None}
    # The period was measured at the start (the twin's renders alone take longer than the trained 20 ms)
    # and is written with each episode, with the ticks that overran it.
    assert "control period" in stdout and "the policy trained at 20 ms" in stdout
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["period_s"] > 0.02 and row["overruns"] >= 0
    episodes = Recording(out / "episodes")  # a recording of the arm it drove, at the period that ran
    assert episodes.meta["period_s"] == row["period_s"] and episodes.meta["robot"] == "so101"
    episode = episodes.load(0)
    flags = episode["is_intervention"].astype(bool)
    assert not flags[:9].any() and flags[10:20].all()  # the policy until the grab, the person after it
    for changed in (("--leader-port", "/dev/ttyACM1"), ("--port", "/dev/ttyACM0")):
        code, _, err = run(capsys, "hilserl", "train", "--out", str(out), "--resume", *changed)
        assert code == 2 and "a resumed run keeps its own" in err and changed[0] in err
    assert np.isfinite(episode["action"]).all()


def test_the_real_perception_gets_the_cores_the_learner_leaves(monkeypatch):
    """Perception's thread budget is the cores the learner leaves, at least one."""
    import os

    from so101_sim2real.hilserl.run import RunOptions

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    def threads(options: RunOptions, learner_threads: int | None) -> int | None:  # as the session builds its env
        return options.where.models(options.actor_threads(learner_threads)).threads

    real = RunOptions(describe(ckpt="c.pt", perception="real", seg_ckpt="s.ckpt"))
    assert threads(real, 1) == 3
    assert threads(real, 8) == 1  # never none
    assert threads(real, None) is None  # no learner (a plain run): torch's count
    given = RunOptions(describe(ckpt="c.pt", perception="real", seg_ckpt="s.ckpt", perception_threads=2))
    assert threads(given, 1) == 2
    on_gpu = RunOptions(describe(ckpt="c.pt", perception="real", seg_ckpt="s.ckpt", device="cuda"))
    assert threads(on_gpu, 1) is None
    # the actor's own thread (its policy) on the same budget, on the twin too
    assert RunOptions(describe(ckpt="c.pt")).actor_threads(1) == 3 and given.actor_threads(1) == 2


README_HAND = """\
- {episode: 1, step: 5, hold_s: 8, guide: cube}
- {when: stalled, stall_s: 0.2, hold_s: 5, guide: cube}
"""


def test_a_hand_script_session_shows_its_takeovers_in_status_and_writes_one_return(capsys, snapshot, tmp_path):
    from so101_sim2real.control.recording import Recording

    hand = tmp_path / "hand.yaml"
    hand.write_text(README_HAND)
    out = tmp_path / "run"
    code, text, err = run(capsys, "hilserl", "train", "--ckpt", str(snapshot), "--out", str(out), "--intervene",
                          "leader", "--leader-port", "emulator", "--hand", str(hand), "--episodes", "2",
                          "--max-steps", "30", "--set", "learner.batch_size=8")
    assert code == 0, err
    assert "camera: " in text and "not calibrated" in text  # what infer says, said here too
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["takeovers"] for row in metrics] == [1, 1]  # episode 1 at step 5; the stall in episode 2
    flags = Recording(out / "episodes").load(0)["is_intervention"].astype(bool)
    assert not flags[:4].any() and flags[5:10].all()  # the policy until step 5, the hand's from there
    # one return per episode, the same in metrics.jsonl and the episode files
    recorded = json.loads((out / "episodes" / "recording.json").read_text())["episodes"]
    assert [row["return"] for row in metrics] == [e["return"] for e in recorded]
    code, text, _ = run(capsys, "hilserl", "status", str(out))
    assert code == 0 and "leader takeovers: 2" in text, text
    code, text, _ = run(capsys, "hilserl", "status", str(out), "--json")
    assert json.loads(text)["takeovers"] == 2
    code, _, err = run(capsys, "hilserl", "train", "--out", str(out), "--resume", "--hand", str(hand))
    assert code == 2 and "--hand: a resumed run keeps its own" in err


def test_one_return_per_episode_in_metrics_and_the_episode_files(capsys, snapshot, tmp_path):
    out = tmp_path / "run"  # the success reward: the task's dense reward is not the learner's return
    code, _, err = run(capsys, "hilserl", "train", "--ckpt", str(snapshot), "--out", str(out), "--episodes", "1",
                       "--max-steps", "12", "--set", "learner.batch_size=4")
    assert code == 0, err
    metrics = [json.loads(line)["return"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    recorded = json.loads((out / "episodes" / "recording.json").read_text())["episodes"]
    assert metrics == [e["return"] for e in recorded]


def test_a_run_started_with_relative_paths_resumes_from_another_folder(capsys, snapshot, tmp_path, monkeypatch):
    import shutil

    import yaml

    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    start.mkdir()
    elsewhere.mkdir()
    shutil.copy(snapshot, start / "snap.pt")
    monkeypatch.chdir(start)
    code, _, err = run(capsys, "infer", "--ckpt", "scripted", "--episodes", "1", "--max-steps", "3", "--record",
                       "demos", "--no-record-rgb")
    assert code == 0, err
    code, _, err = run(capsys, "hilserl", "train", "--ckpt", "snap.pt", "--out", "run", "--demos", "demos",
                       "--episodes", "1", "--max-steps", "4", "--set", "learner.batch_size=4")
    assert code == 0, err
    saved = yaml.safe_load((start / "run" / "run.yaml").read_text())
    assert saved["where"]["policy"]["ckpt"] == str(start / "snap.pt")
    assert saved["options"]["demos"] == [str(start / "demos")]
    monkeypatch.chdir(elsewhere)
    code, _, err = run(capsys, "hilserl", "train", "--out", "../start/run", "--resume", "--episodes", "1",
                       "--max-steps", "4")
    assert code == 0, err
    # an older run.yaml with relative paths says where they resolve
    text = (start / "run" / "run.yaml").read_text().replace(str(start / "demos"), "demos")
    (start / "run" / "run.yaml").write_text(text)
    code, _, err = run(capsys, "hilserl", "train", "--out", "../start/run", "--resume")
    assert code == 2 and "names demos demos relative to the folder the run started in" in err, err


def test_example_weights_and_a_classifier_judging_their_noise_are_warned_of(capsys, snapshot, tmp_path):
    import torch

    from so101_sim2real.perception.examples import write_example_models
    from so101_sim2real.reward import classifier as C

    examples = write_example_models(tmp_path / "examples")
    torch.manual_seed(0)
    config = C.ClassifierConfig("obs", ["seg", "disparity"], (84, 84), "center_square", (480, 640))
    classifier = C.save_classifier(C.Classifier(C.RewardNet(2), config), tmp_path / "classifier")
    code, _, err = run(capsys, "hilserl", "train", "--ckpt", str(snapshot), "--out", str(tmp_path / "run"),
                       "--perception", "real", "--seg-ckpt", str(examples.seg_ckpt), "--depth-model",
                       str(examples.depth_model), "--backend", "torch", "--reward", "classifier", "--classifier",
                       str(classifier), "--episodes", "1", "--max-steps", "2", "--set", "learner.batch_size=4")
    assert code == 0, err
    assert "example weights (random): the policy sees noise" in err
    assert "the reward classifier judges the policy's frame" in err and "its successes are noise too" in err


def test_status_and_plot_read_a_run_whose_arm_is_gone(capsys, snapshot, tmp_path):
    """A run on an arm (here: an emulator's pty that has since closed) is still read by status and
    plot; only a resume asks for the arm."""
    import yaml

    out = tmp_path / "run"
    code, _, err = run(capsys, "hilserl", "train", "--ckpt", str(snapshot), "--out", str(out), *FAST)
    assert code == 0, err
    data = yaml.safe_load((out / "run.yaml").read_text())
    data["where"].update(robot={"kind": "so101", "port": "/dev/pts/9999", "calibration": "twin"},
                         camera={"source": "twin", "rig": None}, perception={"kind": "real", "seg_ckpt": str(snapshot)})
    data["options"].update(reward="classifier", classifier=str(tmp_path), intervene="none")
    (out / "run.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    code, text, err = run(capsys, "hilserl", "status", str(out))
    assert code == 0 and "2 episodes" in text, err
    code, _, err = run(capsys, "hilserl", "plot", str(out), "--out", str(tmp_path / "curve.png"))
    assert code == 0 and (tmp_path / "curve.png").is_file(), err
    code, _, err = run(capsys, "hilserl", "train", "--out", str(out), "--resume")
    assert code == 2 and "/dev/pts/9999" in err, err
