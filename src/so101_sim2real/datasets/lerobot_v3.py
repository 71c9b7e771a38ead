"""LeRobotDataset v3.0 on disk, written with pyarrow and numpy alone (``lerobot_read`` reads it back).

The layout LeRobot 0.6 reads (docs/lerobot.md has the whole description)::

    meta/info.json                              codebase_version "v3.0", fps, features, totals, templates
    meta/stats.json                             min, max, mean, std, count, q01 ... q99 per feature
    meta/tasks.parquet                          task_index, with the task string as the (pandas) index
    meta/episodes/chunk-000/file-000.parquet    one row per episode: length, rows, video times, stats
    data/chunk-000/file-000.parquet             one row per frame: every feature but the videos
    videos/<key>/chunk-000/file-000.mp4         each video feature, episodes one after another

What LeRobot relies on and a naive writer misses: the data files hold exactly the declared
features (an extra column fails its load); a feature of shape (1,) is a scalar column; ``index``
is the row's position over all data files in path order; the task strings come back as the
pandas index of ``tasks.parquet``; a video frame is found at ``from_timestamp + timestamp`` to
within 0.1 ms, so videos run at exactly ``fps``. Statistics follow LeRobot's ``compute_stats``:
per episode (images sampled and scaled to [0, 1] per channel), then pooled, the quantiles of
the whole set being the smallest (q01-q50) and largest (q90, q99) of the episodes'.

LeRobot encodes AV1 through PyAV; this writer has OpenCV's MPEG-4 (``mp4v``), which LeRobot's
decoders read (it is only its re-encoding tools that refuse a codec they would not write).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from so101_sim2real.errors import So101Error

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk folder
DATA_FILE_MB, VIDEO_FILE_MB = 100, 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
IMAGE_NAMES = ["height", "width", "channels"]
# the columns every LeRobot writer adds after the dataset's own features
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


@dataclass(frozen=True)
class Feature:
    """One declared feature: a vector or scalar (numpy dtype), an ``image`` (PNG in the data file)
    or a ``video`` (an mp4 per key); images and videos are (H, W, C) uint8."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    names: list[str] | None = None
    info: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dtype": self.dtype, "shape": list(self.shape), "names": self.names}
        if self.info is not None:
            out["info"] = self.info
        return out


