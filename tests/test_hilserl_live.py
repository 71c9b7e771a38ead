"""The live view's numbers and table, and the line each episode prints: every field pinned to its
place (each value distinct, so a swapped pair fails)."""

import dataclasses
import re

from rich.console import Console

from so101_sim2real.hilserl.episode_record import EpisodeRecord, Progress
from so101_sim2real.hilserl.live import LiveMonitor, LiveStats, episode_line, render

PROGRESS = Progress(env_steps=2400, updates=930, utd=0.3875, interventions=77, takeovers=2, overruns=5, buffer=2300,
                    buffer_mb=32.7, critic_loss=0.0123, actor_loss=-0.5, q_mean=0.456, control="person (leader arm)",
                    success_p=0.82)


def record(**fields) -> EpisodeRecord:
    """An episode record with a distinct value in every field, ``fields`` changed."""
    episode = dict(episode=7, seed=41, success=True, steps=120, ret=1.0, interrupted=False, next_seed=42,
                   episode_interventions=33, episode_takeovers=1, episode_overruns=3, updates_per_s=4.5, period_s=0.05)
    return EpisodeRecord(**{**dataclasses.asdict(PROGRESS), **episode, **fields})


def cells(table_text: str) -> dict[str, str]:
    """The live table as {label: value}: each row is label, value, label, value, apart by 2+ spaces."""
    found = {}
    for line in table_text.splitlines()[1:]:  # under the title
        parts = re.split(r"\s{2,}", line.strip())
        assert len(parts) == 4, line
        found.update({parts[0]: parts[1], parts[2]: parts[3]})
    return found


def test_the_table_shows_what_a_person_watches():
    stats = LiveStats(episodes=12, env_steps=2400, updates=930, utd=0.39, success_rate=0.25,
                      intervention_rate=0.125, buffer=2300, buffer_mb=34.1, actor_hz=11.8, updates_per_s=2.1,
                      critic_loss=0.0123, actor_loss=None, q_mean=0.456, control="person (leader arm)",
                      takeovers=3, success_p=0.82)
    console = Console(record=True, width=120)
    console.print(render(stats, "HIL-SERL: run"))
    text = console.export_text()
    assert text.splitlines()[0].strip() == "HIL-SERL: run"
    assert cells(text) == {
        "episodes": "12", "success (last 20)": "25%",
        "env steps": "2,400", "interventions (last 20)": "12%",
        "updates": "930", "realised UTD": "0.39",
        "actor": "11.8 Hz", "learner": "2.10 updates/s",
        "buffer": "2,300 (34 MB)", "Q mean": "0.456",
        "critic loss": "0.0123", "actor loss": "-",  # the actor has not moved yet: a dash
        "control": "person (leader arm) (3 takeovers)", "success p": "0.82",
    }


def test_the_monitor_counts_success_and_intervention_over_the_last_20_and_samples_the_progress():
    monitor = LiveMonitor(lambda: PROGRESS, first_episode=3)
    assert monitor.stats().episodes == 3 and monitor.stats().success_rate is None
    for i in range(25):
        monitor.episode(record(episode=4 + i, success=i >= 20, steps=20, episode_interventions=10 if i % 2 else 0))
    monitor.episode(record(episode=29, success=True, interrupted=True, episode_interventions=20))  # not in the rates
    assert monitor.stats() == LiveStats(
        episodes=29, env_steps=2400, updates=930, utd=0.3875,
        success_rate=5 / 20,  # episodes 5..24 are the last 20 finished; 20..24 succeeded
        intervention_rate=0.25,  # every other episode, half its steps
        buffer=2300, buffer_mb=32.7, actor_hz=0.0, updates_per_s=0.0,  # less than a second: no rates yet
        critic_loss=0.0123, actor_loss=-0.5, q_mean=0.456, control="person (leader arm)", takeovers=2,
        success_p=0.82)


def test_the_episode_line_says_each_number_in_its_place():
    assert episode_line(record()) == ("episode 7  seed 41: success after 120 steps; interventions 77 "
                                      "(2 leader takeovers), env steps 2400, updates 930 (UTD 0.39); "
                                      "5 ticks over the period so far")
    # no person's leader, no overrun, no success: those parts are left out
    assert episode_line(record(success=False, takeovers=None, overruns=0)) == (
        "episode 7  seed 41: no success after 120 steps; interventions 77, env steps 2400, updates 930 (UTD 0.39)")
