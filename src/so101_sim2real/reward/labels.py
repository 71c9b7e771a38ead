"""Reward labels: which frames of a recorded episode show success, and who said so.

Kept apart from the model so that labelling (by a person, or by the twin's rule) needs no
network, and so the file's format and its checks live in one place. The file
(``labels.json`` beside a recording, or any path)::

    {"format": "so101-reward-labels", "version": 1,
     "episodes": [{"episode": 0, "first_success": 27, "source": "twin"},
                  {"episode": 1, "first_success": null, "source": "person"}]}

``episode`` is the number of ``episode_NNNN.npz``; ``first_success`` the first row from
which every frame to the end of the episode shows success, ``null`` when none does;
``source`` says who decided (``twin`` or ``person``). An episode left out is unlabelled
and not used. :func:`label_from_twin` derives them on the twin (its rule is there); a
person sets them with ``so101 reward label`` and a contact sheet of the episode.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from so101_sim2real.control.recording import Recording
from so101_sim2real.errors import So101Error, did_you_mean
from so101_sim2real.sim.task import TaskConfig

Source = Literal["twin", "person"]
SOURCES: tuple[str, ...] = ("twin", "person")
LABELS_FILE, LABELS_FORMAT, LABELS_VERSION = "labels.json", "so101-reward-labels", 1
_LABELS_ABOUT = ("first_success: the first row from which every frame to the end of the episode shows success (the "
                 "cube grasped and lifted); null: no frame does. source: twin (the simulator) or person. Episodes "
                 "not listed are unlabelled and not used.")


@dataclass(frozen=True)
class EpisodeLabel:
    """One episode's label: rows ``>= first_success`` show success; None: no row does."""

    episode: int
    first_success: int | None
    source: Source

    def positives(self, rows: int) -> np.ndarray:
        """(rows,) bool: which rows show success."""
        flags = np.zeros(rows, dtype=bool)
        if self.first_success is not None:
            flags[self.first_success:] = True
        return flags


@dataclass
class Labels:
    """The labels of one recording's episodes, by episode number."""

    episodes: dict[int, EpisodeLabel] = field(default_factory=dict)
    origin: str = "twin"  # the labels file's path, or "twin" when derived in memory

    def to_json(self) -> str:
        entries = [asdict(self.episodes[k]) for k in sorted(self.episodes)]
        body = ",\n".join("    " + json.dumps(e) for e in entries)  # one episode a line: easy to edit
        head = {"format": LABELS_FORMAT, "version": LABELS_VERSION, "about": _LABELS_ABOUT}
        lines = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in head.items())
        return "{\n" + lines + ',\n  "episodes": [\n' + body + ("\n  ]\n}\n" if entries else "]\n}\n")


def _episode_positions(recording: Recording) -> dict[int, int]:
    """Episode number -> its position in the recording's index."""
    return {int(e["index"]): i for i, e in enumerate(recording.episodes)}


def twin_first_success(cube_z: np.ndarray, gripper: np.ndarray, success: bool | None,
                       task: TaskConfig | None = None) -> int | None:
    """The twin's rule for one episode's ``first_success`` (see :func:`label_from_twin`)."""
    task = task or TaskConfig()
    if not success or len(cube_z) == 0:
        return None
    # Row i's frame was taken before row i's action, so it shows the cube where row i-1's
    # step left it (row 0: where the reset left it, which is on the table).
    shown_z = np.concatenate([[-np.inf], cube_z[:-1]])
    lifted = (shown_z > task.lift_height_m) & (gripper < task.closed_below_rad)
    if not lifted[-1]:
        return None
    not_lifted = np.flatnonzero(~lifted)
    return int(not_lifted[-1] + 1) if not_lifted.size else 0


def label_from_twin(recording: Recording, task: TaskConfig | None = None) -> Labels:
    """Labels of a twin recording, from the simulator's own record.

    The rule: in an episode the task judged a success, the frames from the first row of
    the last unbroken run of rows where the frame shows the cube above the task's
    ``lift_height_m`` (0.08 m) with the gripper closed (``joint_pos`` of the gripper below
    ``closed_below_rad``), up to the episode's last row, are success; every other frame is
    not. "Shows": row i's frame was taken before row i's action, so it shows the cube at
    ``cube_pos[i - 1]`` (the recorded ``cube_pos`` is after the row's step). Episodes that
    did not succeed are all negatives; interrupted episodes get no label (their outcome is
    unknown). The gripper's closure stands in for the task's grasp test, whose pad
    contacts are not recorded; a cube 8 cm above the table is held in any case.
    """
    labels = Labels(origin="twin")
    for position, meta in enumerate(recording.episodes):
        if meta.get("interrupted"):
            continue
        arrays = recording.load(position)
        if "cube_pos" not in arrays or meta.get("success") is None:
            how = f"'so101 reward label {recording.folder} --episode K --first-success ROW'"
            raise So101Error(f"{recording.folder}: not a twin recording (no cube positions or no judged success); "
                             f"label it by hand: {how}")
        first = twin_first_success(arrays["cube_pos"][:, 2], arrays["joint_pos"][:, 5], meta["success"], task)
        labels.episodes[int(meta["index"])] = EpisodeLabel(int(meta["index"]), first, "twin")
    return labels


def labels_path(recording: Recording, path: str | Path | None = None) -> Path:
    """Where a recording's labels live: ``path`` if given, else ``labels.json`` in its folder."""
    return Path(path) if path is not None else recording.folder / LABELS_FILE


