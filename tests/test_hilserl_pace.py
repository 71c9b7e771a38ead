"""The learner's pace chosen at start (hilserl/pace.py): the rule, what a person sets, where it is kept,
and a session with no tuning settings that learns on this machine."""

import dataclasses
import json

import pytest
import torch
import yaml

from fixtures import run_cli
from so101_sim2real.errors import So101Error
from so101_sim2real.hilserl import pace
from so101_sim2real.hilserl.learner import LearnerConfig
from so101_sim2real.hilserl.options import apply_sets, config_from_dict
from so101_sim2real.hilserl.pace import PaceChoice, choose, resolve
from so101_sim2real.hilserl.trainer import TrainConfig, Trainer

# a 2-core CPU's full update (seconds per update at each batch) and a GPU's
CPU = {32: 0.03, 64: 0.06, 128: 0.12, 256: 1.3}
GPU = {32: 0.002, 64: 0.003, 128: 0.004, 256: 0.006}


# ---------------------------------------------------------------------------- the rule


def test_a_slow_cpu_gets_the_largest_batch_whose_half_update_per_step_fits_the_period():
    batch, utd, min_utd, reason = choose(CPU, period_s=0.05, frozen=False, device="cpu")
    # UTD 0.5: 64 needs 30 ms a step within 50 ms; 128 needs 60 ms
    assert (batch, utd, min_utd) == (64, 1.0, 0.5)
    assert "UTD target 0.5" in reason and "within the 50 ms control period" in reason


def test_the_period_decides_the_batch():
    assert choose(CPU, period_s=0.02, frozen=False, device="cpu")[0] == 32
    assert choose(CPU, period_s=0.1, frozen=False, device="cpu")[0] == 128
    assert choose(CPU, period_s=1.0, frozen=False, device="cpu")[0] == 256


def test_a_frozen_encoder_aims_at_one_update_per_step():
    batch, utd, min_utd, reason = choose(CPU, period_s=0.05, frozen=True, device="cpu")
    assert (batch, utd, min_utd) == (32, 2.0, 1.0)  # UTD 1: 32 needs 30 ms, 64 needs 60 ms
    assert "a frozen encoder" in reason


def test_a_gpu_gets_the_recipes_batch_at_one_update_per_step():
    assert choose(GPU, period_s=0.02, frozen=False, device="cuda")[:3] == (256, 2.0, 1.0)
    assert choose(GPU, period_s=0.02, frozen=False, device="cuda:0")[:3] == (256, 2.0, 1.0)


def test_when_nothing_fits_the_smallest_batch_and_the_session_waits():
    batch, utd, min_utd, reason = choose({32: 0.23, 64: 0.43}, period_s=0.02, frozen=False, device="cpu")
    assert (batch, utd, min_utd) == (32, 1.0, 0.5)
    assert "waits between episodes until UTD 0.5" in reason and "slower" in reason


# ---------------------------------------------------------------------------- resolve: set values are kept


@pytest.fixture
def timed(monkeypatch):
    """seconds_per_update replaced: each call recorded (batch, torch threads), 10 ms per 32 rows."""
    calls = []

    def fake(agent, cfg, device="cpu", batch_size=None, updates=2):
        calls.append((batch_size, torch.get_num_threads()))
        return 0.01 * batch_size / 32

    monkeypatch.setattr(pace, "seconds_per_update", fake)
    # measured every time here: remembering is tested on its own below
    monkeypatch.setattr(pace, "remembered_measure", lambda agent, cfg, device, threads, candidates: (
        pace.measure(agent, cfg, device, threads, candidates), False))
    return calls


def test_everything_auto_is_measured_smallest_first_on_the_learners_threads(timed):
    before = torch.get_num_threads()
    cfg, choice = resolve(TrainConfig(), agent=None, device="cpu", period_s=0.015, threads=1)
    assert timed == [(64, 1), (128, 1), (256, 1)] and torch.get_num_threads() == before
    assert (cfg.learner.batch_size, cfg.utd, cfg.min_utd) == (64, 1.0, 0.5)  # UTD 0.5: 64 needs 10 ms, 128 20 ms
    assert choice.chosen == ("batch_size", "utd", "min_utd") and choice.seconds_per_update[256] == 0.08
    assert choice.threads == 1 and choice.period_s == 0.015


def test_a_set_batch_is_kept_and_the_others_chosen(timed):
    cfg = apply_sets(TrainConfig(), ["learner.batch_size=256"])
    resolved, choice = resolve(cfg, agent=None, device="cpu", period_s=0.02, threads=1)
    assert [batch for batch, _ in timed] == [256]  # only the set batch is measured
    assert (resolved.learner.batch_size, resolved.utd, resolved.min_utd) == (256, 1.0, 0.5)
    assert choice.chosen == ("utd", "min_utd")
    assert choice.lines()[0].startswith("learner pace: batch 256 (set), min_utd 0.5, utd cap 1;")


