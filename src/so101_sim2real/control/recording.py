"""Recordings of control-loop runs: the on-disk format ``compare-sim`` reads.

A recording is a folder::

    recording.json      {"format": "so101-recording", "version": 1, "robot", "pilot",
                         "period_s", "joint_names", "created", "episodes": [
                           {"file", "index", "seed", "steps", "success", "return",
                            "interrupted"}, ...]}   success is null where not judged (a real arm)
    spec.yaml           the spec the run used (crop, classes, disparity rule, ...)
    episode_0000.npz    one row per control tick, N rows:
        time        (N,)        float64  robot clock at the reading, s
        joint_pos   (N, 6)      float64  measured joints, rad, sim convention
        joint_vel   (N, 6)      float64  rad/s
        tcp_pos     (N, 3)      float64  FK of joint_pos, m, world
        state       (N, S)      float32  the policy's state vector at this row (the spec's fields)
        action      (N, 4)      float32  the pilot's action for this row's observation
        ee_target   (N, 3)      float64  accumulated end-effector target after the action
        requested   (N, 6)      float64  joint targets from IK, before the safety clamp
        target      (N, 6)      float64  joint targets sent to the robot
        reward      (N,)        float64  the task's reward for the tick
        obs         (N, C, H, W) uint8   policy frame seen at this row (when perceived)
        rgb_jpeg    (M,)        uint8    JPEG bytes of the camera image, concatenated
        rgb_offsets (N + 1,)    int64    frame i is rgb_jpeg[offsets[i]:offsets[i + 1]]
        cube_pos    (N, 3)      float64  the twin's cube position after the row's step (sim runs only):
                                         row i's frame shows the cube at cube_pos[i - 1]
        cube_quat   (N, 4)      float64  its orientation then, w x y z (sim runs only)
        photon_to_command_s (N,) float64 from the camera read that made the row's frame to its command
                                         (a loop that perceives ahead; see control/overlap.py)

Arrays are stored with ``numpy.savez_compressed`` and read back without pickle.
"""

from __future__ import annotations

import json
import math
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from numpy.typing import ArrayLike

from so101_sim2real.errors import So101Error
from so101_sim2real.interfaces import JOINT_NAMES
from so101_sim2real.spec import Spec, load_spec, save_spec

if TYPE_CHECKING:
    from so101_sim2real.control.description import RunDescription

FORMAT, VERSION = "so101-recording", 1
INDEX_FILE = "recording.json"


def _encode_jpeg(rgb: np.ndarray, quality: int = 95) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise So101Error("could not JPEG-encode a camera frame for the recording")
    return buf.reshape(-1)


@dataclass
class _Episode:
    index: int
    seed: int | None
    rows: dict[str, list] = field(default_factory=dict)
    jpegs: list[np.ndarray] = field(default_factory=list)

    def add(self, **values: ArrayLike | None) -> None:
        for key, value in values.items():
            if value is not None:
                self.rows.setdefault(key, []).append(np.asarray(value))