def _check_keys(where: str, data: dict, known: Sequence[str], required: Sequence[str]) -> None:
    for key in data:
        if key not in known:
            hint = did_you_mean(key, known, f" (known: {', '.join(known)})")
            raise So101Error(f"{where}: unknown key '{key}'{hint}")
    for key in required:
        if key not in data:
            raise So101Error(f"{where}: missing '{key}'")


def load_labels(recording: Recording, path: str | Path | None = None) -> Labels:
    """Read and check a labels file against its recording; any problem is one line."""
    path = labels_path(recording, path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise So101Error(f"{path}: no labels file; write one with 'so101 reward label {recording.folder}'") from None
    except OSError as exc:
        raise So101Error(f"{path}: cannot read the labels ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise So101Error(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise So101Error(f"{path}: expected a JSON object with 'format' and 'episodes'")
    _check_keys(str(path), data, ("format", "version", "about", "episodes"), ("format", "episodes"))
    if data["format"] != LABELS_FORMAT or data.get("version", LABELS_VERSION) != LABELS_VERSION:
        raise So101Error(f"{path}: format {data['format']!r} v{data.get('version')}, expected {LABELS_FORMAT!r} "
                         f"v{LABELS_VERSION}")
    if not isinstance(data["episodes"], list):
        raise So101Error(f"{path}: 'episodes' must be a list of {{episode, first_success, source}}")
    steps = {int(e["index"]): int(e["steps"]) for e in recording.episodes}
    labels = Labels(origin=str(path))
    for n, entry in enumerate(data["episodes"]):
        where = f"{path}: episodes[{n}]"
        if not isinstance(entry, dict):
            raise So101Error(f"{where}: expected an object {{episode, first_success, source}}, got {entry!r}")
        _check_keys(where, entry, ("episode", "first_success", "source"), ("episode", "first_success", "source"))
        k, first, source = entry["episode"], entry["first_success"], entry["source"]
        if not isinstance(k, int) or isinstance(k, bool) or k not in steps:
            raise So101Error(f"{where}: episode {k!r} is not in {recording.folder} (episodes: {_span(steps)})")
        if k in labels.episodes:
            raise So101Error(f"{where}: episode {k} is labelled twice")
        if first is not None and (not isinstance(first, int) or isinstance(first, bool)
                                  or not 0 <= first < steps[k]):
            raise So101Error(f"{where}: first_success {first!r} must be a row 0..{steps[k] - 1} of episode {k}, or "
                             f"null")
        if source not in SOURCES:
            raise So101Error(f"{where}: source {source!r} must be one of {', '.join(SOURCES)}"
                             f"{did_you_mean(source, SOURCES)}")
        labels.episodes[k] = EpisodeLabel(k, first, source)
    return labels


def _span(numbers: Sequence[int] | dict) -> str:
    numbers = sorted(numbers)
    if not numbers:
        return "none"
    return f"{numbers[0]}..{numbers[-1]}" if numbers == list(range(numbers[0], numbers[-1] + 1)) else \
        ", ".join(map(str, numbers))


def save_labels(labels: Labels, path: str | Path) -> Path:
    """Write a labels file by a rename, so a reader never sees half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(labels.to_json())
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise So101Error(f"{path}: cannot write the labels ({exc.strerror})") from None
    labels.origin = str(path)
    return path


def labels_for(recording: Recording, path: str | Path | None = None) -> Labels:
    """A recording's labels: its labels file if there is one (or ``path``), else the twin's rule."""
    if path is not None or labels_path(recording).is_file():
        return load_labels(recording, path)
    if not recording.episodes:
        raise So101Error(f"{recording.folder}: the recording has no episodes")
    if "cube_pos" not in recording.load(0):
        raise So101Error(f"{recording.folder}: no labels ({LABELS_FILE}) and not a twin recording; label it with "
                         f"'so101 reward label {recording.folder} --episode K --first-success ROW'")
    return label_from_twin(recording)


def set_label(recording: Recording, episode: int, first_success: int | None,
              path: str | Path | None = None) -> EpisodeLabel:
    """A person's label for one episode, written into the labels file (made if missing)."""
    target = labels_path(recording, path)
    labels = load_labels(recording, target) if target.is_file() else Labels(origin=str(target))
    steps = {int(e["index"]): int(e["steps"]) for e in recording.episodes}
    if episode not in steps:
        raise So101Error(f"@episode {episode}: not in {recording.folder} (episodes: {_span(steps)})")
    if first_success is not None and not 0 <= first_success < steps[episode]:
        raise So101Error(f"@first_success {first_success}: episode {episode} has rows 0..{steps[episode] - 1}")
    labels.episodes[episode] = EpisodeLabel(episode, first_success, "person")
    save_labels(labels, target)
    return labels.episodes[episode]


def write_twin_labels(recording: Recording, path: str | Path | None = None) -> tuple[Labels, int]:
    """The twin's labels written to the labels file; a person's labels there are kept.

    Returns the labels written and how many of them were a person's.
    """
    target = labels_path(recording, path)
    twin = label_from_twin(recording)
    kept = 0
    if target.is_file():
        for k, label in load_labels(recording, target).episodes.items():
            if label.source == "person":
                twin.episodes[k], kept = label, kept + 1
    save_labels(twin, target)
    return twin, kept