def test_all_three_set_measures_nothing(timed):
    cfg = TrainConfig(learner=LearnerConfig(batch_size=64), utd=1.0, min_utd=0.25)
    assert resolve(cfg, agent=None, device="cpu", period_s=0.02, threads=1) == (cfg, None)
    assert timed == []


def test_min_utd_never_waits_for_more_than_a_set_cap_allows(timed):
    cfg = TrainConfig(learner=LearnerConfig(batch_size=8), utd=0.2)
    resolved, choice = resolve(cfg, agent=None, device="cpu", period_s=0.02, threads=1)
    assert (resolved.utd, resolved.min_utd) == (0.2, 0.2) and "set utd cap" in choice.reason


def test_the_cap_makes_room_for_a_set_min_utd(timed):
    cfg = TrainConfig(learner=LearnerConfig(batch_size=8), min_utd=3.0)
    resolved, _ = resolve(cfg, agent=None, device="cpu", period_s=0.02, threads=1)
    assert (resolved.utd, resolved.min_utd) == (3.0, 3.0)


def test_resolve_keeps_other_settings(timed):
    cfg = dataclasses.replace(TrainConfig(), warmup_steps=7, learner=LearnerConfig(actor_lr=1e-3))
    resolved, _ = resolve(cfg, agent=None, device="cpu", period_s=0.02, threads=2)
    assert resolved.warmup_steps == 7 and resolved.learner.actor_lr == 1e-3 and timed[0] == (64, 2)


def test_a_measurement_is_remembered_per_machine_and_setting(monkeypatch, tmp_path):
    """A second start with the same network, settings and machine reads the first's measurement;
    anything that changes an update's time (here the number format, the threads) measures again."""
    import types

    calls = []
    monkeypatch.setattr(pace, "seconds_per_update",
                        lambda agent, cfg, device="cpu", batch_size=None, updates=1: calls.append(batch_size) or 0.01)
    monkeypatch.setattr(pace, "pace_dir", lambda: tmp_path / "pace")
    agent = types.SimpleNamespace(arch="the user's shapes")
    first, remembered = pace.remembered_measure(agent, LearnerConfig(), "cpu", 1, (64,))
    assert not remembered and calls == [64]
    again, remembered = pace.remembered_measure(agent, LearnerConfig(), "cpu", 1, (64,))
    assert remembered and again == first and calls == [64]
    pace.remembered_measure(agent, LearnerConfig(precision="bf16"), "cpu", 1, (64,))
    pace.remembered_measure(agent, LearnerConfig(), "cpu", 2, (64,))
    assert calls == [64, 64, 64]
    choice = PaceChoice(64, 1.0, 0.5, first, "why", ("batch_size",), "cpu", 1, 0.1, remembered=True)
    assert "measured at an earlier start on this machine" in choice.lines()[0]
    assert PaceChoice.from_dict(choice.to_dict()) == choice


def test_measuring_stops_before_the_budget_is_spent(timed):
    measured = pace.measure(None, LearnerConfig(), "cpu", 1, budget_s=0.15)
    assert sorted(measured) == [64, 128]  # 128's estimate 3 x 40 ms fits 0.15 s; 256's 240 ms more does not


def test_a_trainer_refuses_a_config_left_to_be_chosen():
    with pytest.raises(ValueError, match="learner.batch_size, utd, min_utd to be chosen"):
        Trainer(None, None, TrainConfig(), None, None)


# ---------------------------------------------------------------------------- the settings as read


@pytest.mark.parametrize(("sets", "expected"), [
    (["learner.batch_size=64"], (64, 1.0, 0.0)),
    (["learner.batch_size=auto", "utd=null", "min_utd=0.25"], (None, None, 0.25)),
    (["utd=2", "min_utd=auto"], (32, 2.0, None)),
    (["learner.batch_size=~", "utd=1e-1"], (None, 0.1, 0.0)),
])
def test_auto_or_a_number(sets, expected):
    cfg = apply_sets(TrainConfig(learner=LearnerConfig(batch_size=32), utd=1.0, min_utd=0.0), sets)
    assert (cfg.learner.batch_size, cfg.utd, cfg.min_utd) == expected
    assert isinstance(cfg.utd, (float, type(None))) and isinstance(cfg.learner.batch_size, (int, type(None)))


@pytest.mark.parametrize(("sets", "message"), [
    (["learner.batch_size=fast"], "learner.batch_size: expected a number or auto, got 'fast'"),
    (["learner.batch_size=6.5"], "learner.batch_size: expected a whole number"),
    (["learner.batch_size=0"], "must be at least 1"),
    (["utd=autoo"], "utd: expected a number or auto, got 'autoo'"),
    (["min_utd=-1"], "min_utd: expected a number >= 0"),
    (["min_utd=[1]"], "min_utd: expected a number or auto"),
    (["utd=0.5", "min_utd=0.8"], "min_utd 0.8 is above the utd cap 0.5"),
    (["learner.precision=fp8"], "learner.precision: expected one of fp32, bf16, fp16, got 'fp8'"),
    (["learner.objective=ppo"], "learner.objective: expected one of drqv2, bc"),
])
def test_a_bad_value_is_one_line(sets, message):
    with pytest.raises(So101Error, match=message) as caught:
        apply_sets(TrainConfig(), sets)
    assert "\n" not in str(caught.value)


