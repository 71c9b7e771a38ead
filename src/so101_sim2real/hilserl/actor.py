"""The actor's side of HIL-SERL: the exploring pilot, the weights it acts with, the buffer feed.

The actor is the ordinary :class:`~so101_sim2real.control.runner.Runner` loop; what HIL-SERL
adds plugs into it:

- :class:`PolicySlot`: the learner publishes the encoder and the actor together, as one
  dict swapped under a lock, so the pilot can never act with a new actor on a stale
  encoder (one of the user's bugs).
- :class:`LearningPilot`: the policy's mean plus fixed, clipped Gaussian exploration
  noise, then the intervener's override if it takes over; it picks up newly published
  weights between ticks.
- :class:`BufferSink`: every tick into the replay buffer with the action that was
  executed, the state the runner built for the tick, the reward from the run's
  :class:`RewardSource`, and the intervention flag.
"""

from __future__ import annotations

import threading
from typing import TypedDict

import numpy as np
import torch

from so101_sim2real.control.interveners import Intervener, NoIntervener
from so101_sim2real.control.pilots import Observation, PolicyPilot
from so101_sim2real.control.recording import Recorder
from so101_sim2real.hilserl.exploration import noisy_action
from so101_sim2real.hilserl.replay import ReplayBuffer, Step
from so101_sim2real.hilserl.rewards import RewardSource
from so101_sim2real.interfaces import StepResult
from so101_sim2real.policy.runtime import Policy
from so101_sim2real.sim.task import LiftCubeTask

# The episode in progress, as BufferSink counts it ("return" is the learner's return).
_Tally = TypedDict("_Tally", {"steps": int, "return": float, "success": bool, "ended": bool, "interventions": int,
                              "task_success": bool})


