"""Files the toolkit writes for the user: with the user's usual permissions."""

from __future__ import annotations

import os
from pathlib import Path


def umask() -> int:
    """The process umask, read without changing it where Linux says it (another thread may be
    creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share_like_the_user(path: str | Path) -> None:
    """Give a file the mode the user's own files get (safetensors and mkstemp write 0600)."""
    os.chmod(path, 0o666 & ~umask())


def writable_folder(folder: str | Path) -> str | None:
    """Why files could not be written under ``folder`` (created as needed), or None if they can."""
    here = Path(folder).expanduser()
    while not here.exists():  # the nearest existing ancestor decides
        if here.parent == here:
            return "no such drive"
        here = here.parent
    if not here.is_dir():
        return f"{here} is a file, not a folder"
    if not os.access(here, os.W_OK | os.X_OK):
        return f"{here} is not writable"
    return None
