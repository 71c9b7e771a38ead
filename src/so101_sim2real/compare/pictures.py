"""The pictures of a comparison: one row per tick, as in the page and in ``compare.mp4``.

recorded camera image | recorded policy channels | the twin's | the difference, where
the difference panel shows the pixels whose class differs in white over the absolute
disparity difference in grey (doubled, so small offsets show).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from so101_sim2real.compare.report import TickFrames
from so101_sim2real.control.video import VideoWriter, label, panel, policy_panels
from so101_sim2real.errors import So101Error
from so101_sim2real.files import share_like_the_user, writable_folder

VIDEO = "compare.mp4"


def difference(frames: TickFrames, channels: list[str]) -> np.ndarray:
    """(H, W, 3) uint8 at the policy's size: seg mismatch white, |disparity difference| x 2 grey."""
    seg = channels.index("seg")
    rec, twin = frames.recorded, frames.twin
    if "disparity" in channels:
        d = channels.index("disparity")
        grey = np.minimum(2 * np.abs(rec[d].astype(np.int16) - twin[d].astype(np.int16)), 255).astype(np.uint8)
    else:
        grey = np.zeros(rec[seg].shape, np.uint8)
    grey[rec[seg] != twin[seg]] = 255
    return np.repeat(grey[..., None], 3, axis=2)


def side_by_side(frames: TickFrames, channels: list[str]) -> np.ndarray:
    """One RGB row: [camera] | recorded channels | twin channels | difference."""
    recorded = policy_panels(frames.recorded, channels)
    twin = policy_panels(frames.twin, channels)
    label(recorded[0], "recorded", first_row=1)
    label(twin[0], "twin", first_row=1)
    diff = panel(difference(frames, channels), f"seg differs: {100 * (1 - frames.agreement):.1f}%",
                 cv2.INTER_NEAREST)
    label(diff, "white: class, grey: disparity", first_row=1)
    camera = [panel(frames.rgb, f"recorded camera, tick {frames.tick}")] if frames.rgb is not None else []
    if not camera:
        label(recorded[0], f"tick {frames.tick}", first_row=2)
    return np.hstack(camera + recorded + twin + [diff])


def check_out(out: str | Path) -> None:
    """Refuse, in one line, a report folder that could not be written (cheap: before the work)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise So101Error(f"{out}: cannot write the report there (a file, not a folder)")
    if (why := writable_folder(out)) is not None:
        raise So101Error(f"{out}: cannot write the report there ({why})")


class EpisodeVideo:
    """``compare.mp4``: every tick's row, at the recording's own rate. It is written under a
    hidden name and renamed into place by :meth:`close`, so a run killed midway leaves no
    half video under the real name, and no folder it made for it."""

    def __init__(self, out: str | Path, channels: list[str], fps: float):
        out = Path(out)
        check_out(out)
        missing = [p for p in (out, *out.parents) if not p.exists()]
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise So101Error(f"{out}: cannot write the report there ({exc.strerror})") from None
        self._made = missing  # deepest first: removed again if the video is thrown away and they are empty
        self.channels, self.path = channels, out / VIDEO
        self.writer = VideoWriter(out / f".{VIDEO}.{os.getpid()}.partial.mp4", fps)

    def add(self, frames: TickFrames) -> None:
        self.writer.add(side_by_side(frames, self.channels))

    def close(self, keep: bool = True) -> Path | None:
        """Finish the file and put it in place (``keep``), or throw it away."""
        self.writer.close()
        partial = self.writer.path
        if keep and partial.exists():
            os.replace(partial, self.path)
            share_like_the_user(self.path)
            return self.path
        partial.unlink(missing_ok=True)
        for folder in self._made:
            try:
                folder.rmdir()
            except OSError:  # something else was put there meanwhile: not ours to remove
                break
        return None