@dataclass
class Episode:
    """One episode to write: ``columns`` holds each non-video feature as (N, *shape) (images
    (N, H, W, C) uint8); ``videos`` each video feature's frames, RGB (H, W, 3) uint8, read once."""

    length: int
    task: str
    columns: dict[str, np.ndarray]
    videos: dict[str, Callable[[], Iterable[np.ndarray]]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- statistics


def sample_indices(n: int) -> np.ndarray:
    """The frames of an episode LeRobot takes for an image's statistics."""
    count = max(min(100, n), min(int(n ** 0.75), 10000))
    return np.round(np.linspace(0, n - 1, count)).astype(int)


def _downsample(image: np.ndarray) -> np.ndarray:
    """(H, W, C) as LeRobot thins a large image before its statistics."""
    big = max(image.shape[:2])
    step = int(big / 150) if big >= 300 else 1
    return image[::step, ::step]


def vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """(N, D) values -> each statistic with shape (D,); ``count`` (1,)."""
    v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    out = {"min": v.min(0), "max": v.max(0), "mean": v.mean(0), "std": v.std(0), "count": np.array([len(v)])}
    for q in QUANTILES:
        out[f"q{round(q * 100):02d}"] = np.quantile(v, q, axis=0) if len(v) > 1 else v.mean(0)
    return out


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """(K, H, W, C) sampled uint8 frames -> per channel statistics in [0, 1], shape (C, 1, 1);
    ``count`` is the frames sampled, as LeRobot counts them."""
    pixels = np.asarray(frames, dtype=np.float64).reshape(-1, frames.shape[-1]) / 255.0
    stats = vector_stats(pixels)
    stats = {k: v.reshape(-1, 1, 1) for k, v in stats.items() if k != "count"}
    stats["count"] = np.array([len(frames)])
    return stats


def aggregate_stats(episodes: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-episode statistics of one feature pooled as LeRobot pools them."""
    counts = np.stack([e["count"] for e in episodes]).astype(np.float64)
    means, stds = np.stack([e["mean"] for e in episodes]), np.stack([e["std"] for e in episodes])
    shape = (-1,) + (1,) * (means.ndim - 1)
    weights = counts.reshape(shape)
    total = weights.sum(0)
    mean = (means * weights).sum(0) / total
    variance = ((stds ** 2 + (means - mean) ** 2) * weights).sum(0) / total
    out = {"min": np.min([e["min"] for e in episodes], 0), "max": np.max([e["max"] for e in episodes], 0),
           "mean": mean, "std": np.sqrt(variance), "count": counts.sum(0).astype(np.int64)}
    for q in QUANTILES:
        name = f"q{round(q * 100):02d}"
        pick = np.min if q <= 0.5 else np.max
        out[name] = pick([e[name] for e in episodes], 0)
    return out


# ---------------------------------------------------------------------------------------------- arrow


def _arrow_type(f: Feature) -> pa.DataType:
    if f.dtype == "image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    scalar = pa.from_numpy_dtype(np.dtype(f.dtype))
    return scalar if tuple(f.shape) == (1,) else pa.list_(scalar, int(np.prod(f.shape)))


def _hf_type(f: Feature) -> dict[str, Any]:
    """The feature as the Hugging Face ``datasets`` metadata names it (the hub's viewer reads it)."""
    if f.dtype == "image":
        return {"_type": "Image"}
    value = {"dtype": f.dtype, "_type": "Value"}
    return value if tuple(f.shape) == (1,) else {"feature": value, "length": int(np.prod(f.shape)), "_type": "List"}


def _png(image: np.ndarray) -> bytes:
    img = image[..., 0] if image.shape[-1] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img))
    if not ok:
        raise So101Error("could not PNG-encode an image for the dataset")
    return buf.tobytes()


def _column(f: Feature, values: np.ndarray) -> pa.Array:
    if f.dtype == "image":
        return pa.array([{"bytes": _png(img), "path": f"frame-{i:06d}.png"}
                         for i, img in enumerate(values)], type=_arrow_type(f))
    flat = np.ascontiguousarray(values, dtype=np.dtype(f.dtype)).reshape(len(values), -1)
    if tuple(f.shape) == (1,):
        return pa.array(flat[:, 0], type=_arrow_type(f))
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])


def _pandas_metadata(index: str, columns: list[tuple[str, str, str]]) -> bytes:
    """pandas' schema metadata, so ``pandas.read_parquet`` gives ``index`` back as the index
    (LeRobot reads its tasks this way; pandas is not needed to write it)."""
    cols = [{"name": n, "field_name": n, "pandas_type": p, "numpy_type": t, "metadata": None} for n, p, t in columns]
    return json.dumps({"index_columns": [index], "column_indexes": [
        {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
         "metadata": {"encoding": "UTF-8"}}], "columns": cols, "creator": {"library": "pyarrow",
                                                                           "version": pa.__version__},
        "pandas_version": "2.2.3"}).encode()


def _to_lists(stats: dict[str, np.ndarray]) -> dict[str, list]:
    return {k: np.asarray(v).tolist() for k, v in stats.items()}


# ---------------------------------------------------------------------------------------------- writing


class _Rolling:
    """A (chunk, file) counter: a new file when the open one has grown past its size."""

    def __init__(self, limit_mb: float):
        self.chunk = self.file = 0
        self.limit = limit_mb * 1e6

    def next(self) -> None:
        self.file += 1
        if self.file >= CHUNKS_SIZE:
            self.chunk, self.file = self.chunk + 1, 0


