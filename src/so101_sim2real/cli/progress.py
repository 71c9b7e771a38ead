"""A progress bar for commands that run units (episodes, frames) one after another."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Never

import typer

if TYPE_CHECKING:
    from tqdm import tqdm


class _Progress:
    """In a terminal, a bar with the ETA under the result lines; in a log or a pipe, the lines only."""

    def __init__(self, total: int | None, unit: str):
        self.total, self.unit = total, unit
        self._bar: tqdm[Never] | None = None  # tqdm[Never]: a bar updated by hand, over no iterable

    @property
    def bar(self) -> tqdm[Never]:
        if self._bar is None:  # made at the first unit, under whatever the command printed first
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, unit=self.unit, file=sys.stderr, disable=not sys.stderr.isatty(),
                             leave=False, dynamic_ncols=True)
        return self._bar

    def advance(self, line: str) -> None:
        """One unit done, reported by ``line``."""
        self.bar.update(1)
        if self.bar.disable:
            typer.echo(line)
        else:
            self.bar.write(line, file=sys.stdout)

    def note(self, text: str) -> None:
        """Where the current unit is (redrawn at most a few times a second)."""
        if not self.bar.disable:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(0)  # redraws only when tqdm's minimum interval has passed

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
