"""Who may take over from the policy during HIL-SERL: nobody, or (on the twin) the scripted expert.

An intervener sees each tick's observation and the policy's action and returns the
action to execute instead, or None. The replay buffer stores what was executed and
flags it as an intervention. Part 2 puts the leader arm and keys behind the same
interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from so101_sim2real.control.pilots import Observation

if TYPE_CHECKING:
    from so101_sim2real.sim.task import LiftCubeTask


class Intervener(Protocol):
    name: str

    def reset(self, episode: int) -> None:
        """A new episode begins (``episode`` counts from 0 over the whole run)."""

    def act(self, obs: Observation, policy_action: np.ndarray) -> np.ndarray | None:
        """The action to execute instead of the policy's, or None to let the policy act."""


class NoIntervener:
    """The policy always acts."""

    name = "none"

    def reset(self, episode: int) -> None:
        pass

    def act(self, obs: Observation, policy_action: np.ndarray) -> np.ndarray | None:
        return None


@dataclass(frozen=True)
class ScriptedHelpConfig:
    """When the scripted helper takes over, and for how long."""

    stall_steps: int = 15  # no progress toward the cube for this many steps: take over
    progress_m: float = 0.005  # what counts as progress: the TCP this much closer than its best so far
    start_prob: float = 0.5  # chance of helping from the first step, in the first episode ...
    prob_decay: float = 0.9  # ... times this per episode
    max_steps: int = 60  # release after this many steps in control
    release_height_m: float = 0.05  # or once the cube is held this high


class ScriptedIntervener:
    """The twin's stand-in for a person at the leader arm: the scripted expert takes over
    when the policy stalls (or, with a probability that decays over the run, from the
    start), and lets go once the cube is lifted or after ``max_steps``."""

    name = "scripted"

    def __init__(self, task: LiftCubeTask, cfg: ScriptedHelpConfig | None = None, seed: int = 0):
        from so101_sim2real.sim.scripted import ScriptedExpert

        self.task, self.cfg = task, cfg or ScriptedHelpConfig()
        self.expert = ScriptedExpert(task)
        self.rng = np.random.default_rng(seed)
        self.reset(0)

    def reset(self, episode: int) -> None:
        cfg = self.cfg
        self.best, self.since_progress, self.used = np.inf, 0, False
        self.in_control = self.rng.random() < cfg.start_prob * cfg.prob_decay**episode
        self.control_steps = 0
        if self.in_control:
            self.expert.reset()

    def _stalled(self, obs: Observation) -> bool:
        distance = float(np.linalg.norm(obs.proprio.tcp_pos - self.task.cube_pos()))
        if distance < self.best - self.cfg.progress_m:
            self.best, self.since_progress = distance, 0
        else:
            self.since_progress += 1
        return self.since_progress >= self.cfg.stall_steps

    def act(self, obs: Observation, policy_action: np.ndarray) -> np.ndarray | None:
        cfg = self.cfg
        if not self.in_control and not self.used and self._stalled(obs):
            self.in_control, self.control_steps = True, 0
            self.expert.reset()
        if not self.in_control:
            return None
        self.control_steps += 1
        lifted = self.task.is_grasping() and self.task.cube_pos()[2] > cfg.release_height_m
        if lifted or self.control_steps > cfg.max_steps:
            self.in_control, self.used = False, True  # one takeover per episode
            return None
        return self.expert.act(obs.proprio.tcp_pos, obs.ee_target)
