"""The rehearsed day (scripts/rehearsal.py --quick): every stage runs through the so101 commands, each
stage's output is read by the next, the session's counters and the report are there, and a second run
resumes instead of redoing. The numbers are the full day's business, not this test's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the whole day in small: a few minutes

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["calibrate", "before", "compare", "reward", "hilserl", "after"]


def _rehearse(work: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "rehearsal.py"), "--work", str(work), "--quick",
                           "--json"], capture_output=True, text=True, timeout=1800)


def test_the_quick_day_runs_every_stage_through_the_commands_and_resumes(tmp_path):
    work = tmp_path / "day"
    done = _rehearse(work)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert list(report["stages"]) == STAGES and all(s["seconds"] > 0 for s in report["stages"].values())
    assert json.loads((work / "report.json").read_text()) == report and (work / "report.html").is_file()
    # each stage read what the one before wrote: the rig the calibration measured is the fix applied later
    logs = {name: (work / "logs" / f"{name}.log").read_text() for name in STAGES}
    assert "against the stand-in's lens" in logs["calibrate"] and (work / "aligned.yaml").is_file()
    for name in ("compare", "reward", "hilserl", "after"):
        assert "--rig aligned.yaml" in logs[name], name
    assert "--report compare0/report.json" in logs["compare"]
    assert "--classifier classifier" in logs["hilserl"] and "--hand" in logs["hilserl"]
    assert "--ckpt run/policy" in logs["after"]
    # the session's counters: its episodes, each kept with the task's own verdict beside the classifier's
    session = report["session"]
    assert session["counters"]["episodes"] == 2 and session["classifier"]["episodes"] == 2
    assert report["before"]["episodes"] == report["after"]["episodes"] == 2
    assert report["classifier"]["episodes_labelled"] == 4 and "roc_auc" in report["classifier"]["held_out"]
    assert report["named_by_compare_sim"]  # the stand-in is not the twin: compare-sim names something
    # the curve shows the task's own verdict beside the classifier's (the classifier can be fooled)
    from so101_sim2real.hilserl.curves import metric_rows, task_success

    assert task_success(work / "run") == [bool(r["task_success"]) for r in metric_rows(work / "run")]
    assert "false-success rate" in (work / "report.html").read_text()
    # run again: every stage kept, nothing redone; a stage whose record is gone is redone alone
    (work / "stages" / "after.json").unlink()
    again = _rehearse(work)
    assert again.returncode == 0, again.stderr[-3000:]
    kept = [line for line in again.stderr.splitlines() if "kept from before" in line]
    assert [line.split("] ")[1].split(":")[0] for line in kept] == STAGES[:-1]
    assert "after: " in again.stderr