class PolicySlot:
    """The newest published policy weights (encoder + actor) and their version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._weights: dict[str, torch.Tensor] | None = None
        self.version = 0

    def publish(self, weights: dict[str, torch.Tensor]) -> int:
        if not any(k.startswith("encoder.") for k in weights) or not any(k.startswith("actor.") for k in weights):
            raise ValueError("publish the encoder and the actor together")
        with self._lock:
            self._weights, self.version = weights, self.version + 1
            return self.version

    def newer_than(self, version: int) -> tuple[int, dict[str, torch.Tensor]] | None:
        with self._lock:
            if self.version <= version or self._weights is None:
                return None
            return self.version, self._weights


class LearningPilot(PolicyPilot):
    """The policy acting with exploration noise and an intervener, on the newest published weights.
    ``first_episode``: the run's episodes before this session (the intervener's episode count)."""

    def __init__(self, policy: Policy, slot: PolicySlot, intervener: Intervener | None = None, std: float = 0.1,
                 std_clip: float = 0.3, seed: int = 0, name: str = "hilserl", first_episode: int = 0):
        super().__init__(policy, name)
        self.slot, self.intervener = slot, intervener or NoIntervener()
        self.std, self.std_clip = std, std_clip
        self.explore = True
        self.version = 0
        self.episode = first_episode - 1
        self.last_intervention = False
        self.rng = np.random.default_rng(seed)

    def refresh(self) -> bool:
        """Load newer published weights, if any; True when it did."""
        newer = self.slot.newer_than(self.version)
        if newer is None:
            return False
        self.version, weights = newer
        missing, unexpected = self.policy.agent.load_state_dict(weights, strict=False)
        if unexpected or any(k.startswith(("encoder.", "actor.")) for k in missing):
            raise RuntimeError(f"published weights do not fit the policy: missing {missing}, unexpected {unexpected}")
        return True

    def reset(self, obs: Observation) -> None:
        super().reset(obs)
        self.episode += 1
        self.intervener.reset(self.episode)
        self.refresh()

    def act(self, obs: Observation) -> np.ndarray:
        self.refresh()
        action = super().act(obs)
        if self.explore:
            action = noisy_action(action, self.std, self.std_clip, self.rng.standard_normal(action.shape))
        override = self.intervener.act(obs, action)
        self.last_intervention = override is not None
        return np.asarray(action if override is None else np.clip(override, -1.0, 1.0), dtype=np.float32)

    @property
    def control(self) -> str:
        """Who moved the arm on the last tick: the policy, a person on the leader, or an expert."""
        if not self.last_intervention:
            return "policy"
        return "person (leader arm)" if self.intervener.name == "leader" else f"{self.intervener.name} expert"


class BufferSink:
    """Feeds every tick of the actor's loop into the replay buffer (a Runner ``TransitionSink``),
    and, given a recorder, into the run's episode files (written when each episode ends).
    ``env_steps``: the run's stored env steps before this session."""

    def __init__(self, buffer: ReplayBuffer, pilot: LearningPilot, rewards: RewardSource,
                 recorder: Recorder | None = None, env_steps: int = 0, twin: LiftCubeTask | None = None):
        self.buffer, self.pilot, self.rewards = buffer, pilot, rewards
        self.recorder = recorder
        # a twin's cube goes into the episode files, as --record keeps it: the twin's rule can then label
        # them (reward label RUN/episodes --twin), and compare-sim poses the cube where it was
        self.twin = twin
        self.env_steps, self.interventions = env_steps, 0
        self.discarded_steps = 0  # ticks of thrown-away episodes: not in the buffer, not in env_steps
        self._episode: _Tally = {"steps": 0, "return": 0.0, "success": False, "ended": False, "interventions": 0,
                                 "task_success": False}

    def begin(self, index: int, seed: int | None) -> None:
        self.buffer.begin_episode()
        self._episode = {"steps": 0, "return": 0.0, "success": False, "ended": False, "interventions": 0,
                         "task_success": False}
        if self.recorder:
            self.recorder.begin(self.recorder.next_index, seed)

    def add(self, obs: Observation, action: np.ndarray, result: StepResult, ends: bool) -> None:
        if obs.state is None:
            raise ValueError("the runner built no state for this tick; the replay buffer stores one per step")
        assert obs.perceived is not None  # the learning pilot sees pixels: the runner perceives every tick
        step = Step(obs.perceived.frame, obs.state, np.asarray(action, dtype=np.float32),
                    self.rewards.reward(result), terminated=result.terminated,
                    truncated=ends and not result.terminated, is_intervention=self.pilot.last_intervention)
        self.buffer.add(step)
        self.env_steps += 1
        self.interventions += step.is_intervention
        ep = self._episode
        ep["steps"], ep["return"] = ep["steps"] + 1, ep["return"] + step.reward
        ep["interventions"] += step.is_intervention
        ep["success"], ep["ended"] = bool(result.terminated), ends
        # the task's own rule, where a reward classifier ends the episode instead (any tick it held)
        ep["task_success"] = ep["task_success"] or bool(result.info.get("task_success", result.terminated))
        if self.recorder:
            self.recorder.add(time=obs.joints.timestamp, joint_pos=obs.joints.position, obs=step.frame,
                              state=step.state, action=step.action, reward=result.reward,
                              learner_reward=step.reward, terminated=step.terminated, ends=ends,
                              is_intervention=step.is_intervention,
                              cube_pos=None if self.twin is None else self.twin.cube_pos(),
                              cube_quat=None if self.twin is None else self.twin.cube_quat())

    @property
    def episode_return(self) -> float:
        """The learner's return of the episode in progress or just ended: the one the run reports."""
        return float(self._episode["return"])

    @property
    def episode_task_success(self) -> bool:
        """Whether the task's rule saw success in the episode, whatever ended it (a twin's only)."""
        return bool(self._episode["task_success"])

    @property
    def episode_interventions(self) -> int:
        """Steps under intervention in the episode in progress or just ended."""
        return int(self._episode["interventions"])

    def end(self) -> None:
        self.buffer.end_episode()
        if self.recorder:
            ep = self._episode
            self.recorder.end(ep["steps"], ep["success"], ep["return"], interrupted=not ep["ended"])

    def discard(self) -> None:
        """The episode in progress never happened: out of the buffer, the counters and the recording."""
        self.buffer.discard_episode()
        ep = self._episode
        self.env_steps -= ep["steps"]
        self.interventions -= ep["interventions"]
        self.discarded_steps += ep["steps"]
        if self.recorder:
            self.recorder.discard()
