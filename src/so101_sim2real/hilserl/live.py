"""The live terminal view of a HIL-SERL session: one table, refreshed while the run goes on,
and the line each episode prints. Both read the session's
:class:`~so101_sim2real.hilserl.episode_record.EpisodeRecord` and
:class:`~so101_sim2real.hilserl.episode_record.Progress`, nothing inside the trainer."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from so101_sim2real.hilserl.episode_record import EpisodeRecord, Progress

if TYPE_CHECKING:
    from so101_sim2real.hilserl.run import TrainReport
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
    """Keeps the last 20 episode records and samples the session's ``progress`` (a trainer's
    :meth:`~so101_sim2real.hilserl.trainer.Trainer.progress`) for :class:`LiveStats`.
    ``first_episode``: the run's episodes before this session."""

    def __init__(self, progress: Callable[[], Progress], first_episode: int = 0):
        self.progress = progress
        self.episodes = first_episode
        self.recent: deque[tuple[bool, float]] = deque(maxlen=20)  # (success, intervention share)
        now = progress()
        self._last = (time.perf_counter(), now.env_steps, now.updates)
        self._rates = (0.0, 0.0)

    def episode(self, record: EpisodeRecord) -> None:
        self.episodes = record.episode
        if not record.interrupted:
            self.recent.append((bool(record.success), record.intervention_rate))

    def stats(self) -> LiveStats:
        p = self.progress()
        now, steps, updates = time.perf_counter(), p.env_steps, p.updates
        then, steps0, updates0 = self._last
        if now - then >= 1.0:  # rates over at least a second, so they do not flicker
            self._rates = ((steps - steps0) / (now - then), (updates - updates0) / (now - then))
            self._last = (now, steps, updates)
        recent = list(self.recent)
        return LiveStats(
            episodes=self.episodes, env_steps=steps, updates=updates, utd=p.utd,
            success_rate=sum(s for s, _ in recent) / len(recent) if recent else None,
            intervention_rate=sum(i for _, i in recent) / len(recent) if recent else None,
            buffer=p.buffer, buffer_mb=p.buffer_mb, actor_hz=self._rates[0], updates_per_s=self._rates[1],
            critic_loss=p.critic_loss, actor_loss=p.actor_loss, q_mean=p.q_mean, control=p.control,
            takeovers=p.takeovers, success_p=p.success_p)


def episode_line(record: EpisodeRecord) -> str:
    """The line a session prints when an episode ends."""
    r = record
    return (f"episode {r.episode}  seed {r.seed}: {'success' if r.success else 'no success'} after {r.steps} steps; "
            f"interventions {r.interventions}"
            + ("" if r.takeovers is None else f" ({r.takeovers} leader takeovers)")
            + f", env steps {r.env_steps}, updates {r.updates} (UTD {r.utd:.2f})"
            + (f"; {r.overruns} ticks over the period so far" if r.overruns else ""))


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


class TerminalView:
    """What a person sees of a session in a terminal: the start notes, one line per episode, and
    in a terminal (not a log or a pipe) the live table above them; pauses are told above it too.

    ``echo(text, err)`` prints a line (the command line's echo)."""

    def __init__(self, title: str, echo: Callable[[str, bool], None], live: bool):
        self.title, self.echo, self.wants_live = title, echo, live
        self.monitor: LiveMonitor | None = None
        self._live: Any = None

    def started(self, trainer: Trainer) -> None:
        """The session's notes and warnings, then the table (when there is a terminal)."""
        start = trainer.start
        for note in ([start.period_note] if start.period_note else []) + list(start.notes):
            self.echo(note, False)
        for warning in start.warnings:
            self.echo(f"warning: {warning}", True)
        self.monitor = monitor = LiveMonitor(trainer.progress, start.episodes)
        if self.wants_live:
            from rich.live import Live

            self._live = Live(get_renderable=lambda: render(monitor.stats(), self.title), refresh_per_second=2,
                              transient=False)
            self._live.start()

    def episode(self, record: EpisodeRecord) -> None:
        if self.monitor is not None:
            self.monitor.episode(record)
        self._print(episode_line(record), err=False)

    def say(self, text: str) -> None:
        """A pause and its end: above the live table when there is one."""
        self._print(text, err=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _print(self, text: str, err: bool) -> None:
        if self._live is not None:
            self._live.console.print(text)
        else:
            self.echo(text, err)


def report_lines(report: TrainReport, out: Path) -> list[str]:
    """What ``hilserl train`` says at the end: changed settings, success, interventions, UTD, pauses."""
    lines = [f"setting changed on resume: {change}" for change in report.changed]
    rate = "n/a" if report.success_rate is None else f"{report.success_rate:.0%}"
    lines.append(f"{len(report.episodes)} episode(s): success {rate}, interventions {report.intervention_rate:.0%} "
                 f"of steps, UTD {report.utd:.2f}; run: {out} (policy: {out}/policy)")
    if report.discarded or report.pauses:
        waited = sum(p.waited_s for p in report.pauses)
        lines.append(f"re-recorded {report.discarded} episode(s); paused {len(report.pauses)} time(s) for device "
                     f"faults ({waited:.0f} s in all); what those episodes did is not in the buffer")
    return lines
