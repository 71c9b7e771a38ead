"""Files the toolkit writes for the user: with the user's usual permissions."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from so101_sim2real.errors import So101Error


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


def check_out_folder(out: str | Path, overwrite: bool = False) -> None:
    """Refuse, in one line, an output folder that :func:`write_folder` could not make: one that
    exists (unless ``overwrite``), a file in its place (``overwrite`` replaces a previous folder,
    never a file), or a parent that cannot be written. Cheap: call it before the work."""
    out = Path(out)
    if out.exists() and not out.is_dir():  # renamed aside, a file would outlive the swap as .NAME.old
        raise So101Error(f"{out}: a file, not a folder; @force replaces a previous folder, not a file: choose "
                         f"another @out")
    if out.exists() and not overwrite:
        raise So101Error(f"{out}: already exists; choose another @out or pass @force")
    if problem := writable_folder(out.parent):
        raise So101Error(f"{out}: cannot write there ({problem})")


def write_folder(out: str | Path, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Make the folder ``out`` by ``write``-ing a hidden sibling and renaming it into place: a kill
    at any moment leaves the old folder or the new one, never half of one."""
    out = Path(out)
    check_out_folder(out, overwrite)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # not mkdtemp: that folder is private (0700); the user's folders get their usual mode
        tmp = out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
    except OSError as exc:
        raise So101Error(f"{out}: cannot write there ({exc.strerror})") from None
    try:
        write(tmp)
        old = out.with_name(f".{out.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_file(path: str | Path, data: bytes | str) -> Path:
    """Write one file through a hidden sibling renamed into place: a kill leaves the old file or
    the new one, never half of one. The file gets the user's usual mode."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(raw)
        share_like_the_user(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise So101Error(f"{path}: cannot write there ({exc.strerror})") from None
    return path


def check_distinct(folders: list[Path]) -> None:
    """Each folder once, however spelt (a symlink, a ``..``): a recording given twice would count its
    frames twice and put copies of training episodes among the held-out ones."""
    seen: dict[Path, Path] = {}
    for folder in folders:
        real = folder.expanduser().resolve()
        if real in seen:
            same = "" if seen[real] == folder else f" and {folder} (the same folder)"
            raise So101Error(f"{seen[real]}{same}: given twice; give each recording once")
        seen[real] = folder