class Recorder:
    """Writes a recording folder; each episode's file appears when the episode ends."""

    def __init__(self, folder: str | Path, spec: Spec, robot: str, pilot: str, period_s: float,
                 with_rgb: bool = True, append: bool = False, description: dict | None = None):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise So101Error(f"{self.folder}: exists and is not a folder; pick a new recording folder")
        self.with_rgb = with_rgb
        self._episode: _Episode | None = None
        if append and (self.folder / INDEX_FILE).is_file():  # continue a recording (a resumed run)
            self.meta = Recording(self.folder).meta
            return
        if self.folder.exists() and any(self.folder.iterdir()):
            raise So101Error(f"{self.folder}: the recording folder exists and is not empty; pick a new one")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise So101Error(f"{self.folder}: cannot create the recording folder ({exc.strerror})") from None
        save_spec(spec, self.folder / "spec.yaml")
        self.meta = {"format": FORMAT, "version": VERSION, "robot": robot, "pilot": pilot, "period_s": period_s,
                     "joint_names": list(JOINT_NAMES), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "episodes": []}
        if description is not None:  # where and how the run happened (control.description), whole
            self.meta["description"] = description
        self._write_index()

    @property
    def next_index(self) -> int:
        """The index the next episode gets: one past the last one written."""
        return max((e["index"] for e in self.meta["episodes"]), default=-1) + 1

    def set_period(self, period_s: float) -> None:
        """The period the loop is held to, once measured (an arm runs at what its machine sustains)."""
        self.meta["period_s"] = float(period_s)
        self._write_index()

    def begin(self, index: int, seed: int | None) -> None:
        self._episode = _Episode(index, seed)

    def add(self, *, rgb: np.ndarray | None = None, **values: ArrayLike | None) -> None:
        """One row: the arrays named in the module docstring, by keyword."""
        ep = self._episode
        assert ep is not None, "begin() an episode before adding rows"
        ep.add(**values)
        if self.with_rgb and rgb is not None:
            ep.jpegs.append(_encode_jpeg(rgb))

    def discard(self) -> None:
        """Forget the episode in progress: nothing of it is written."""
        self._episode = None

    def end(self, steps: int, success: bool | None, ret: float, interrupted: bool) -> Path | None:
        ep, self._episode = self._episode, None
        if ep is None or not ep.rows:
            return None
        arrays = {key: np.stack(values) for key, values in ep.rows.items()}
        if ep.jpegs:
            arrays["rgb_offsets"] = np.concatenate([[0], np.cumsum([j.size for j in ep.jpegs])]).astype(np.int64)
            arrays["rgb_jpeg"] = np.concatenate(ep.jpegs)
        name = f"episode_{ep.index:04d}.npz"
        tmp = self.folder / (name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]  # mypy fears **arrays fills allow_pickle
        tmp.replace(self.folder / name)
        entry = {"file": name, "index": ep.index, "seed": ep.seed, "steps": steps,
                 "success": None if success is None else bool(success), "return": float(ret),
                 "interrupted": bool(interrupted)}
        if "time" in arrays and len(arrays["time"]) > 1:  # the period that ran, beside the one asked for
            entry["tick_p50_s"] = float(np.median(np.diff(arrays["time"])))
        self.meta["episodes"].append(entry)
        self._write_index()
        return self.folder / name

    def _write_index(self) -> None:
        tmp = self.folder / (INDEX_FILE + ".tmp")
        tmp.write_text(json.dumps(self.meta, indent=2))
        tmp.replace(self.folder / INDEX_FILE)


def _check_index(index: Path, meta: dict) -> None:
    """What the reader relies on in ``recording.json``, checked on load: a NaN period would otherwise
    surface far away (a video writer's noise), a stray file name outside the folder."""
    period = meta.get("period_s")
    if period is not None and (isinstance(period, bool) or not isinstance(period, (int, float))
                               or not math.isfinite(period) or period <= 0):
        raise So101Error(f"{index}: period_s is {period!r}; a recording's control period is a positive number of "
                         f"seconds (fix it, or record again)")
    episodes = meta.get("episodes")
    if not isinstance(episodes, list):
        raise So101Error(f"{index}: 'episodes' is not a list; the index is damaged (record again)")
    for i, entry in enumerate(episodes):
        name = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise So101Error(f"{index}: episode {i} names no file; the index is damaged (record again)")
        if Path(name).name != name or name in (".", ".."):
            raise So101Error(f"{index}: episode {i}'s file {name!r} is not a file of the recording folder")


class Recording:
    """A recording folder opened for reading."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        index = self.folder / INDEX_FILE
        if not index.is_file():
            raise So101Error(f"{self.folder}: not a recording (no {INDEX_FILE}); record one with @record DIR")
        try:
            self.meta = json.loads(index.read_text())
        except json.JSONDecodeError as exc:
            raise So101Error(f"{index}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(self.meta, dict):
            raise So101Error(f"{index}: not a recording index (a JSON object with format {FORMAT})")
        if self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
            raise So101Error(f"{index}: format {self.meta.get('format')} v{self.meta.get('version')}, "
                             f"this version reads {FORMAT} v{VERSION}")
        _check_index(index, self.meta)
        self.spec = load_spec(self.folder / "spec.yaml")

    @property
    def episodes(self) -> list[dict]:
        return self.meta["episodes"]

    @property
    def description(self) -> RunDescription | None:
        """Where and how the run that recorded this happened (None: recorded before runs kept it)."""
        from so101_sim2real.control.description import RunDescription

        data = self.meta.get("description")
        return None if data is None else RunDescription.from_dict(data, f"{self.folder / INDEX_FILE}: description")

    def load(self, i: int) -> dict[str, np.ndarray]:
        """Episode ``i``'s arrays (without the JPEG bytes: see :meth:`rgb`)."""
        path = self.folder / self.episodes[i]["file"]
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # a file cut short by a kill
            raise So101Error(f"{path}: unreadable episode file ({exc})") from None

    def rgb(self, arrays: dict[str, np.ndarray], row: int) -> np.ndarray:
        """The camera image of one row, RGB uint8."""
        if "rgb_jpeg" not in arrays:
            raise So101Error(f"{self.folder}: this recording holds no camera images")
        off = arrays["rgb_offsets"]
        buf = arrays["rgb_jpeg"][off[row]:off[row + 1]]
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if bgr is None:
            raise So101Error(f"{self.folder}: row {row}: the camera image does not decode")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
