"""Single key presses from the terminal, without a window to focus and without Enter.

A person at the arm presses space to take or give back control, ``s`` to mark a
success, ``f`` to end an episode as a failure, ``r`` to re-record it. The terminal is put
in cbreak mode (keys arrive one by one, Ctrl-C still interrupts) and restored on close,
whatever happens; reads never block the control loop.
"""

from __future__ import annotations

import os
import select
import termios
import tty

KEYS_HELP = "space: take/give back control   s: success   f: failure (end episode)   r: re-record episode"


class TerminalKeys:
    """Keys typed on a terminal file descriptor (standard input by default)."""

    def __init__(self, fd: int | None = None):
        self.fd = fd if fd is not None else 0
        self._saved = None
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
