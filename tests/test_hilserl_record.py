"""A session's episode record and its readers (metrics.jsonl, TensorBoard), where a session starts,
and the exploration noise the actor acts with."""

import numpy as np
import torch

from so101_sim2real.hilserl.episode_record import SessionStart, session_seeds
from so101_sim2real.hilserl.exploration import ACTION_LIMIT, noisy_action
from test_hilserl_live import record


def test_the_metrics_line_keeps_its_keys_in_order_and_each_value_in_its_place():
    line = record(success=None, critic_loss=None, actor_loss=None, q_mean=None, takeovers=None,
                  episode_takeovers=None).metrics()
    assert line == {
        "env_steps": 2400, "updates": 930, "episodes": 7, "next_seed": 42, "seed": 41, "success": False,
        "steps": 120, "return": 1.0, "utd": 0.3875, "interventions": 77, "updates_per_s": 4.5, "critic_loss": None,
        "actor_loss": None, "q_mean": None, "buffer": 2300, "buffer_mb": 32.7, "period_s": 0.05,
        "overruns": 3,  # this episode's, as metrics.jsonl has always had them
        "takeovers": None, "task_success": None, "interrupted": False,
    }
    assert list(line) == ["env_steps", "updates", "episodes", "next_seed", "seed", "success", "steps", "return",
                          "utd", "interventions", "updates_per_s", "critic_loss", "actor_loss", "q_mean", "buffer",
                          "buffer_mb", "period_s", "overruns", "takeovers", "task_success", "interrupted"]
    assert record().metrics()["takeovers"] == 1 and record().metrics()["success"] is True


def test_tensorboard_takes_one_point_per_episode_from_the_record(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from so101_sim2real.hilserl.run import Board

    board = Board(tmp_path)
    board.episode(record(success=False, critic_loss=None, actor_loss=None, q_mean=None))  # no update yet
    board.episode(record(episode=8, steps=40, episode_interventions=10, ret=2.5))
    board.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    points = {tag: [(e.step, round(e.value, 6)) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert points == {
        "episode/success": [(7, 0.0), (8, 1.0)], "episode/steps": [(7, 120.0), (8, 40.0)],
        "episode/intervention_rate": [(7, 0.275), (8, 0.25)], "episode/return": [(7, 1.0), (8, 2.5)],
        "rates/success_last_20": [(7, 0.0), (8, 0.5)], "rates/utd": [(7, 0.3875), (8, 0.3875)],
        "buffer/transitions": [(7, 2300.0), (8, 2300.0)], "counters/env_steps": [(7, 2400.0), (8, 2400.0)],
        "counters/updates": [(7, 930.0), (8, 930.0)], "learner/critic_loss": [(8, 0.0123)],
        "learner/q_mean": [(8, 0.456)], "learner/actor_loss": [(8, -0.5)],
    }


def test_a_sessions_random_streams_are_its_own_and_new_on_a_resume():
    first, resumed = session_seeds(0, 0), session_seeds(0, 12)
    assert list(resumed) == [int(s) for s in np.random.SeedSequence([0, 12]).generate_state(3)]
    assert len(set(first) | set(resumed)) == 6
    start = SessionStart()  # a new run's: zeros, and the config's seed for both streams
    assert (start.env_steps, start.updates, start.episodes, start.next_seed) == (0, 0, 0, 0)
    assert (start.explore_seed, start.sample_seed, start.notes) == (None, None, ())


def test_exploration_noise_is_clipped_then_the_action_kept_inside_minus_one_one():
    mean = np.array([0.0, 0.95, -0.95, 0.5], np.float32)
    normal = np.array([1.0, 5.0, -5.0, -0.2])
    action = noisy_action(mean, 0.1, 0.3, normal)
    assert np.allclose(action, [0.1, ACTION_LIMIT, -ACTION_LIMIT, 0.48])  # 5 std clipped to 0.3, then to the edge
    assert np.abs(action).max() < 1.0
    # the same numbers as a tensor, and the gradient straight through the clamp (the learner's use)
    t = torch.tensor(mean, requires_grad=True)
    out = noisy_action(t, 0.1, 0.3, torch.tensor(normal, dtype=torch.float32))
    assert np.allclose(out.detach().numpy(), action)
    out.sum().backward()
    assert torch.equal(t.grad, torch.ones(4))


def test_the_sink_keeps_the_tasks_verdict_beside_the_classifiers():
    """Under a reward classifier the task's own rule is kept per episode, so a session can count the
    classifier's false successes (and the successes it missed) on a twin."""
    from types import SimpleNamespace as NS

    from so101_sim2real.hilserl.actor import BufferSink
    from so101_sim2real.interfaces import StepResult

    buffer = NS(begin_episode=lambda: None, add=lambda step: None, end_episode=lambda: None)
    sink = BufferSink(buffer, NS(last_intervention=False), NS(reward=lambda r: float(r.terminated)))
    obs = NS(state=np.zeros(18, np.float32), perceived=NS(frame=np.zeros((2, 84, 84), np.uint8)),
             joints=NS(timestamp=0.0, position=np.zeros(6)))

    def episode(ticks: list[tuple[bool, bool]]) -> tuple[bool, bool]:
        sink.begin(0, 1)
        for i, (task, classifier) in enumerate(ticks):
            sink.add(obs, np.zeros(4), StepResult(float(classifier), classifier, False, {"task_success": task}),
                     ends=i == len(ticks) - 1)
        sink.end()
        return sink._episode["success"], sink.episode_task_success

    assert episode([(False, False), (False, True)]) == (True, False)  # the classifier's false success
    assert episode([(True, False), (False, False)]) == (False, True)  # a success it missed
    assert episode([(False, False), (True, True)]) == (True, True)
    sink.begin(0, 2)  # no classifier: the task's success is the episode's
    sink.add(obs, np.zeros(4), StepResult(1.0, True, False), ends=True)
    assert sink.episode_task_success


def test_a_classifier_sessions_verdicts_are_counted_against_the_tasks():
    from so101_sim2real.hilserl.curves import judged

    rows = [{"success": True, "task_success": False}, {"success": False, "task_success": True},
            {"success": True, "task_success": True}, {"success": False, "task_success": False},
            {"success": True, "task_success": None},  # an arm's episode: nothing to hold it to
            {"success": False, "task_success": True, "interrupted": True}]  # cut short: not judged to the end
    assert judged(rows) == {"episodes": 4, "false_successes": 1, "missed": 1}
    assert judged([{"success": True}]) is None  # a run from before the task's verdict was kept
