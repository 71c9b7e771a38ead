"""What the learner is rewarded for, from each tick's :class:`StepResult`.

On the twin: the task's success (sparse: 1 on the successful, terminal tick, else 0),
or its dense v19 reward (what the sim policy was trained on). Part 2 adds the reward
classifier on the wrist image. Either way the episode ends where the task says, and
an episode's end is terminal for the learner (time limits included).
"""

from __future__ import annotations

from typing import Protocol

from so101_sim2real.interfaces import StepResult


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


REWARDS = {"success": SuccessReward, "dense": DenseReward}
