"""A session that outlives a fault: torque off, wait for the device, carry on.

When a servo stops answering, the serial port goes away, a servo runs too hot or the
camera stops, a plain run stops (torque off). A HIL-SERL session is hours of a person's
time and a buffer that took them: it pauses instead. The episode in progress is thrown
away (its end was the fault, not the task), torque goes off on every arm that can still
hear it, and each device is probed every ``poll_s`` until all answer again: the arm's
port reopened with its handshake and settings, every servo's temperature read, a new
camera frame. Then torque comes back and the same episode starts again. Ctrl-C while
paused ends the session the usual way.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from so101_sim2real.errors import DeviceFault, So101Error

if TYPE_CHECKING:
    from so101_sim2real.control.env import Env

Probe = Callable[[], None]  # returns when its device answers; raises while it does not


@dataclass
class PauseRecord:
    """One pause: what stopped, and how long the session waited for it."""

    fault: str
    waited_s: float
    probes: int


def env_probes(env: Env) -> list[Probe]:
    """The checks an env's devices must pass to resume: the arm reconnects, the camera gives a frame."""
    probes: list[Probe] = []
    if reconnect := getattr(env.robot, "reconnect", None):
        probes.append(reconnect)
    camera = getattr(env.perception, "camera", None)
    if camera is not None and hasattr(camera, "read"):
        probes.append(camera.read)
    return probes


def wait_until_back(fault: DeviceFault, probes: list[Probe], stop_torque: list[Callable[[], None]],
                    say: Callable[[str], None], poll_s: float = 1.0,
                    sleep: Callable[[float], None] = time.sleep) -> PauseRecord:
    """Torque off everywhere, then probe until every device answers; says what it waits for."""
    for off in stop_torque:
        with contextlib.suppress(Exception):  # a dead bus cannot hear it; the fault already stopped that arm
            off()
    say(f"paused: {fault}. Torque is off. Waiting for it to come back (Ctrl-C ends the session; the run is "
        f"saved)")
    started, tries, last = time.monotonic(), 0, ""
    while True:
        tries += 1
        problem = _first_problem(probes)
        if problem is None:
            waited = time.monotonic() - started
            say(f"resumed after {waited:.0f} s: the episode starts again")
            return PauseRecord(str(fault), waited, tries)
        if problem != last:  # one line per new state, not one per poll
            say(f"still paused: {problem}")
            last = problem
        sleep(poll_s)


def _first_problem(probes: list[Probe]) -> str | None:
    for probe in probes:
        try:
            probe()
        except (So101Error, OSError) as exc:
            return str(exc)
    return None
