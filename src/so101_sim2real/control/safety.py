"""Torque off on every way out of a command that moves the arm.

Normal end, an exception, Ctrl-C (KeyboardInterrupt) and SIGTERM (turned into
:class:`Terminated`) all leave through the same ``finally``.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from so101_sim2real.interfaces import Robot


class Terminated(BaseException):
    """SIGTERM arrived; a BaseException so that ``except Exception`` does not swallow it."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@contextmanager
def torque_guard(robot: Robot) -> Iterator[Robot]:
    """Torque on inside the block; off whichever way the block is left."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        robot.torque(True)
        yield robot
    finally:
        try:
            robot.torque(False)
        except Exception as exc:  # noqa: BLE001 - report, but let the original exit continue
            print(f"warning: could not turn torque off on {robot.name}: {exc}; cut the power", file=sys.stderr)
        if in_main:
            signal.signal(signal.SIGTERM, previous)
