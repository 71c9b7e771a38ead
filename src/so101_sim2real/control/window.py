"""``--view``: an OpenCV window with the camera and the policy's observation, live.

The window shows what the video writer would write (camera | seg | disparity, with the
episode, step and return) plus a status line from the session (who has control, the
reward classifier's probability). Its keys are the terminal's keys: the window is polled
like a terminal, so space, s, f and r work whichever of the two has the focus.

The default install is OpenCV's headless build (servers, CI): it has no windows. ``--view``
is refused there at the start with what to install, never half-way through a session.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import Protocol, cast

import cv2
import numpy as np

from so101_sim2real.control.keys import KeySource
from so101_sim2real.control.video import label
from so101_sim2real.errors import So101Error

TITLE = "so101"


def check_display(option: str = "view") -> None:
    """Refuse, with what to do, where no window can open (``option``: the flag that asked for one)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise So101Error(f"@{option}: there is no display here (DISPLAY is not set); run at the machine's desktop "
                         f"or with ssh -X, or drop @{option}")


class Gui(Protocol):
    """The part of OpenCV's highgui a window uses (the cv2 module; a stand-in in tests)."""

    def namedWindow(self, winname: str, flags: int = ..., /) -> None: ...

    def imshow(self, winname: str, mat: np.ndarray, /) -> None: ...

    def waitKey(self, delay: int = ..., /) -> int: ...

    def destroyWindow(self, winname: str, /) -> None: ...


HIGHGUI = cast(Gui, cv2)  # the cv2 module itself; mypy does not match a module this large against a Protocol


class LiveWindow:
    """A video sink (``add``/``close``) that shows each frame; ``poll`` gives the keys typed in it."""

    def __init__(self, status: Callable[[], str] | None = None, title: str = TITLE, gui: Gui = HIGHGUI,
                 option: str = "view"):
        self.status, self.title, self.gui = status, title, gui
        self._keys = ""
        try:
            gui.namedWindow(title, cv2.WINDOW_AUTOSIZE)
        except cv2.error:
            raise So101Error(f"@{option}: this OpenCV has no windows (the headless build the default install "
                             f"uses); pip uninstall -y opencv-python-headless && pip install opencv-python") from None

    def add(self, frame: np.ndarray) -> None:
        """Show one composed RGB frame with the status line; collect any key pressed meanwhile."""
        if self.status is not None:
            frame = frame.copy()
            label(frame, self.status(), first_row=frame.shape[0] // 18 - 2)  # along the bottom
        self.gui.imshow(self.title, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        key = self.gui.waitKey(1)  # also what lets the window draw
        if key is not None and key >= 0:
            self._keys += chr(key & 0xFF)

    def poll(self) -> str:
        """Keys typed in the window since the last poll."""
        keys, self._keys = self._keys, ""
        return keys

    def close(self) -> None:
        with contextlib.suppress(cv2.error):  # already closed by the person
            self.gui.destroyWindow(self.title)


class KeySources:
    """Several key sources read as one (the terminal and the window)."""

    def __init__(self, *sources: KeySource | None):
        self.sources = [s for s in sources if s is not None]

    def poll(self) -> str:
        return "".join(s.poll() for s in self.sources)
