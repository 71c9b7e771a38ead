"""`so101 hilserl train/status` end to end on the twin: run folder, resume, the policy it writes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from fixtures import run_cli as run

FAST = ["--episodes", "2", "--max-steps", "12", "--set", "learner.batch_size=8", "--set", "warmup_steps=10",
        "--set", "publish_every=2", "--set", "utd=0.5"]


def test_train_writes_a_run_that_status_infer_and_resume_accept(capsys, snapshot, tmp_path):
    out = tmp_path / "run"
    code, text, err = run(capsys, "hilserl", "train", "--ckpt", str(snapshot), "--out", str(out), *FAST)
    assert code == 0, err
    assert "episode 2" in text and "UTD" in text
    counters = json.loads((out / "counters.json").read_text())
    assert counters["episodes"] == 2 and counters["env_steps"] == 24 and counters["updates"] > 0
    episodes = json.loads((out / "episodes" / "recording.json").read_text())["episodes"]
    assert [e["steps"] for e in episodes] == [12, 12]

    code, text, _ = run(capsys, "hilserl", "status", str(out), "--json")
    info = json.loads(text)
    assert code == 0 and info["counters"] == counters and info["episodes_recorded"] == 2
    assert 0.0 <= info["intervention_rate_last_20"] <= 1.0 and info["success_rate_last_20"] is not None
    assert info["last"]["episodes"] == 2 and info["last"]["buffer"] == 24
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["episodes"] for line in lines] == [1, 2]

    code, text, _ = run(capsys, "hilserl", "plot", str(out), "--out", str(tmp_path / "curve.png"))
    import cv2

    image = cv2.imread(str(tmp_path / "curve.png"))
    assert code == 0 and image is not None and image.shape[1] > 400
    code, _, err = run(capsys, "hilserl", "plot", str(tmp_path), "--out", str(tmp_path / "c.png"))
    assert code == 2 and "not a HIL-SERL run folder" in err

    code, text, _ = run(capsys, "infer", "--ckpt", str(out / "policy"), "--episodes", "1", "--max-steps", "2",
                        "--json")
    assert code == 0 and json.loads(text.strip().splitlines()[-1])["episodes"] == 1

    code, text, err = run(capsys, "hilserl", "train", "--out", str(out), "--resume", "--episodes", "1",
                          "--max-steps", "12", "--set", "learner.actor_lr=2e-5")
    assert code == 0, err
    assert "setting changed on resume: learner.actor_lr: 1e-05 -> 2e-05" in text
    after = json.loads((out / "counters.json").read_text())
    assert after["episodes"] == 3 and after["env_steps"] == 36 and after["next_seed"] == 3
    assert after["updates"] >= counters["updates"]


@pytest.mark.parametrize(("args", "expected"), [
    (["--out", "{file}", "--ckpt", "{ckpt}"], "not a folder"),
    (["--out", "{tmp}", "--resume"], "not a HIL-SERL run folder"),
    (["--out", "{tmp}/r"], "needs --ckpt"),
    (["--out", "{tmp}/r", "--ckpt", "{ckpt}", "--set", "learner.actr_lr=1"], "did you mean 'actor_lr'"),
    (["--out", "{tmp}/r", "--ckpt", "{ckpt}", "--set", "utd=fast"], "expected a number"),
    (["--out", "{tmp}/r", "--ckpt", "{ckpt}", "--intervene", "human"], "scripted or none"),
    (["--out", "{tmp}/r", "--ckpt", "{tmp}/missing.pt"], "no such file"),
    (["--out", "{tmp}/r", "--ckpt", "{ckpt}", "--episodes", "0"], "at least 1"),
])
def test_bad_input_is_one_line_and_changes_nothing(capsys, snapshot, tmp_path, args, expected):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    args = [a.format(file=afile, ckpt=snapshot, tmp=tmp_path) for a in args]
    code, _, err = run(capsys, "hilserl", "train", *args)
    assert code == 2 and expected in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert afile.read_text() == "keep"


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
    code, _, err = run(capsys, "infer", "--ckpt", "scripted", "--episodes", "2", "--record", str(demos))
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
    assert code == 2 and "not a recording" in err
