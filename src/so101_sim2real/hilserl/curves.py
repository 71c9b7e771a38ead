"""Where a run stands: its counters, and success and intervention rate per episode, as numbers
and as a PNG. Reads the run folder only, so it works while the run is going on."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from so101_sim2real.control.recording import Recording
from so101_sim2real.errors import So101Error
from so101_sim2real.hilserl.run_folder import EPISODES_DIR, METRICS_FILE, RunFolder


def episode_rows(run_dir: str | Path) -> list[dict]:
    """One row per finished episode: index, seed, steps, success, share of steps under intervention."""
    RunFolder.open(run_dir, check_world=False)  # a clear error for a folder that is not a run
    folder = Path(run_dir) / EPISODES_DIR
    if not (folder / "recording.json").is_file():
        return []
    recording, rows = Recording(folder), []
    for i, meta in enumerate(recording.episodes):
        flags = recording.load(i).get("is_intervention", np.zeros(0, bool))
        rows.append({"index": meta["index"], "seed": meta["seed"], "steps": meta["steps"],
                     "success": bool(meta["success"]), "interrupted": bool(meta["interrupted"]),
                     "intervention_rate": float(np.mean(flags)) if flags.size else 0.0})
    return rows


def task_success(run_dir: str | Path) -> list[bool] | None:
    """Where a reward classifier judged success on a twin (or a stand-in), the task's own verdict per
    finished episode; None where nothing but the classifier judged (an arm) or the task itself did."""
    if RunFolder.open(run_dir, check_world=False).options.reward != "classifier":
        return None
    kept = [r for r in metric_rows(run_dir) if not r.get("interrupted")]
    if not kept or any(r.get("task_success") is None for r in kept):
        return None
    return [bool(r["task_success"]) for r in kept]


def rolling(values: Sequence[float], window: int) -> np.ndarray:
    """Mean over the last ``window`` values at each point (fewer at the start)."""
    v = np.asarray(values, dtype=float)
    return np.array([v[max(0, i + 1 - window):i + 1].mean() for i in range(len(v))])


def plot(run_dir: str | Path, out: str | Path, window: int = 10) -> Path:
    """Success and intervention rate against episodes (rolling over ``window``) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = [r for r in episode_rows(run_dir) if not r["interrupted"]]
    if not rows:
        raise So101Error(f"{run_dir}: no finished episodes to plot yet")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise So101Error(f"@out {out}: write a .png")
    x = np.arange(1, len(rows) + 1)
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
    task = task_success(run_dir)
    judged = "" if task is None else ", as the classifier judged"
    ax.plot(x, rolling([r["success"] for r in rows], window), label=f"success rate{judged} (last {window})", lw=2)
    if task is not None:  # the classifier can be fooled: beside its verdicts, the task's own rule
        ax.plot(x[:len(task)], rolling(task, window), label=f"success by the task's rule (last {window})", lw=2,
                ls="--", color="black")
    ax.plot(x, rolling([r["intervention_rate"] for r in rows], window),
            label=f"intervention rate (last {window})", lw=2)
    ax.set(xlabel="episode", ylabel="rate", ylim=(-0.02, 1.02), title=f"HIL-SERL: {Path(run_dir).name}")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    try:
        fig.savefig(out)
    except OSError as exc:
        raise So101Error(f"@out {out}: cannot write it ({exc.strerror})") from None
    finally:
        plt.close(fig)
    return out


def metric_rows(path: str | Path) -> list[dict[str, Any]]:
    """Every complete line of the run's metrics, oldest first (a line cut by a kill is skipped)."""
    file = Path(path) / METRICS_FILE
    if not file.is_file():
        return []
    rows = []
    for line in file.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def takeovers(rows: list[dict[str, Any]]) -> int | None:
    """The leader takeovers of the run's episodes (None: no episode had a person's leader)."""
    counts = [r["takeovers"] for r in rows if r.get("takeovers") is not None]
    return sum(counts) if counts else None


def judged(rows: list[dict[str, Any]]) -> dict[str, int] | None:
    """Where a reward classifier ended the episodes on a twin, how its verdicts stand against the task's
    rule: ``false_successes`` (success where the task failed), ``missed`` (the task's success it did
    not call) out of ``episodes`` (interrupted ones left out: nobody judged them to the end); None when
    no episode kept the task's verdict (an arm, older runs)."""
    kept = [r for r in rows if r.get("task_success") is not None and not r.get("interrupted")]
    if not kept:
        return None
    return {"episodes": len(kept), "false_successes": sum(bool(r["success"]) and not r["task_success"] for r in kept),
            "missed": sum(r["task_success"] and not bool(r["success"]) for r in kept)}


def status(path: str | Path) -> dict[str, Any]:
    """What a run folder says about itself (running or not)."""
    run = RunFolder.open(path, check_world=False)
    rows, metrics = episode_rows(path), metric_rows(path)
    recent = [r for r in rows if not r["interrupted"]][-20:]
    interventions = [r["intervention_rate"] for r in recent]
    return {
        "run": str(path), "options": dataclasses.asdict(run.options), "counters": run.counters,
        "utd": run.counters["updates"] / max(1, run.counters["env_steps"]),
        "success_rate_last_20": float(np.mean([bool(e["success"]) for e in recent])) if recent else None,
        "intervention_rate_last_20": float(np.mean(interventions)) if interventions else None,
        "episodes_recorded": len(rows), "policy": str(run.policy_dir) if run.policy_dir.is_dir() else None,
        "takeovers": takeovers(metrics), "last": metrics[-1] if metrics else None,
        "classifier": judged(metrics) if run.options.reward == "classifier" else None,
        "pace": None if run.pace is None else run.pace.to_dict(),  # what the latest start chose
    }
