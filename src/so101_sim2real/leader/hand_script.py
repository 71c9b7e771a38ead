"""The hand script of ``so101 emulate --leader --hand FILE`` (and of ``hilserl train --leader-port emulator
--hand FILE``): when a hand grabs the emulated leader.

A YAML list of grabs, in order, each one trigger, ``hold_s`` and ``guide``::

    - {episode: 1, step: 10, hold_s: 8, guide: cube}   # in the session's episode 1 at its step 10
    - {when: stalled, stall_s: 3, hold_s: 8, guide: cube}  # once the follower stops nearing the cube
    - {at_s: 60, hold_s: 2, guide: still}               # 60 s after the leader first followed
    - {at_s: 90, hold_s: 3, guide: {shoulder_pan: 30, elbow_flex: -20}}  # move joints (degrees)
    - {when: person, hold_s: 10, guide: cube}            # a person watching the whole session (below)

The triggers:

- ``at_s``: seconds from when the leader starts following (its torque first goes on: a
  HIL-SERL session has connected). The session loads its models and measures its period
  after that, so a small ``at_s`` can land before the first episode.
- ``episode`` (1-based) and ``step`` (1-based, default 1): when the session reaches that
  step of that episode; skipped if that episode ends first. The emulator learns the
  session's episodes from the session itself (a :class:`~so101_sim2real.leader.emulator.SessionClock`),
  so such a grab waits until the session has begun its first episode; it needs ``--twin``.
- ``when: stalled``: the follower's TCP has come no closer to the twin's cube for
  ``stall_s`` seconds (default 3) while the leader follows; needs ``--twin``.

- ``when: person``: a person who watches every episode, not one grab. They grab when the
  follower stalls for ``stall_s`` (default 2), heads away from the cube (``wrong_m``, default
  3 cm, farther than the closest it came) or closes its gripper on air (3 cm from the cube),
  after a reaction time drawn from ``react_ms`` (default 300-600 ms); they bother at most
  ``per_episode`` times an episode (default 1), and each time they notice with probability
  ``bother`` (default 1). Their guidance is not the expert's optimum: ``speed`` of its pace
  (default 0.7) and a drifting error of ``noise_m`` (default 5 mm) on each step. Random draws
  follow ``seed``. A person's grab stays in the script for the whole session; it needs
  ``--twin``.

``hold_s`` is how long the hand holds it at most (``cube`` lets go earlier, once the cube is
lifted). ``cube`` steers as the scripted expert toward the twin's cube; it needs the twin in
the same process (``--twin``). Each grab waits for the one before it to let go. Times are the
emulator's own clock (in ``hilserl train``: the control ticks times the period).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from so101_sim2real.arm import JOINT_NAMES
from so101_sim2real.errors import So101Error, did_you_mean

TRIGGERS = ("at_s", "episode", "when")
PERSON_KEYS = ("wrong_m", "react_ms", "per_episode", "bother", "speed", "noise_m", "seed")
GRAB_KEYS = ("at_s", "episode", "step", "when", "stall_s", "hold_s", "guide", *PERSON_KEYS)
NAMED_GUIDES = ("cube", "still")
WHENS = ("stalled", "person")
EXAMPLE = "- {episode: 1, step: 10, hold_s: 8, guide: cube}"
# Bounds: a day of session for at_s, a few minutes of holding or stalling, an episode or a step
# count no session reaches; anything past them is a typo, not a plan.
MAX_AT_S, MAX_HOLD_S, MAX_STALL_S = 86_400.0, 600.0, 600.0
MAX_COUNT = 1_000_000
DEFAULT_STALL_S = 3.0


@dataclass(frozen=True)
class Person:
    """How a watching person (``when: person``) notices, reacts and guides."""

    stall_s: float = 2.0  # no progress toward the cube this long: they grab
    wrong_m: float = 0.03  # the follower this much farther from the cube than its closest: they grab
    react_ms: tuple[float, float] = (300.0, 600.0)  # from noticing to grabbing, drawn each time
    per_episode: int = 1  # takeovers an episode at most
    bother: float = 1.0  # chance they act on what they notice
    speed: float = 0.7  # of the expert's pace
    noise_m: float = 0.005  # their hand's drifting error on each step
    seed: int = 0


@dataclass(frozen=True)
class Grab:
    """One grab of the leader: when (one trigger), for how long at most, and where the hand takes it.

    ``guide`` is ``"cube"``, ``"still"``, or joint name -> degrees to move it by. The trigger is
    ``at_s`` (seconds after the leader first followed), ``episode`` and ``step`` (the session's),
    or ``when="stalled"`` (no progress toward the cube for ``stall_s``)."""

    at_s: float | None
    hold_s: float
    guide: str | dict[str, float]
    episode: int | None = None
    step: int | None = None
    when: str | None = None
    stall_s: float | None = None
    person: Person | None = None  # ``when: person``: who watches

    @property
    def until_s(self) -> float:
        """When an ``at_s`` grab lets go at the latest."""
        return (self.at_s or 0.0) + self.hold_s

    @property
    def needs_clock(self) -> bool:
        """Whether it waits for the session's episodes (a :class:`SessionClock`)."""
        return self.episode is not None

    @property
    def trigger(self) -> str:
        """The trigger, as the hand tells it."""
        if self.episode is not None:
            return f"episode {self.episode} step {self.step}"
        if self.person is not None:
            return "a person noticed"
        if self.when is not None:
            return f"{self.when} {self.stall_s:g} s"
        return f"at {self.at_s:g} s"

    def to_dict(self) -> dict[str, Any]:
        """As written in a script (what :func:`parse_hand_script` reads back)."""
        keys = ("at_s", "episode", "step", "when", "stall_s", "hold_s", "guide")
        out = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        if self.person is not None:
            out.pop("stall_s", None)
            out.update({k: v for k, v in asdict(self.person).items()})
            out["react_ms"] = list(self.person.react_ms)
        return out


def load_hand_script(path: str | Path, twin: bool, source: str = "@hand") -> list[Grab]:
    """The grabs in a hand script file (``twin``: the twin runs here, so ``cube``, ``stalled`` and
    ``episode`` are allowed)."""
    from so101_sim2real.records import read_yaml

    source = f"{source} {path}"
    return parse_hand_script(read_yaml(path, "file", source), source, twin)


def parse_hand_script(data: Any, source: str, twin: bool) -> list[Grab]:
    """The grabs in a loaded YAML document, checked; errors name ``source``, the grab and the field."""
    if not isinstance(data, list) or not data:
        raise So101Error(f"{source}: expected a list of grabs, e.g. {EXAMPLE}")
    ranges = _joint_spans_deg()
    grabs = [_grab(item, f"{source}: grab {i}", twin, ranges) for i, item in enumerate(data, 1)]
    if any(g.person is not None for g in grabs[:-1]):
        raise So101Error(f"{source}: a person (when: person) watches the rest of the session: make it the last grab")
    for i in range(1, len(grabs)):
        before, grab = grabs[i - 1], grabs[i]
        if before.at_s is not None and grab.at_s is not None and grab.at_s < before.until_s:
            raise So101Error(f"{source}: grab {i + 1} at_s {grab.at_s:g} starts before grab {i} lets go "
                             f"(at {before.until_s:g} s): list the grabs in order, one at a time")
        if before.needs_clock and grab.needs_clock and (grab.episode, grab.step) <= (before.episode, before.step):
            raise So101Error(f"{source}: grab {i + 1} (episode {grab.episode} step {grab.step}) is not after "
                             f"grab {i} (episode {before.episode} step {before.step}): list the grabs in order")
    return grabs


def _grab(item: Any, where: str, twin: bool, spans: dict[str, float]) -> Grab:
    if not isinstance(item, dict):
        raise So101Error(f"{where}: expected a mapping like {EXAMPLE[2:]}, got {item!r}")
    for key in item:
        if key not in GRAB_KEYS:
            raise So101Error(f"{where}: unknown key {key!r}{did_you_mean(key, GRAB_KEYS)}; keys: "
                             f"{', '.join(GRAB_KEYS)}")
    missing = [k for k in ("hold_s", "guide") if k not in item]
    if missing:
        raise So101Error(f"{where}: needs {', '.join(missing)} (e.g. {EXAMPLE[2:]})")
    triggers = [k for k in TRIGGERS if k in item]
    if len(triggers) != 1:
        raise So101Error(f"{where}: needs one trigger: at_s SECONDS, episode N (and step K), or when: stalled or "
                         f"person"
                         + (f"; got {' and '.join(triggers)}" if triggers else ""))
    if "step" in item and "episode" not in item:
        raise So101Error(f"{where}: step needs episode (the session's episode N, from 1)")
    if "stall_s" in item and item.get("when") not in WHENS:
        raise So101Error(f"{where}: stall_s only with when: stalled or person")
    if item.get("when") != "person" and (extra := [k for k in PERSON_KEYS if k in item]):
        raise So101Error(f"{where}: {', '.join(extra)} only with when: person")
    hold_s = _seconds(item["hold_s"], f"{where}: hold_s", MAX_HOLD_S)
    if hold_s == 0:
        raise So101Error(f"{where}: hold_s 0: the hand must hold it for some time (seconds above 0)")
    grab = Grab(None, hold_s, _guide(item["guide"], f"{where}: guide", twin, spans))
    if "at_s" in item:
        return _with(grab, at_s=_seconds(item["at_s"], f"{where}: at_s", MAX_AT_S))
    if "episode" in item:
        _needs_twin(twin, f"{where}: episode", "counts the session's episodes (they arrive once it runs one)")
        return _with(grab, episode=_count(item["episode"], f"{where}: episode"),
                     step=_count(item.get("step", 1), f"{where}: step"))
    when = item["when"]
    if when not in WHENS:
        raise So101Error(f"{where}: when {when!r}: choose {', '.join(WHENS)}")
    _needs_twin(twin, f"{where}: when {when}", "watches the follower's progress toward the twin's cube")
    default = Person.stall_s if when == "person" else DEFAULT_STALL_S
    stall_s = _seconds(item.get("stall_s", default), f"{where}: stall_s", MAX_STALL_S)
    if stall_s == 0:
        raise So101Error(f"{where}: stall_s 0: a stall lasts some time (seconds above 0)")
    if when == "person":
        if grab.guide != "cube":
            raise So101Error(f"{where}: guide {grab.guide!r}: a person guides toward the cube (guide: cube)")
        return _with(grab, when=when, stall_s=stall_s, person=_person(item, stall_s, where))
    return _with(grab, when=when, stall_s=stall_s)


def _person(item: dict, stall_s: float, where: str) -> Person:
    """A person's settings, checked: each in the range a person could have."""
    base = Person()
    react = item.get("react_ms", list(base.react_ms))
    if not (isinstance(react, list) and len(react) == 2):
        raise So101Error(f"{where}: react_ms {react!r}: [FASTEST, SLOWEST] milliseconds, e.g. [300, 600]")
    low, high = (_number(v, f"{where}: react_ms") for v in react)
    if not 0 <= low <= high <= 5000:
        raise So101Error(f"{where}: react_ms {react!r}: 0 <= fastest <= slowest <= 5000 ms")
    wrong_m = _number(item.get("wrong_m", base.wrong_m), f"{where}: wrong_m")
    speed = _number(item.get("speed", base.speed), f"{where}: speed")
    noise_m = _number(item.get("noise_m", base.noise_m), f"{where}: noise_m")
    bother = _number(item.get("bother", base.bother), f"{where}: bother")
    if not 0 < wrong_m <= 0.5:
        raise So101Error(f"{where}: wrong_m {wrong_m:g}: metres above 0, at most 0.5")
    if not 0 < speed <= 1.5 or not 0 <= noise_m <= 0.05 or not 0 < bother <= 1:
        raise So101Error(f"{where}: speed in (0, 1.5] of the expert's pace, noise_m 0-0.05 m, bother a chance in "
                         f"(0, 1]")
    seed = item.get("seed", base.seed)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise So101Error(f"{where}: seed {seed!r}: a whole number, 0 or more")
    return Person(stall_s, wrong_m, (low, high), _count(item.get("per_episode", base.per_episode),
                                                        f"{where}: per_episode"), bother, speed, noise_m, seed)


def _with(grab: Grab, **trigger: Any) -> Grab:
    from dataclasses import replace

    return replace(grab, **trigger)


def _needs_twin(twin: bool, where: str, why: str) -> None:
    if not twin:
        raise So101Error(f"{where}: the hand {why}, which runs here only with @twin (or use at_s)")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise So101Error(f"{where} {value!r}: expected a number")
    return float(value)


def _seconds(value: Any, where: str, most: float) -> float:
    seconds = _number(value, where)
    if not 0 <= seconds <= most:
        raise So101Error(f"{where} {value!r}: seconds, 0 to {most:g}")
    return seconds


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise So101Error(f"{where} {value!r}: a whole number, 1 to {MAX_COUNT}")
    return value


def _joint_spans_deg() -> dict[str, float]:
    """How far each joint of the emulated leader can move at all, degrees (its MJCF range)."""
    from so101_sim2real.control.twin_bus import twin_arm_calibration

    ranges = np.degrees(twin_arm_calibration().sim_ranges())
    return {joint: float(hi - lo) for joint, (lo, hi) in zip(JOINT_NAMES, ranges, strict=True)}


def _guide(value: Any, where: str, twin: bool, spans: dict[str, float]) -> str | dict[str, float]:
    if isinstance(value, dict) and value:
        for joint in value:
            if joint not in JOINT_NAMES:
                raise So101Error(f"{where}: unknown joint {joint!r}{did_you_mean(joint, JOINT_NAMES)}; joints: "
                                 f"{', '.join(JOINT_NAMES)}")
        moves = {joint: _number(deg, f"{where}: {joint}") for joint, deg in value.items()}
        for joint, deg in moves.items():
            if abs(deg) > spans[joint]:
                raise So101Error(f"{where}: {joint} {deg:g}: degrees to move it by, at most its range "
                                 f"({spans[joint]:.0f}) either way")
        return moves
    if value not in NAMED_GUIDES:
        raise So101Error(f"{where} {value!r}: choose cube, still, or {{JOINT: DEGREES, ...}}")
    if value == "cube" and not twin:
        raise So101Error(f"{where} cube: the hand steers toward the twin's cube, which runs here only with "
                         f"@twin (or use still, or {{JOINT: DEGREES}})")
    return value
