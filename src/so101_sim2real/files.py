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