class DatasetWriter:
    """Writes a dataset into ``root`` (an empty folder): :meth:`add` each episode, then :meth:`finish`."""

    def __init__(self, root: Path, fps: int, robot_type: str, features: list[Feature]):
        if fps <= 0:
            raise So101Error(f"a dataset's fps is a positive whole number, got {fps}")
        self.root, self.fps, self.robot_type = Path(root), int(fps), robot_type
        self.features = [*features, *(Feature(k, d["dtype"], tuple(d["shape"])) for k, d in DEFAULT_FEATURES.items())]
        self.tabular = [f for f in self.features if f.dtype != "video"]
        self.video_keys = [f.key for f in self.features if f.dtype == "video"]
        self.schema = pa.schema([(f.key, _arrow_type(f)) for f in self.tabular],
                                metadata={b"huggingface": json.dumps(
                                    {"info": {"features": {f.key: _hf_type(f) for f in self.tabular}}}).encode()})
        self.tasks: dict[str, int] = {}
        self.episodes: list[dict[str, Any]] = []
        self.stats: dict[str, list[dict[str, np.ndarray]]] = {f.key: [] for f in self.features}
        self.frames = 0
        self._data = _Rolling(DATA_FILE_MB)
        self._data_writer: pq.ParquetWriter | None = None
        self._video = {k: _Rolling(VIDEO_FILE_MB) for k in self.video_keys}
        self._video_writer: dict[str, tuple[cv2.VideoWriter, Path]] = {}
        self._video_frames = dict.fromkeys(self.video_keys, 0)

    def add(self, ep: Episode) -> None:
        n = ep.length
        if n < 1:
            raise So101Error("an episode without frames cannot be written to a dataset")
        index = len(self.episodes)
        task = self.tasks.setdefault(ep.task, len(self.tasks))
        columns = {**ep.columns, "timestamp": np.arange(n, dtype=np.float32) / np.float32(self.fps),
                   "frame_index": np.arange(n), "episode_index": np.full(n, index),
                   "index": np.arange(self.frames, self.frames + n), "task_index": np.full(n, task)}
        for f in self.tabular:
            if f.key not in columns:
                raise So101Error(f"an episode lacks the dataset's feature {f.key}")
            if len(columns[f.key]) != n:
                raise So101Error(f"{f.key}: {len(columns[f.key])} rows in an episode of {n} frames")
        row: dict[str, Any] = {"episode_index": index, "tasks": [ep.task], "length": n}
        row.update(self._write_data(columns, n))
        for key in self.video_keys:
            row.update(self._write_video(key, ep.videos[key], n))
        for f in self.tabular:
            values = columns[f.key]
            if f.dtype == "image":
                stats = image_stats(np.stack([_downsample(img) for img in values[sample_indices(n)]]))
            else:
                stats = vector_stats(np.asarray(values).reshape(n, -1))
            self.stats[f.key].append(stats)
        for f in self.features:
            row.update({f"stats/{f.key}/{k}": np.asarray(v).tolist() for k, v in self.stats[f.key][-1].items()})
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = 0, 0
        self.episodes.append(row)
        self.frames += n

    def _write_data(self, columns: dict[str, np.ndarray], n: int) -> dict[str, Any]:
        first = self.frames
        table = pa.Table.from_arrays([_column(f, columns[f.key]) for f in self.tabular], schema=self.schema)
        path = self._data_path()
        if self._data_writer is not None and path.stat().st_size >= self._data.limit:
            self._data_writer.close()
            self._data_writer = None
            self._data.next()
            path = self._data_path()
        if self._data_writer is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._data_writer = pq.ParquetWriter(path, self.schema, compression="snappy")
        self._data_writer.write_table(table)  # one row group per episode, as LeRobot writes them
        return {"data/chunk_index": self._data.chunk, "data/file_index": self._data.file,
                "dataset_from_index": first, "dataset_to_index": first + n}

    def _data_path(self) -> Path:
        return self.root / DATA_PATH.format(chunk_index=self._data.chunk, file_index=self._data.file)

    def _write_video(self, key: str, frames: Callable[[], Iterable[np.ndarray]], n: int) -> dict[str, Any]:
        roll, feature = self._video[key], next(f for f in self.features if f.key == key)
        if key in self._video_writer and self._video_writer[key][1].stat().st_size >= roll.limit:
            self._video_writer.pop(key)[0].release()
            roll.next()
            self._video_frames[key] = 0
        if key not in self._video_writer:
            path = self.root / VIDEO_PATH.format(video_key=key, chunk_index=roll.chunk, file_index=roll.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            h, w = feature.shape[:2]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (w, h))
            if not writer.isOpened():
                raise So101Error(f"{path}: OpenCV cannot write an MPEG-4 video here")
            self._video_writer[key] = (writer, path)
        writer = self._video_writer[key][0]
        keep = set(sample_indices(n).tolist())
        sampled, written = [], 0
        for i, rgb in enumerate(frames()):
            if rgb.shape != tuple(feature.shape):
                raise So101Error(f"{key}: frame {i} is {rgb.shape}, the feature is {tuple(feature.shape)}")
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            if i in keep:
                sampled.append(_downsample(rgb))
            written += 1
        if written != n:
            raise So101Error(f"{key}: {written} frames for an episode of {n}")
        self.stats[key].append(image_stats(np.stack(sampled)))
        start = self._video_frames[key]
        self._video_frames[key] += n
        return {f"videos/{key}/chunk_index": roll.chunk, f"videos/{key}/file_index": roll.file,
                f"videos/{key}/from_timestamp": start / self.fps, f"videos/{key}/to_timestamp": (start + n) / self.fps}

    def close(self) -> None:
        """Close the open data and video files (also after a failure)."""
        if self._data_writer is not None:
            self._data_writer.close()
            self._data_writer = None
        for writer, _ in self._video_writer.values():
            writer.release()
        self._video_writer.clear()

    def finish(self) -> None:
        """Close the files and write the metadata: nothing is a dataset before this."""
        if not self.episodes:
            raise So101Error("no episodes to write")
        self.close()
        meta = self.root / "meta"
        path = self.root / EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self.episodes), path, compression="snappy")
        tasks = sorted(self.tasks, key=self.tasks.__getitem__)
        table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
        table = table.replace_schema_metadata({b"pandas": _pandas_metadata(
            "task", [("task_index", "int64", "int64"), ("task", "unicode", "object")])})
        pq.write_table(table, meta / "tasks.parquet")
        stats = {key: _to_lists(aggregate_stats(per)) for key, per in self.stats.items()}
        (meta / "stats.json").write_text(json.dumps(stats, indent=4))
        (meta / "info.json").write_text(json.dumps(self.info(), indent=4))

    def info(self) -> dict[str, Any]:
        total = len(self.episodes)
        features = {f.key: f.to_dict() for f in self.features}
        return {"codebase_version": CODEBASE_VERSION, "robot_type": self.robot_type, "total_episodes": total,
                "total_frames": self.frames, "total_tasks": len(self.tasks), "chunks_size": CHUNKS_SIZE,
                "data_files_size_in_mb": DATA_FILE_MB, "video_files_size_in_mb": VIDEO_FILE_MB, "fps": self.fps,
                "splits": {"train": f"0:{total}"}, "data_path": DATA_PATH,
                "video_path": VIDEO_PATH if self.video_keys else None, "features": features}


def video_info(height: int, width: int, fps: int) -> dict[str, Any]:
    """The ``info`` of a video feature as LeRobot records it, for this writer's encoding."""
    return {"video.height": height, "video.width": width, "video.codec": "mpeg4", "video.pix_fmt": "yuv420p",
            "video.fps": fps, "video.channels": 3, "has_audio": False, "is_depth_map": False}


__all__ = ["CODEBASE_VERSION", "DEFAULT_FEATURES", "DatasetWriter", "Episode", "Feature", "aggregate_stats",
           "image_stats", "sample_indices", "vector_stats", "video_info"]
