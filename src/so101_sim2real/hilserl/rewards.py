"""What the learner is rewarded for, from each tick's :class:`StepResult`.

On the twin: the task's success (sparse: 1 on the successful, terminal tick, else 0),
or its dense v19 reward (what the sim policy was trained on). Part 2 adds the reward
classifier on the wrist image. Either way the episode ends where the task says, and
an episode's end is terminal for the learner (time limits included).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from so101_sim2real.control.pilots import Observation
from so101_sim2real.errors import So101Error
from so101_sim2real.interfaces import StepResult

if TYPE_CHECKING:
    from so101_sim2real.reward.classifier import SuccessJudge


class RewardSource(Protocol):
    name: str

    def reward(self, result: StepResult) -> float: ...


class SuccessReward:
    """1 on the tick the task succeeds (which ends the episode), 0 otherwise."""

    name = "success"

    def reward(self, result: StepResult) -> float:
        return 1.0 if result.terminated else 0.0


class DenseReward:
    """The task's own dense reward (the user's v19 on the twin)."""

    name = "dense"

    def reward(self, result: StepResult) -> float:
        return float(result.reward)


REWARDS: dict[str, Callable[[], RewardSource]] = {"success": SuccessReward, "dense": DenseReward}


class ClassifierReward:
    """Success judged by the reward classifier on the wrist view (a real arm has no simulator
    to say it): 1 on the tick the judge calls success, which ends the episode, 0 otherwise.

    The loop shows the judge each tick's frame through :meth:`judge`, which returns the
    tick's result with ``terminated`` set by the classifier (the task's own verdict, where
    there is one, stays in ``info["task_success"]``); :meth:`reward` reads that result.
    ``judge`` is a :class:`~so101_sim2real.reward.classifier.SuccessJudge`.
    """

    name = "classifier"

    def __init__(self, judge: SuccessJudge):
        self.success_judge = judge
        self.last_p: float | None = None  # the newest frame's probability, for the live view

    def reset(self) -> None:
        """A new episode."""
        self.success_judge.reset()

    def judge(self, obs: Observation, result: StepResult, step: int) -> StepResult:
        """The runner's judge hook: the tick's policy frame decides success."""
        if obs.perceived is None:
            raise So101Error("the reward classifier needs the camera's frames; this run does not perceive")
        p, success = self.success_judge.update(obs.perceived.frame, step)
        self.last_p = p
        info = {**result.info, "task_success": result.info.get("task_success", result.terminated), "classifier_p": p,
                "classifier_success": success}
        return StepResult(result.reward, success, result.truncated, info)

    def reward(self, result: StepResult) -> float:
        return 1.0 if result.info.get("classifier_success") else 0.0
