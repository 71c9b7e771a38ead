"""The hand script of ``so101 emulate --leader --hand FILE``: when a hand grabs the emulated leader.

A YAML list of grabs, in order, each ``{at_s, hold_s, guide}``::

    - {at_s: 5, hold_s: 8, guide: cube}       # the scripted expert toward the twin's cube
    - {at_s: 20, hold_s: 2, guide: still}     # hold the leader where it was grabbed
    - {at_s: 30, hold_s: 3, guide: {shoulder_pan: 30, elbow_flex: -20}}  # move joints (degrees)

``at_s`` counts seconds from when the leader starts following (its torque first goes on:
a HIL-SERL session has begun), ``hold_s`` is how long the hand holds it at most (``cube``
lets go earlier, once the cube is lifted). ``cube`` needs the twin in the same process
(``--twin``). Times are the emulator's own clock: the session in the other process runs on
its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from so101_sim2real.arm import JOINT_NAMES
from so101_sim2real.errors import So101Error, did_you_mean

GRAB_KEYS = ("at_s", "hold_s", "guide")
NAMED_GUIDES = ("cube", "still")
EXAMPLE = "- {at_s: 5, hold_s: 8, guide: cube}"


@dataclass(frozen=True)
class Grab:
    """One grab of the leader: when, for how long at most, and where the hand takes it.

    ``guide`` is ``"cube"``, ``"still"``, or joint name -> degrees to move it by."""

    at_s: float
    hold_s: float
    guide: str | dict[str, float]

    @property
    def until_s(self) -> float:
        return self.at_s + self.hold_s


def load_hand_script(path: str | Path, twin: bool) -> list[Grab]:
    """The grabs in a hand script file (``twin``: the twin runs here, so ``cube`` is allowed)."""
    from so101_sim2real.calib.records import read_yaml

    source = f"@hand {path}"
    return parse_hand_script(read_yaml(path, "file", source), source, twin)


def parse_hand_script(data: Any, source: str, twin: bool) -> list[Grab]:
    """The grabs in a loaded YAML document, checked; errors name ``source`` and the grab."""
    if not isinstance(data, list) or not data:
        raise So101Error(f"{source}: expected a list of grabs, e.g. {EXAMPLE}")
    grabs = [_grab(item, f"{source}: grab {i}", twin) for i, item in enumerate(data, 1)]
    for i in range(1, len(grabs)):
        if grabs[i].at_s < grabs[i - 1].until_s:
            raise So101Error(f"{source}: grab {i + 1} at_s {grabs[i].at_s:g} starts before grab {i} lets go "
                             f"(at {grabs[i - 1].until_s:g} s): list the grabs in order, one at a time")
    return grabs


def _grab(item: Any, where: str, twin: bool) -> Grab:
    if not isinstance(item, dict):
        raise So101Error(f"{where}: expected a mapping like {EXAMPLE[2:]}, got {item!r}")
    for key in item:
        if key not in GRAB_KEYS:
            raise So101Error(f"{where}: unknown key {key!r}{did_you_mean(key, GRAB_KEYS)}; keys: "
                             f"{', '.join(GRAB_KEYS)}")
    missing = [k for k in GRAB_KEYS if k not in item]
    if missing:
        raise So101Error(f"{where}: needs {', '.join(missing)} (e.g. {EXAMPLE[2:]})")
    at_s, hold_s = _seconds(item["at_s"], f"{where}: at_s"), _seconds(item["hold_s"], f"{where}: hold_s")
    if hold_s == 0:
        raise So101Error(f"{where}: hold_s 0: the hand must hold it for some time (seconds above 0)")
    return Grab(at_s, hold_s, _guide(item["guide"], f"{where}: guide", twin))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise So101Error(f"{where} {value!r}: expected a number")
    return float(value)


def _seconds(value: Any, where: str) -> float:
    seconds = _number(value, where)
    if seconds < 0:
        raise So101Error(f"{where} {value!r}: seconds, 0 or more")
    return seconds


def _guide(value: Any, where: str, twin: bool) -> str | dict[str, float]:
    if isinstance(value, dict) and value:
        for joint in value:
            if joint not in JOINT_NAMES:
                raise So101Error(f"{where}: unknown joint {joint!r}{did_you_mean(joint, JOINT_NAMES)}; joints: "
                                 f"{', '.join(JOINT_NAMES)}")
        return {joint: _number(deg, f"{where}: {joint}") for joint, deg in value.items()}
    if value not in NAMED_GUIDES:
        raise So101Error(f"{where} {value!r}: choose cube, still, or {{JOINT: DEGREES, ...}}")
    if value == "cube" and not twin:
        raise So101Error(f"{where} cube: the hand steers toward the twin's cube, which runs here only with "
                         f"@twin (or use still, or {{JOINT: DEGREES}})")
    return value
