"""Demonstrations for the demo store: recording folders, or LeRobotDataset v3 folders.

A recording (``so101 infer --ckpt scripted --record DIR``) holds what the store needs as it
stands. A LeRobot dataset does when it carries the policy's own features, as ``so101 export
lerobot`` writes them: ``observation.images.<channel>`` for each observation channel (lossless
images: class ids cannot survive a video codec), ``observation.state``, ``action`` (the policy's
4-D action) and ``next.reward``. Its episodes' success is ``next.success`` where declared, else
the last frame's ``next.done`` unless ``next.truncated`` says otherwise, else a reward on the last
frame (LeRobot's own RL recorder marks a success so). Anything it cannot map is refused in
one line naming the feature.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from so101_sim2real.control.recording import Recording
from so101_sim2real.datasets.lerobot_read import LeRobotFolder, is_dataset
from so101_sim2real.errors import So101Error
from so101_sim2real.spec import Spec

NEEDED = ("observation.state", "action", "next.reward")
PURPOSE = "the policy's observation, state, action and reward; 'so101 export lerobot' writes them"


@dataclass(frozen=True)
class DemoEpisode:
    """One demonstration: (N, C, H, W) uint8 frames, (N, S) states, (N, A) actions, (N,) task rewards."""

    name: str
    obs: np.ndarray
    state: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    success: bool


def is_demo_folder(folder: str | Path) -> bool:
    """A folder ``--demos`` can read: a recording or a LeRobot dataset."""
    return (Path(folder) / "recording.json").is_file() or is_dataset(folder)


def check_demo_folder(folder: str | Path, where: str = "@") -> None:
    """A one-line refusal, before anything runs, of a folder ``--demos`` cannot read: neither kind, or
    a dataset whose metadata is damaged or lacks the state, action or reward (the channels, which
    depend on the policy, are checked when the demos load)."""
    if not is_demo_folder(folder):
        raise So101Error(f"{where}demos {folder}: neither a recording (recording.json) nor a LeRobot dataset "
                         f"(meta/info.json); make demos with 'so101 infer --ckpt scripted --record {folder}'")
    if is_dataset(folder):
        LeRobotFolder(folder).require(NEEDED, PURPOSE)


def demo_episodes(folder: str | Path, spec: Spec) -> Iterator[DemoEpisode]:
    """The folder's episodes, checked against the policy's frame and state sizes."""
    episodes = _lerobot(Path(folder), spec) if is_dataset(folder) else _recording(Path(folder))
    frame_shape = (len(spec.observation.channels), *spec.observation.image_size)
    for ep in episodes:
        if ep.obs.shape[1:] != frame_shape or ep.state.shape[1] != spec.state.size:
            raise So101Error(f"{folder}: frames {ep.obs.shape[1:]} and state {ep.state.shape[1]} do not fit the "
                             f"policy's {frame_shape} and {spec.state.size}")
        if ep.action.shape[1] != spec.action.dim:
            raise So101Error(f"{folder}: actions of {ep.action.shape[1]} numbers; the policy acts with "
                             f"{spec.action.dim} ({spec.action.type})")
        yield ep


def _recording(folder: Path) -> Iterator[DemoEpisode]:
    recording = Recording(folder)
    for i, meta in enumerate(recording.episodes):
        arrays = recording.load(i)
        if "obs" not in arrays or "state" not in arrays:
            raise So101Error(f"{folder}: episode {meta['file']} has no observations or states; record demos "
                             f"with 'so101 infer --ckpt scripted --record DIR' (this version or newer)")
        yield DemoEpisode(meta["file"], arrays["obs"], arrays["state"], arrays["action"], arrays["reward"],
                          bool(meta["success"]))


def _lerobot(folder: Path, spec: Spec) -> Iterator[DemoEpisode]:
    data = LeRobotFolder(folder)
    images = [f"observation.images.{c}" for c in spec.observation.channels]
    data.require([*images, *NEEDED], PURPOSE)
    for key in images:
        f = data.features[key]
        if f.dtype != "image":
            raise So101Error(f"{folder}: {key} is a {f.dtype}; the policy's channels need lossless images "
                             f"(a video codec changes class ids and disparities)")
    verdicts = [k for k in ("next.success", "next.done", "next.truncated") if k in data.features]
    for i in range(len(data.episodes)):
        cols = data.episode(i, [*images, "observation.state", "action", "next.reward", *verdicts])
        obs = np.stack([_channel_first(cols[k]) for k in images], axis=1)
        yield DemoEpisode(f"episode {i}", obs, cols["observation.state"].astype(np.float32),
                          cols["action"].astype(np.float32), cols["next.reward"].astype(np.float64),
                          _success(cols))


def _channel_first(images: np.ndarray) -> np.ndarray:
    """Decoded (N, H, W, 1) images -> (N, H, W): one channel of the observation (a PNG decodes height
    first whatever order the feature's names declare)."""
    if images.ndim != 4 or images.shape[-1] != 1:
        raise So101Error(f"an observation channel's images decode to {images.shape[1:]}; each of seg and disparity "
                         f"is one channel")
    return images[..., 0]


def _success(cols: dict[str, np.ndarray]) -> bool:
    if "next.success" in cols:
        return bool(np.any(cols["next.success"]))
    if "next.done" in cols:
        truncated = bool(cols["next.truncated"][-1]) if "next.truncated" in cols else False
        return bool(cols["next.done"][-1]) and not truncated and (
            "next.truncated" in cols or float(cols["next.reward"][-1]) > 0)
    return float(cols["next.reward"][-1]) > 0
