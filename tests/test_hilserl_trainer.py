"""HIL-SERL part 1 on the twin: one process, the Runner as the actor, a learner thread, one buffer."""

import dataclasses

import numpy as np
import pytest
import torch

from so101_sim2real.control.env import sim_env
from so101_sim2real.control.interveners import NoIntervener, ScriptedHelpConfig, ScriptedIntervener
from so101_sim2real.errors import So101Error
from so101_sim2real.hilserl.actor import PolicySlot
from so101_sim2real.hilserl.learner import LearnerConfig
from so101_sim2real.hilserl.rewards import DenseReward, SuccessReward
from so101_sim2real.hilserl.trainer import TrainConfig, Trainer
from so101_sim2real.policy.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # whole runs on the twin, subprocesses: `pytest -m "not slow"` skips them

CFG = TrainConfig(learner=LearnerConfig(batch_size=8, critic_updates_per_actor=1), capacity=2000, warmup_steps=20,
                  publish_every=2, utd=0.5, min_utd=0.0)  # a Trainer takes a resolved config (hilserl/pace.py)


@pytest.fixture
def trainer_factory(snapshot):
    made = []

    def make(intervener=None, rewards=None, cfg=CFG, steps=25, start=None):
        ckpt = load_checkpoint(snapshot)
        ckpt.spec = ckpt.spec.replace("episode.max_steps", steps)
        rig = sim_env(ckpt.spec, with_camera=True)
        helper = intervener(rig) if intervener else NoIntervener()
        trainer = Trainer(rig, ckpt, cfg, helper, rewards or SuccessReward(), start=start)
        made.append(rig)
        return trainer

    yield make
    for rig in made:
        rig.close()


def test_the_actor_fills_the_buffer_while_the_learner_updates_and_publishes(trainer_factory):
    # Between episodes the actor waits for 0.2 updates a step: beside another busy process the
    # learner thread may otherwise get no turn in time (it made one update in two episodes once).
    trainer = trainer_factory(cfg=dataclasses.replace(CFG, min_utd=0.2))
    start = {k: v.clone() for k, v in trainer.pilot.policy.agent.state_dict().items() if k.startswith("actor.")}
    summary = trainer.run(2)
    assert [e.steps for e in summary.episodes] == [25, 25] and not summary.interrupted
    assert trainer.sink.env_steps == 50 and len(trainer.buffer) == 50
    assert trainer.stats.error is None and trainer.stats.updates > 0
    assert trainer.utd <= CFG.utd + 1e-9  # paced: never more updates than the ratio allows
    assert trainer.stats.published > 0 and trainer.pilot.version > 1  # new weights reached the actor
    acting = trainer.pilot.policy.agent.state_dict()
    assert any(not torch.equal(start[k], acting[k]) for k in start)  # the actor moved after the warm-up
    assert not trainer.env.robot.torque_enabled


def test_a_session_starts_where_its_run_stands_and_records_each_episode(trainer_factory):
    from so101_sim2real.hilserl.episode_record import SessionStart

    start = SessionStart(env_steps=40, updates=17, episodes=3, next_seed=9, explore_seed=5, sample_seed=6,
                         period_note="control period 50 ms", notes=("camera: x",), warnings=("w",))
    trainer = trainer_factory(intervener=lambda rig: RecordingHelper(rig.twin), start=start, steps=12)
    assert trainer.start is start
    now = trainer.progress()
    assert (now.env_steps, now.updates, now.utd, now.interventions, now.buffer) == (40, 17, 17 / 40, 0, 0)
    noise = np.random.default_rng(5).standard_normal(3)
    assert np.array_equal(trainer.pilot.rng.standard_normal(3), noise)  # the start's exploration stream
    records = []
    summary = trainer.run(2, on_episode=records.append)
    assert [e.seed for e in summary.episodes] == [9, 10]  # the seeds go on from the start's
    assert [(r.episode, r.seed, r.next_seed, r.steps) for r in records] == [(4, 9, 10, 12), (5, 10, 11, 12)]
    assert [r.env_steps for r in records] == [52, 64]
    assert [r.episode_interventions for r in records] == [10, 10]  # the helper's first ten steps, each episode
    assert [r.interventions for r in records] == [10, 20]  # the session's count so far
    assert all(r.updates >= 17 and r.buffer == r.env_steps - 40 for r in records)
    assert records[-1].period_s == trainer.env.period_s and records[-1].control in ("policy", "scripted expert")
    assert trainer.pilot.episode == 4  # the intervener counted the run's episodes, not the session's


def test_between_episodes_the_actor_waits_for_the_learner_to_reach_min_utd(trainer_factory):
    import dataclasses

    trainer = trainer_factory(cfg=dataclasses.replace(CFG, utd=1.0, min_utd=0.8), steps=12)
    seen = []
    trainer.run(2, on_episode=lambda e: seen.append((trainer.stats.updates, trainer.sink.env_steps)))
    assert [steps for _, steps in seen] == [12, 24]
    assert all(updates >= 0.8 * steps for updates, steps in seen)  # caught up before the next episode began


