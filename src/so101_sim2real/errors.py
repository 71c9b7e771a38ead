"""Errors a user can act on.

Everything raised as :class:`So101Error` is bad input or a missing resource, never a
bug: the CLI prints its message on one line and exits with code 2, no traceback.
"""

from __future__ import annotations


class So101Error(Exception):
    """A problem the user can fix; the message says what to do."""


class SpecError(So101Error):
    """A spec file (or a spec built from a checkpoint) is invalid."""


class CheckpointError(So101Error):
    """A checkpoint cannot be read, is of an unknown kind, or its weights disagree."""


class UnsafePickleError(CheckpointError):
    """A pickle asked to call something outside the allow-list; nothing was run."""


class ObservationError(So101Error):
    """An observation handed to the policy breaks the spec (shape, range, ids)."""
