"""The live view's numbers and table."""

from rich.console import Console

from so101_sim2real.control.runner import EpisodeResult
from so101_sim2real.hilserl.live import LiveMonitor, LiveStats, render


def test_the_table_shows_what_a_person_watches():
    stats = LiveStats(episodes=12, env_steps=2400, updates=930, utd=0.39, success_rate=0.25,
                      intervention_rate=0.125, buffer=2400, buffer_mb=34.1, actor_hz=11.8, updates_per_s=2.1,
                      critic_loss=0.0123, actor_loss=None, q_mean=0.456, control="person (leader arm)",
                      takeovers=3, success_p=0.82)
    console = Console(record=True, width=120)
    console.print(render(stats, "HIL-SERL: run"))
    text = console.export_text()
    for expected in ("episodes", "12", "2,400", "930", "0.39", "25%", "12%", "34 MB", "11.8 Hz", "2.10 updates/s",
                     "0.0123", "0.456", "person (leader arm) (3 takeovers)", "0.82"):
        assert expected in text, expected
    assert text.split("actor loss")[1].split()[0] == "-"  # the actor has not moved yet: a dash


def test_the_monitor_counts_success_and_intervention_over_the_last_20():
    class Sink:
        interventions, env_steps, rewards = 0, 0, None

    class FakeTrainer:  # only what the monitor reads
        sink, utd, buffer = Sink(), 0.0, []

        class learner:  # noqa: N801
            updates = 0

        class stats:  # noqa: N801
            last = None

        class pilot:  # noqa: N801
            last_intervention = True

            class intervener:  # noqa: N801
                name, takeovers = "leader", 2

    trainer = FakeTrainer()
    trainer.buffer = type("B", (), {"__len__": lambda self: 0, "bytes_per_transition": 14223})()
    monitor = LiveMonitor(trainer)
    for i in range(25):
        trainer.sink.interventions += 10 if i % 2 else 0
        monitor.episode(EpisodeResult(i, i, success=i >= 20, steps=20, ret=0.0))
    stats = monitor.stats()
    assert stats.episodes == 25
    assert stats.success_rate == 5 / 20  # episodes 5..24 are the last 20; 20..24 succeeded
    assert abs(stats.intervention_rate - 0.25) < 1e-9  # every other episode, half its steps
    assert (stats.control, stats.takeovers, stats.success_p) == ("person (leader arm)", 2, None)