def test_a_config_file_reads_auto():
    cfg = config_from_dict(yaml.safe_load("learner: {batch_size: auto}\nutd: 1.5\nmin_utd: null\n"))
    assert (cfg.learner.batch_size, cfg.utd, cfg.min_utd) == (None, 1.5, None)


# ---------------------------------------------------------------------------- what is kept and said


def test_a_choice_round_trips_through_run_yaml_and_json():
    choice = PaceChoice(32, 1.0, 0.5, {32: 0.18, 64: 0.32}, "why", ("batch_size", "min_utd"), "cpu", 1, 0.02)
    assert PaceChoice.from_dict(yaml.safe_load(yaml.safe_dump(choice.to_dict()))) == choice
    assert PaceChoice.from_dict(json.loads(json.dumps(choice.to_dict()))) == choice  # status --json: str keys
    first, why = choice.lines()
    assert first == ("learner pace: batch 32, min_utd 0.5, utd cap 1 (set); an update takes 0.18 s at batch 32, "
                     "0.32 s at batch 64 on 1 CPU thread")
    assert why == "learner pace: why"
    with pytest.raises(So101Error, match="run.yaml: pace: not a pace choice"):
        PaceChoice.from_dict({"batch_size": "many"}, "run.yaml: pace")


def test_a_run_folder_keeps_the_latest_choice_and_an_old_one_without_opens(tmp_path, snapshot):
    from so101_sim2real.control.description import describe
    from so101_sim2real.hilserl.options import RunOptions
    from so101_sim2real.hilserl.run_folder import RunFolder

    run = RunFolder.create(tmp_path / "run", RunOptions(describe(ckpt=str(snapshot))), TrainConfig())
    assert RunFolder.open(run.path).pace is None and "pace" not in yaml.safe_load((run.path / "run.yaml").read_text())
    run.pace = PaceChoice(32, 1.0, 0.5, {32: 0.18}, "why", ("batch_size", "utd", "min_utd"))
    run.write_config()
    again = RunFolder.open(run.path)
    assert again.pace == run.pace and again.cfg == TrainConfig()  # the config keeps auto


def test_a_number_format_the_machine_would_emulate_is_refused_before_the_run_folder_exists(capsys, snapshot,
                                                                                          tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "hilserl", "train", "--ckpt", str(snapshot), "--out", str(out),
                           "--set", "learner.precision=fp16")
    assert code != 0 and "fp16 needs a GPU" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # refused before the folder (and before any arm) was touched


@pytest.mark.slow
def test_demos_of_another_shape_are_refused_and_leave_no_run_folder(capsys, rgb_snapshot, tmp_path):
    """Refused after the env is built (the demos are read then): still no folder behind."""
    demos, out = tmp_path / "demos", tmp_path / "run"
    code, _, err = run_cli(capsys, "infer", "--ckpt", "scripted", "--record", str(demos), "--episodes", "1",
                           "--max-steps", "5", "--no-record-rgb")
    assert code == 0, err
    code, _, err = run_cli(capsys, "hilserl", "train", "--ckpt", str(rgb_snapshot), "--out", str(out),
                           "--demos", str(demos), "--episodes", "1")
    assert code != 0 and "do not fit the policy's (3, 84, 84)" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# ---------------------------------------------------------------------------- a session that learns


@pytest.mark.slow
def test_a_session_with_no_tuning_settings_learns(capsys, snapshot, tmp_path, monkeypatch):
    """The issue's case: 'so101 hilserl train' with no tuning settings reached UTD ~0.01 on this
    machine. The measurement is real; the candidates stop at 64 so that two short episodes hold a
    batch's worth of steps (the catch-up starts there) on a faster machine too."""
    monkeypatch.setattr(pace, "CANDIDATES", (64,))
    out = tmp_path / "run"
    code, text, err = run_cli(capsys, "hilserl", "train", "--ckpt", str(snapshot), "--out", str(out),
                              "--episodes", "2", "--max-steps", "40")
    assert code == 0, err
    kept = yaml.safe_load((out / "run.yaml").read_text())
    chosen = kept["pace"]
    assert chosen["chosen"] == ["batch_size", "utd", "min_utd"] and 64 in chosen["seconds_per_update"]
    assert chosen["min_utd"] == 0.5 and chosen["utd"] == 1.0 and chosen["batch_size"] == 64
    assert kept["config"]["learner"]["batch_size"] is None and kept["config"]["min_utd"] is None  # still auto
    assert f"learner pace: batch {chosen['batch_size']}, min_utd 0.5, utd cap 1;" in text
    counters = json.loads((out / "counters.json").read_text())
    assert counters["env_steps"] == 80 and counters["updates"] / counters["env_steps"] >= 0.5, counters
    code, text, _ = run_cli(capsys, "hilserl", "status", str(out))
    assert code == 0 and "learner pace: UTD target 0.5 (the full update on a CPU)" in text

