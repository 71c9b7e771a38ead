"""A recorded episode, read and checked before anything replays it: every row there, of the shape
the spec says, finite where the twin is posed from it."""

from __future__ import annotations

import numpy as np

from so101_sim2real.control.recording import Recording
from so101_sim2real.errors import So101Error
from so101_sim2real.interfaces import JOINT_NAMES

JOINTS = (len(JOINT_NAMES),)
ROW_SHAPES = {"time": ((), True), "joint_pos": (JOINTS, True), "joint_vel": (JOINTS, True), "tcp_pos": ((3,), True),
              "action": (None, True), "target": (JOINTS, True), "cube_pos": ((3,), True), "cube_quat": ((4,), True),
              "state": (None, False), "obs": (None, False)}


def load_episode(recording: Recording, episode: int) -> dict[str, np.ndarray]:
    """Episode ``episode``'s arrays, checked for what :func:`replay` needs (one-line errors): call it
    before making anything, so a bad episode leaves nothing behind."""
    n = len(recording.episodes)
    if not 0 <= episode < n:
        raise So101Error(f"{recording.folder}: episode {episode} out of range (the recording holds 0..{n - 1})")
    spec = recording.spec
    if "seg" not in spec.observation.channels:
        raise So101Error(f"{recording.folder}: the spec's channels {spec.observation.channels} hold no seg channel")
    arrays = recording.load(episode)
    where = f"{recording.folder / recording.episodes[episode]['file']}"
    for key in ("time", "joint_pos", "obs"):
        if key not in arrays:
            raise So101Error(f"{where}: no '{key}' to compare (recorded without the camera?)")
    rows = len(arrays["joint_pos"]) if arrays["joint_pos"].ndim else 0
    if rows == 0:
        raise So101Error(f"{where}: holds no rows (an episode ended before its first tick)")
    obs = spec.observation
    own = {"action": (spec.action.dim,), "state": (spec.state.size,),
           "obs": (len(obs.channels), *obs.image_size)}
    for key, (shape, finite) in ROW_SHAPES.items():
        if key in arrays:
            _check_rows(where, key, arrays[key], rows, own[key] if shape is None else shape, finite)
    if arrays["obs"].dtype != np.uint8:
        raise So101Error(f"{where}: obs is {arrays['obs'].dtype}, not uint8 frames")
    if "rgb_jpeg" in arrays and arrays.get("rgb_offsets", np.empty(0)).shape != (rows + 1,):
        raise So101Error(f"{where}: rgb_offsets does not index {rows} camera images; the file is damaged")
    return arrays


def _check_rows(where: str, key: str, values: np.ndarray, rows: int, shape: tuple[int, ...], finite: bool) -> None:
    if values.ndim == 0 or len(values) != rows:
        raise So101Error(f"{where}: holds {rows} joint rows and {len(values)} {key} rows; the file is damaged "
                         f"(record it again)")
    if values.shape[1:] != shape:
        if key == "obs":
            raise So101Error(f"{where}: obs holds frames of {'x'.join(map(str, values.shape[1:]))}, the spec's are "
                             f"{'x'.join(map(str, shape))} (its channels by its image_size)")
        raise So101Error(f"{where}: {key} is {values.shape}, not {(rows, *shape)}")
    if finite and not np.isfinite(values).all():
        raise So101Error(f"{where}: {key} is not finite (NaN or inf); the recording cannot be posed")
