"""The live terminal view of a HIL-SERL session: one table, refreshed while the run goes on."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from rich.table import Table

from so101_sim2real.control.runner import EpisodeResult
from so101_sim2real.hilserl.trainer import Trainer


@dataclass(frozen=True)
class LiveStats:
    """One snapshot of the numbers a person watches during a run."""

    episodes: int
    env_steps: int
    updates: int
    utd: float
    success_rate: float | None  # over the last 20 finished episodes
    intervention_rate: float | None  # share of steps under intervention, last 20 episodes
    buffer: int
    buffer_mb: float
    actor_hz: float
    updates_per_s: float
    critic_loss: float | None
    actor_loss: float | None
    q_mean: float | None
    control: str = "policy"  # who moved the arm on the last tick: the policy, a person, the scripted expert
    takeovers: int | None = None  # leader-arm takeovers so far (a leader session)
    success_p: float | None = None  # the reward classifier's last probability (a classifier session)


class LiveMonitor:
    """Collects per-episode results and samples the trainer's counters for :class:`LiveStats`."""

    def __init__(self, trainer: Trainer, first_episode: int = 0):
        self.trainer = trainer
        self.episodes = first_episode
        self.recent: deque[tuple[bool, float]] = deque(maxlen=20)  # (success, intervention share)
        self._interventions = trainer.sink.interventions
        self._last = (time.perf_counter(), trainer.sink.env_steps, trainer.learner.updates)
        self._rates = (0.0, 0.0)

    def episode(self, result: EpisodeResult) -> None:
        sink = self.trainer.sink
        share = (sink.interventions - self._interventions) / max(1, result.steps)
        self._interventions = sink.interventions
        self.episodes += 1
        if not result.interrupted:
            self.recent.append((bool(result.success), share))

    def stats(self) -> LiveStats:
        t = self.trainer
        now, steps, updates = time.perf_counter(), t.sink.env_steps, t.learner.updates
        then, steps0, updates0 = self._last
        if now - then >= 1.0:  # rates over at least a second, so they do not flicker
            self._rates = ((steps - steps0) / (now - then), (updates - updates0) / (now - then))
            self._last = (now, steps, updates)
        last = t.stats.last
        recent = list(self.recent)
        return LiveStats(
            episodes=self.episodes, env_steps=steps, updates=updates, utd=t.utd,
            success_rate=sum(s for s, _ in recent) / len(recent) if recent else None,
            intervention_rate=sum(i for _, i in recent) / len(recent) if recent else None,
            buffer=len(t.buffer), buffer_mb=len(t.buffer) * t.buffer.bytes_per_transition / 1e6,
            actor_hz=self._rates[0], updates_per_s=self._rates[1],
            critic_loss=None if last is None else last.critic_loss,
            actor_loss=None if last is None else last.actor_loss, q_mean=None if last is None else last.q_mean,
            control=who_controls(t.pilot), takeovers=getattr(t.pilot.intervener, "takeovers", None),
            success_p=getattr(t.sink.rewards, "last_p", None))


def who_controls(pilot: object) -> str:
    """Who moved the arm on the last tick: the policy, a person on the leader, or an expert."""
    if not pilot.last_intervention:
        return "policy"
    return "person (leader arm)" if pilot.intervener.name == "leader" else f"{pilot.intervener.name} expert"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(stats: LiveStats, title: str = "HIL-SERL") -> Table:
    """The live view's table."""
    table = Table(title=title, show_header=False, box=None, padding=(0, 2))
    for _ in range(4):
        table.add_column()
    s = stats
    table.add_row("episodes", str(s.episodes), "success (last 20)", _fmt(s.success_rate, ".0%"))
    table.add_row("env steps", f"{s.env_steps:,}", "interventions (last 20)", _fmt(s.intervention_rate, ".0%"))
    table.add_row("updates", f"{s.updates:,}", "realised UTD", f"{s.utd:.2f}")
    table.add_row("actor", f"{s.actor_hz:.1f} Hz", "learner", f"{s.updates_per_s:.2f} updates/s")
    table.add_row("buffer", f"{s.buffer:,} ({s.buffer_mb:.0f} MB)", "Q mean", _fmt(s.q_mean, ".3f"))
    table.add_row("critic loss", _fmt(s.critic_loss, ".4f"), "actor loss", _fmt(s.actor_loss, ".4f"))
    takeovers = "" if s.takeovers is None else f" ({s.takeovers} takeovers)"
    table.add_row("control", s.control + takeovers, "success p", _fmt(s.success_p, ".2f"))
    return table
