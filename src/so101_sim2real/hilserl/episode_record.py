"""What a HIL-SERL session says about itself, and what it starts from.

- :class:`Progress`: where the session stands at one moment (the live view samples it
  between episodes).
- :class:`EpisodeRecord`: the progress at an episode's end plus the episode; the trainer
  makes one per episode and every reader reads it: the terminal line, the live view,
  TensorBoard and ``metrics.jsonl`` (:meth:`EpisodeRecord.metrics`, which ``hilserl
  status`` and ``hilserl plot`` read back).
- :class:`SessionStart`: the counters, random streams and notes a session starts with,
  given to the trainer when it is built (:func:`session_seeds`: a session's streams).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Progress:
    """Where a session stands: the run's counters and the learner's last numbers."""

    env_steps: int  # the run's stored env steps
    updates: int  # the run's learner updates
    utd: float  # realised updates per stored env step
    interventions: int  # steps under intervention in this session
    takeovers: int | None  # a person's leader takeovers in this session (None: the intervener is not a person's)
    overruns: int  # ticks over the control period in this session
    buffer: int  # transitions in the online store
    buffer_mb: float
    critic_loss: float | None  # the learner's last update (None: none yet)
    actor_loss: float | None  # None also while the actor has not moved (the warm-up)
    q_mean: float | None
    control: str  # who moved the arm on the last tick: the policy, a person, the scripted expert
    success_p: float | None  # the reward classifier's last probability (a classifier session)


@dataclass(frozen=True)
class EpisodeRecord(Progress):
    """One finished (or interrupted) episode and the session's progress when it ended."""

    episode: int  # the run's finished episodes, this one included (1 for a run's first)
    seed: int | None
    success: bool | None  # None where nothing judged success
    steps: int
    ret: float  # the learner's return (the run's reward), as the episode file keeps it
    interrupted: bool
    next_seed: int  # the seed the run's next episode gets
    episode_interventions: int  # steps under intervention in this episode
    episode_takeovers: int | None  # leader takeovers since the previous record
    episode_overruns: int  # ticks over the period since the previous record
    updates_per_s: float  # the learner's pace since the previous record
    period_s: float  # the control period the episode ran at
    # the task's rule (a twin's: None on an arm): where a reward classifier judged ``success``, a
    # success it saw where this is False is the classifier's false success
    task_success: bool | None = None

    @property
    def intervention_rate(self) -> float:
        """The episode's share of steps under intervention."""
        return self.episode_interventions / max(1, self.steps)

    def metrics(self) -> dict[str, Any]:
        """The episode's line of ``metrics.jsonl`` (keys in the file's order)."""
        return {
            "env_steps": self.env_steps, "updates": self.updates, "episodes": self.episode,
            "next_seed": self.next_seed, "seed": self.seed, "success": bool(self.success), "steps": self.steps,
            "return": self.ret, "utd": self.utd, "interventions": self.interventions,
            "updates_per_s": self.updates_per_s, "critic_loss": self.critic_loss, "actor_loss": self.actor_loss,
            "q_mean": self.q_mean, "buffer": self.buffer, "buffer_mb": self.buffer_mb, "period_s": self.period_s,
            "overruns": self.episode_overruns, "takeovers": self.episode_takeovers,
            "task_success": self.task_success, "interrupted": self.interrupted,
        }


@dataclass(frozen=True)
class SessionStart:
    """What a session starts from: the run's counters so far, its random streams, what it says first."""

    env_steps: int = 0
    updates: int = 0  # the count the learner's weights carry
    episodes: int = 0  # finished before this session
    next_seed: int = 0
    explore_seed: int | None = None  # the pilot's exploration noise (None: the config's seed)
    sample_seed: int | None = None  # the replay buffer's draws (None: the config's seed)
    period_note: str | None = None  # how the control period was chosen, when it was measured
    notes: tuple[str, ...] = ()  # what the session says before it starts
    warnings: tuple[str, ...] = ()


def session_seeds(seed: int, episodes: int) -> tuple[int, int, int]:
    """A session's three random streams: the intervener's (a scripted helper, a leader's hand),
    the pilot's exploration noise, the replay buffer's draws. Each its own seed, and a resumed
    session (``episodes`` done) new ones: no noise is replayed."""
    help_seed, explore, sample = np.random.SeedSequence([seed, episodes]).generate_state(3)
    return int(help_seed), int(explore), int(sample)