def test_before_a_batch_of_steps_is_stored_the_actor_does_not_wait(trainer_factory):
    import time

    # the learner cannot start before the buffer holds a batch's worth of steps: waiting for it would only stall
    trainer = trainer_factory(cfg=dataclasses.replace(CFG, learner=dataclasses.replace(CFG.learner, batch_size=64),
                                                      min_utd=0.5), steps=12)
    started = time.perf_counter()
    trainer.run(1)
    assert trainer.stats.updates == 0 and time.perf_counter() - started < 20  # the stall detector waits 30 s


def test_the_catch_up_counts_this_sessions_steps_only(trainer_factory):
    """A resumed run that learned less before (another machine, min_utd 0 then) is not held for
    the difference: 0.5 x 5,000 earlier steps would be 2,500 updates before the next episode."""
    import time

    from so101_sim2real.hilserl.episode_record import SessionStart

    trainer = trainer_factory(cfg=dataclasses.replace(CFG, utd=1.0, min_utd=0.5), steps=12,
                              start=SessionStart(env_steps=5000, updates=0))
    started = time.perf_counter()
    trainer.run(1)
    assert trainer.stats.updates >= 0.5 * 12  # this session's target was met
    assert time.perf_counter() - started < 60 and trainer.stats.updates < 1000


class RecordingHelper(ScriptedIntervener):
    """The scripted helper, remembering what it made the arm do."""

    def __init__(self, task):
        super().__init__(task, ScriptedHelpConfig(start_prob=1.0, prob_decay=1.0, max_steps=10))
        self.executed = []

    def act(self, obs, policy_action):
        action = super().act(obs, policy_action)
        if action is not None:
            self.executed.append(np.asarray(action, dtype=np.float32))
        return action


def test_scripted_interventions_are_stored_as_executed_and_go_to_the_demo_store(trainer_factory):
    trainer = trainer_factory(intervener=lambda rig: RecordingHelper(rig.twin))
    trainer.run(1)
    helper = trainer.pilot.intervener
    assert trainer.sink.interventions == 10  # from the first step until it lets go
    online = trainer.buffer.online
    flags = online.intervention[:online.written]
    assert flags[:10].all() and not flags[10:].any()
    assert np.array_equal(online.action[:10], np.stack(helper.executed))  # the helper's actions, not the policy's
    assert trainer.buffer.demos.has_transitions()


def test_the_warm_up_keeps_the_actor_still(trainer_factory):
    cfg = TrainConfig(learner=LearnerConfig(batch_size=8, critic_updates_per_actor=1), capacity=2000,
                      warmup_steps=10_000, publish_every=1, utd=1.0, min_utd=0.1)  # the learner gets its turn
    trainer = trainer_factory(cfg=cfg, rewards=DenseReward())
    start = {k: v.clone() for k, v in trainer.learner.agent.state_dict().items() if k.startswith("actor.")}
    trainer.run(1)
    assert trainer.stats.updates > 0 and trainer.stats.last.actor_loss is None
    now = trainer.learner.agent.state_dict()
    assert all(torch.equal(start[k], now[k]) for k in start)


def test_a_learner_failure_stops_the_run_with_its_cause(trainer_factory):
    trainer = trainer_factory()

    def broken(*args, **kwargs):
        raise FloatingPointError("loss is NaN")

    trainer.learner.update = broken
    with pytest.raises(So101Error, match="the learner stopped: loss is NaN"):
        trainer.run(3)
    assert not trainer.env.robot.torque_enabled


def test_the_slot_refuses_an_actor_without_its_encoder():
    slot = PolicySlot()
    with pytest.raises(ValueError, match="together"):
        slot.publish({"actor.head.out.weight": torch.zeros(1)})
    assert slot.newer_than(0) is None


def test_the_learner_runs_in_the_os_idle_class_and_the_actor_does_not(trainer_factory):
    """The actor's period holds because the OS serves the learner only when the actor wants no
    core (docs/actor_period.md); the classes as the OS sees them, mid-run."""
    import sys
    import threading

    from so101_sim2real.scheduling import process_threads

    if not sys.platform.startswith("linux"):
        pytest.skip("per-thread scheduling classes: Linux")
    trainer = trainer_factory(steps=12)
    seen = {}

    def look(_record):
        ids = {t.name: t.native_id for t in threading.enumerate()}
        classes = {t.tid: t.policy for t in process_threads()}
        seen.update(learner=classes[ids["hilserl-learner"]], actor=classes[threading.get_native_id()])

    summary = trainer.run(1, on_episode=look)
    assert seen == {"learner": "idle", "actor": "normal"}
    assert trainer.stats.priority == "SCHED_IDLE"
    assert summary.tick["count"] == 11  # every tick but the last, which has no next observation
