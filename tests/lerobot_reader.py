"""A LeRobotDataset v3 reader written from the format's description alone (docs/lerobot.md, taken
from LeRobot's own reader), sharing no code with the toolkit's writer: it checks every invariant
LeRobot's loader relies on and returns each episode's frames.

pyarrow for the parquet files, the JSON files as JSON, OpenCV for the videos' frame counts and
presentation times.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DEFAULTS = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
            "task_index": "int64"}
STATS = {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
INFO_KEYS = {"codebase_version", "fps", "features", "total_episodes", "total_frames", "total_tasks", "chunks_size",
             "data_files_size_in_mb", "video_files_size_in_mb", "data_path", "video_path", "robot_type", "splits"}


class Invalid(AssertionError):
    """The folder breaks the format."""


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Invalid(what)


def _arrow_matches(ft: dict, typ: pa.DataType) -> bool:
    if ft["dtype"] == "image":
        return pa.types.is_struct(typ) and {typ.field(i).name for i in range(typ.num_fields)} == {"bytes", "path"}
    want = pa.from_numpy_dtype(np.dtype(ft["dtype"]))
    if list(ft["shape"]) == [1]:
        return typ == want
    return pa.types.is_fixed_size_list(typ) and typ.list_size == int(np.prod(ft["shape"])) and typ.value_type == want


def read(root: Path) -> dict:
    """The whole dataset: {"info", "stats", "tasks", "episodes" (list of dicts), "frames" (one dict of
    numpy columns per episode, images decoded), "videos" ({key: [frame count per episode]})}."""
    root = Path(root)
    info = json.loads((root / "meta" / "info.json").read_text())
    check(set(info) >= INFO_KEYS, f"info.json lacks {INFO_KEYS - set(info)}")
    check(info["codebase_version"] == "v3.0", "codebase_version")
    check(isinstance(info["fps"], int) and info["fps"] > 0, "fps is a positive int")
    check(info["total_episodes"] > 0 and info["total_tasks"] > 0, "totals above zero")
    check(info["splits"] == {"train": f"0:{info['total_episodes']}"}, "splits")
    features = info["features"]
    for key, dtype in DEFAULTS.items():
        check(features.get(key, {}).get("dtype") == dtype and features[key]["shape"] == [1], f"default feature {key}")
    for key, ft in features.items():
        check("/" not in key and {"dtype", "shape", "names"} <= set(ft), f"feature {key}")
        if ft["dtype"] in ("image", "video"):
            check(ft["names"] is not None and len(ft["shape"]) == 3, f"{key}: a visual feature has 3 named dims")
    fps = info["fps"]

    # data: exactly the non-video features, in path order, index = position
    data_files = sorted((root / "data").glob("*/*.parquet"))
    check(bool(data_files), "data files")
    data = pa.concat_tables([pq.read_table(p) for p in data_files])
    tabular = [k for k, ft in features.items() if ft["dtype"] != "video"]
    check(sorted(data.column_names) == sorted(tabular), f"data columns {data.column_names} vs features {tabular}")
    for key in tabular:
        check(_arrow_matches(features[key], data.schema.field(key).type), f"{key}: arrow type "
                                                                          f"{data.schema.field(key).type}")
    check(data.num_rows == info["total_frames"], "total_frames")
    index = data.column("index").to_numpy()
    check(np.array_equal(index, np.arange(data.num_rows)), "index is the row position")

    # tasks: the strings are the pandas index
    tasks_table = pq.read_table(root / "meta" / "tasks.parquet")
    pandas_meta = json.loads(tasks_table.schema.metadata[b"pandas"])
    check(pandas_meta["index_columns"] == ["task"], "tasks.parquet's index is the task")
    tasks = tasks_table.column("task").to_pylist()
    check(tasks_table.column("task_index").to_pylist() == list(range(len(tasks))), "task_index 0..T-1")
    check(len(tasks) == info["total_tasks"], "total_tasks")

    # episodes: in order, covering the data, videos in their files' time
    ep_files = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    ep_table = pa.concat_tables([pq.read_table(p) for p in ep_files])
    types = ep_table.schema
    for column in ("episode_index", "length", "dataset_from_index", "dataset_to_index", "data/chunk_index",
                   "data/file_index", "meta/episodes/chunk_index", "meta/episodes/file_index"):
        check(types.field(column).type == pa.int64(), f"episodes: {column} is int64")
    check(types.field("tasks").type in (pa.list_(pa.string()), pa.list_(pa.large_string())), "episodes: tasks")
    for key in [k for k, ft in features.items() if ft["dtype"] == "video"]:
        for end in ("from_timestamp", "to_timestamp"):
            check(types.field(f"videos/{key}/{end}").type == pa.float64(), f"episodes: {key} {end} is double")
    episodes = ep_table.to_pylist()
    check(len(episodes) == info["total_episodes"], "total_episodes")
    video_keys = [k for k, ft in features.items() if ft["dtype"] == "video"]
    frames, videos, cursor, video_time = [], {k: [] for k in video_keys}, 0, {}
    for i, ep in enumerate(episodes):
        check(ep["episode_index"] == i, "episodes in order")
        start, stop, n = ep["dataset_from_index"], ep["dataset_to_index"], ep["length"]
        check(start == cursor and stop - start == n, f"episode {i} rows")
        cursor = stop
        part = data.slice(start, n)
        cols = {}
        for key in tabular:
            cols[key] = _values(features[key], part.column(key))
        check(bool(np.all(cols["episode_index"] == i)), f"episode {i}: episode_index")
        check(np.array_equal(cols["frame_index"], np.arange(n)), f"episode {i}: frame_index")
        check(np.array_equal(cols["timestamp"], (np.arange(n) / fps).astype(np.float32)), f"episode {i}: timestamps")
        check(set(ep["tasks"]) == {tasks[t] for t in cols["task_index"]}, f"episode {i}: tasks")
        for key in video_keys:
            file = (ep[f"videos/{key}/chunk_index"], ep[f"videos/{key}/file_index"])
            begin, end = ep[f"videos/{key}/from_timestamp"], ep[f"videos/{key}/to_timestamp"]
            check(abs(begin - video_time.get((key, file), 0.0)) < 1e-9, f"episode {i}: {key} starts where the "
                                                                        f"file's previous episode ended")
            check(abs(end - begin - n / fps) < 1e-6, f"episode {i}: {key} lasts its frames")
            video_time[(key, file)] = end
            videos[key].append((file, begin, n))
        frames.append(cols)
    check(cursor == data.num_rows, "episodes cover the data")

    # videos: each file's frames, at fps, at i / fps (within LeRobot's 0.1 ms)
    for key in video_keys:
        for file in sorted({f for f, _, _ in videos[key]}):
            path = root / info["video_path"].format(video_key=key, chunk_index=file[0], file_index=file[1])
            cap = cv2.VideoCapture(str(path))
            check(cap.isOpened(), f"{path} opens")
            check(round(cap.get(cv2.CAP_PROP_FPS)) == fps, f"{path}: fps")
            times = []
            while True:
                ok, _ = cap.read()
                if not ok:
                    break
                times.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000)
            cap.release()
            expected = sum(n for f, _, n in videos[key] if f == file)
            check(len(times) == expected, f"{path}: {len(times)} frames, the episodes say {expected}")
            check(np.allclose(times, np.arange(expected) / fps, atol=1e-4), f"{path}: frame times")

    stats = json.loads((root / "meta" / "stats.json").read_text())
    for key, ft in features.items():
        check(set(stats.get(key, {})) == STATS, f"stats of {key}")
        if ft["dtype"] in ("image", "video"):
            channels = ft["shape"][ft["names"].index("channels")] if "channels" in ft["names"] else ft["shape"][-1]
            check(np.array(stats[key]["mean"]).shape == (channels, 1, 1), f"{key}: per channel stats")
            check(np.min(stats[key]["min"]) >= 0 and np.max(stats[key]["max"]) <= 1, f"{key}: stats in [0, 1]")
        else:
            check(stats[key]["count"] == [info["total_frames"]], f"{key}: count")
    return {"info": info, "stats": stats, "tasks": tasks, "episodes": episodes, "frames": frames, "videos": videos}


def _values(ft: dict, column: pa.ChunkedArray) -> np.ndarray:
    if ft["dtype"] == "image":
        out = []
        for cell in column.to_pylist():
            img = cv2.imdecode(np.frombuffer(cell["bytes"], np.uint8), cv2.IMREAD_UNCHANGED)
            out.append(img[..., None] if img.ndim == 2 else img)
        return np.stack(out)
    if list(ft["shape"]) == [1]:
        return column.to_numpy()
    return np.stack(column.to_pylist()).astype(np.dtype(ft["dtype"]))
