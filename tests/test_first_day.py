"""The README's "A first day without hardware", run as written: every line of its command block,
in order, as a person pastes them (subprocesses in a fresh folder; the emulator in the
background as the second terminal). What each step must leave behind is checked at the end."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the whole day: about 10 minutes on a busy 2-core machine

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- first-day:begin -->", "<!-- first-day:end -->"


def walkthrough() -> list[str]:
    """The command lines of the README's first-day block (comments and blank lines dropped)."""
    text = (REPO / "README.md").read_text()
    block = text[text.index(BEGIN) + len(BEGIN):text.index(END)]
    code = re.search(r"```bash\n(.*?)```", block, re.S).group(1)
    return [line.strip() for line in code.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_the_walkthrough_is_a_path_a_person_can_paste():
    lines = walkthrough()
    assert sum(line.startswith("so101 emulate") for line in lines) == 1  # the second terminal
    firsts = [line.split()[1] for line in lines if line.startswith("so101 ")]
    for step in ("calibrate", "emulate", "infer", "compare-sim", "reward", "hilserl"):
        assert step in firsts, step
    assert all("PTY" not in line for line in lines[:[i for i, x in enumerate(lines) if "emulate" in x][0]])


def _start_emulator(line: str, cwd: Path, env: dict) -> tuple[subprocess.Popen, list[str]]:
    """The second terminal: its stdout's first lines are the ptys; what it tells goes to emulate.log."""
    log = (cwd / "emulate.log").open("w")
    proc = subprocess.Popen(shlex.split(line), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    printed = [proc.stdout.readline().strip() for _ in range(3 if "--leader" in line else 1)]
    assert all(printed), (cwd / "emulate.log").read_text()
    return proc, printed


def test_the_first_day_runs_as_written(tmp_path):
    day = tmp_path / "day"
    day.mkdir()
    for folder in ("scripts", "configs", "tests"):  # the block runs in a folder inside the clone
        (tmp_path / folder).symlink_to(REPO / folder)
    env = {**os.environ, "HF_LEROBOT_CALIBRATION": str(tmp_path / "calibration")}
    emulator, names, said = None, {}, {}
    try:
        for line in walkthrough():
            for name, value in names.items():
                line = line.replace(name, value)
            if line.startswith("so101 emulate"):
                emulator, printed = _start_emulator(line, day, env)
                names = {"PTY1": printed[0], "PTY2": printed[1]}
                continue
            argv = shlex.split(line)
            if argv[0] == "python":
                argv[0] = sys.executable
            done = subprocess.run(argv, cwd=day, env=env, capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, f"{line}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            said[" ".join(argv[:3])] = done.stdout
            if "--perception real" in line:  # the networks' backend is chosen or re-checked, and says so
                assert "perception: choosing where" in done.stderr or "perception: checking" in done.stderr
            if "hilserl train" in line:
                assert "warning:" in done.stderr and "example weights" in done.stderr  # it says what infer says
    finally:
        if emulator is not None:
            emulator.send_signal(signal.SIGTERM)
            emulator.wait(timeout=20)
    _check_what_the_day_left(day)
    _check_the_rehearsed_calibrations(day, said)


def _check_what_the_day_left(day: Path) -> None:
    rig = (day / "rig.yaml").read_text()
    assert "format: so101-rig" in rig
    recording = json.loads((day / "rec" / "recording.json").read_text())
    assert all("tick_p50_s" in e for e in recording["episodes"])  # the period that ran, kept
    assert (day / "compare" / "index.html").is_file() and (day / "compare" / "report.json").is_file()
    assert (day / "classifier").is_dir()
    status = subprocess.run(["so101", "hilserl", "status", "run", "--json"], cwd=day, capture_output=True,
                            text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["counters"]["episodes"] >= 1 and (info["takeovers"] or 0) >= 1, info  # the hand's grab, seen
    told = (day / "emulate.log").read_text()
    assert "hand: grab 1 at" in told and "(episode 1 step 8)" in told, told  # in the session's episode 1
    first = json.loads((day / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["takeovers"] >= 1, first  # ... and the session took it as a takeover there
    assert (day / "curve.png").is_file()


def _check_the_rehearsed_calibrations(day: Path, said: dict[str, str]) -> None:
    """The day's rig and align rehearsals (the emulated arm's mount and joint zeros are off the
    sim's guess by RigTruth's amounts) recover the truth; the suite checks these scenarios here only."""
    from so101_sim2real.calibrate.rig_rehearsal import RigTruth, mount_error
    from so101_sim2real.geometry.rig_file import RigGeometry, default_rig

    rig = RigGeometry.load(day / "rig.yaml")
    truth = RigTruth().rig(default_rig())
    mm, deg = mount_error(rig, truth)
    assert mm < 2.0 and deg < 1.0, (mm, deg)
    assert np.abs(np.degrees(rig.joint_offsets_rad - truth.joint_offsets_rad)).max() < 0.5
    assert rig.calibrated and rig.fitted["rig"]["views"] >= 6 and rig.fitted["rig"]["rms_px"] < 0.5
    line = next(s for s in said["so101 calibrate rig"].splitlines() if s.startswith("against the truth"))
    assert math.isfinite(float(line.split("mount ")[1].split(" mm")[0]))
    assert (day / "rig_overlay.png").stat().st_size > 10_000
    json.dumps(rig.fitted)  # plain numbers only: the file is read by people and other tools

    aligned = RigGeometry.load(day / "aligned.yaml")
    mm, deg = mount_error(aligned, RigTruth(joint_offsets_deg=(0.0,) * 6).rig(default_rig()))
    assert mm < 3.0 and deg < 1.5, (mm, deg)
    ious = aligned.fitted["align"]
    for cls in ("table", "static_finger", "moving_finger"):
        assert ious["iou_after"][cls] > max(0.95, ious["iou_before"][cls])
    assert "moving_finger  IoU" in said["so101 calibrate align"]
