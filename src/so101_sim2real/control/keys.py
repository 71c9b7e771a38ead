"""Single key presses from the terminal, without a window to focus and without Enter.

A person at the arm presses space to take or give back control, ``s`` to end an
episode as a success, ``f`` to end it as a failure, ``r`` to throw the episode away and
run it again (a bumped cube, a takeover gone wrong: nothing of it reaches the buffer).
The terminal is put in cbreak mode (keys arrive one by one, Ctrl-C still interrupts)
and restored on close, whatever happens; reads never block the control loop.
:class:`OperatorKeys` reads the terminal for both of its users: the leader intervener
(space) and the loop's judge (s, f, r).
"""

from __future__ import annotations

import os
import select
import termios
import tty
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from so101_sim2real.control.pilots import Observation
    from so101_sim2real.control.runner import Judge
    from so101_sim2real.interfaces import StepResult

KEYS_HELP = "space: take/give back control   s: success   f: failure   r: re-record (throw the episode away)"


class KeySource(Protocol):
    """Keys typed since the last poll: a terminal, a window, several of them."""

    def poll(self) -> str: ...


class TerminalKeys:
    """Keys typed on a terminal file descriptor (standard input by default)."""

    def __init__(self, fd: int | None = None):
        self.fd = fd if fd is not None else 0
        self._saved: list | None = None  # the terminal's attributes to restore (termios.tcgetattr)
        if os.isatty(self.fd):
            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)

    @property
    def live(self) -> bool:
        """Whether there is a terminal to read keys from."""
        return self._saved is not None

    def poll(self) -> str:
        """Every key typed since the last poll (empty when none); never waits."""
        if not self.live:
            return ""
        keys = b""
        while select.select([self.fd], [], [], 0)[0]:
            chunk = os.read(self.fd, 64)
            if not chunk:
                break
            keys += chunk
        return keys.decode(errors="ignore")

    def close(self) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def __enter__(self) -> TerminalKeys:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OperatorKeys:
    """The person's keys during a session: each key read once, kept until its user asks.

    It is also the loop's judge (``reset``/``judge``): ``s`` ends the episode as a success,
    ``f`` as a failure, whatever the task or a reward classifier (``inner``) says; ``r``
    asks the loop to throw the episode away and run it again.
    """

    def __init__(self, terminal: KeySource, inner: Judge | None = None):
        self.terminal, self.inner = terminal, inner
        self._toggles = 0
        self._verdict: str | None = None

    def _read(self) -> None:
        for key in self.terminal.poll():
            if key == " ":
                self._toggles += 1
            elif key in "sfr":
                self._verdict = key

    def toggled(self) -> bool:
        """Whether space was pressed an odd number of times since the last call."""
        self._read()
        odd, self._toggles = self._toggles % 2 == 1, 0
        return odd

    def reset(self) -> None:
        self._read()
        self._verdict = None  # a key pressed between episodes belongs to none
        if self.inner is not None:
            self.inner.reset()

    def judge(self, obs: Observation, result: StepResult, step: int) -> StepResult:
        from so101_sim2real.control.runner import DISCARD
        from so101_sim2real.interfaces import StepResult

        if self.inner is not None:
            result = self.inner.judge(obs, result, step)
        self._read()
        verdict, self._verdict = self._verdict, None
        if verdict is None:
            return result
        if verdict == "r":
            return StepResult(result.reward, False, True, {**result.info, "operator": "re-record", DISCARD: True})
        info = {**result.info, "operator": "success" if verdict == "s" else "failure"}
        return StepResult(result.reward, verdict == "s", verdict == "f", info)
