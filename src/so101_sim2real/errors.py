"""Errors a user can act on.

Everything raised as :class:`So101Error` is bad input or a missing resource, never a
bug: the CLI prints its message on one line and exits with code 2, no traceback.

A message names an option of the run as ``@name`` (``"@episodes must be at least 1"``):
the library says ``episodes``, the command line ``--episodes``. So the library never
names a flag, and the CLI adds them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

_OPTION = re.compile(r"(?<![\w@/.])@([a-z][a-z0-9_]*)")


class So101Error(Exception):
    """A problem the user can fix; the message says what to do."""

    def __str__(self) -> str:
        return _OPTION.sub(r"\1", super().__str__())

    def cli_text(self) -> str:
        """The message with each ``@option`` as its command-line flag."""
        return _OPTION.sub(lambda m: "--" + m.group(1).replace("_", "-"), super().__str__())


def did_you_mean(key: object, names: Iterable[str], otherwise: str = "") -> str:
    """`` (did you mean 'x'?)`` for the name closest to a mistyped ``key``, else ``otherwise``."""
    near = difflib.get_close_matches(str(key), list(names), n=1)
    return f" (did you mean '{near[0]}'?)" if near else otherwise


class DeviceFault(So101Error):
    """A device stopped during a run: a servo that no longer answers, a lost serial port, a
    camera with no new frames, a servo too hot. Torque goes off; a HIL-SERL session pauses
    and resumes when the device is back, a plain run stops."""


class SpecError(So101Error):
    """A spec file (or a spec built from a checkpoint) is invalid."""


class CheckpointError(So101Error):
    """A checkpoint cannot be read, is of an unknown kind, or its weights disagree."""


class UnsafePickleError(CheckpointError):
    """A pickle asked to call something outside the allow-list; nothing was run."""


class ObservationError(So101Error):
    """An observation handed to the policy breaks the spec (shape, range, ids)."""
