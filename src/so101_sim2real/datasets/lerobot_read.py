"""LeRobotDataset v3 folders read back (``--demos``): the layout ``lerobot_v3`` writes, as LeRobot's
own reader takes it (docs/lerobot.md). Every way a folder can be wrong is one line."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from so101_sim2real.datasets.lerobot_v3 import DEFAULT_FEATURES, Feature
from so101_sim2real.errors import So101Error


class LeRobotFolder:
    """A LeRobotDataset v3 folder opened for reading: its info, episodes, and each episode's frames.

    Every way a folder can be wrong (not a dataset, another version, a damaged file) is one
    :class:`So101Error` naming the file."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise So101Error(f"{self.root}: not a LeRobot dataset (no meta/info.json)")
        try:
            self.info = json.loads(info_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise So101Error(f"{info_path}: not valid JSON ({exc})") from None
        version = str(self.info.get("codebase_version", "")) if isinstance(self.info, dict) else ""
        if not version.startswith("v3."):
            raise So101Error(f"{info_path}: codebase_version {version or 'missing'}; this reads LeRobotDataset v3 "
                             f"(convert older datasets with LeRobot's convert_dataset_v21_to_v30)")
        self.features = _features(self.info, info_path)
        fps = self.info.get("fps")
        if isinstance(fps, bool) or not isinstance(fps, int) or fps <= 0:
            raise So101Error(f"{info_path}: fps is {fps!r}; a dataset's fps is a positive whole number")
        self.fps = fps
        files = sorted((self.root / "meta" / "episodes").glob("*/*.parquet"))
        if not files:
            raise So101Error(f"{self.root}: no episodes (meta/episodes/ holds no parquet file)")
        self.episodes = _read_tables(files, "episodes")
        if self.episodes.num_rows == 0:
            raise So101Error(f"{self.root}: its episodes table is empty")
        for column in ("dataset_from_index", "dataset_to_index", "length"):
            if column not in self.episodes.column_names:
                raise So101Error(f"{files[0]}: no {column} column; the episodes table is damaged")
        self._data_files = sorted((self.root / "data").glob("*/*.parquet"))
        self._data: pa.Table | None = None

    @property
    def data(self) -> pa.Table:
        """Every frame, the data files in path order (read once)."""
        if self._data is None:
            self._data = _read_tables(self._data_files, "data")
        return self._data

    def require(self, keys: Iterable[str], purpose: str) -> None:
        """One line naming the features ``purpose`` needs that the dataset does not declare."""
        missing = [k for k in keys if k not in self.features]
        if missing:
            raise So101Error(f"{self.root}: no {', '.join(missing)} feature{'s' if len(missing) > 1 else ''} "
                             f"({purpose}); it has {', '.join(k for k in self.features if k not in DEFAULT_FEATURES)}")

    def episode(self, i: int, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """Episode ``i``'s frames of the non-video ``keys`` (images decoded to (N, H, W, C) uint8)."""
        row = self.episodes.slice(i, 1).to_pylist()[0]
        start, stop = int(row["dataset_from_index"]), int(row["dataset_to_index"])
        data = self.data
        if stop > data.num_rows or start < 0 or stop <= start:
            raise So101Error(f"{self.root}: episode {i} spans rows {start}-{stop}, the data holds {data.num_rows}")
        part = data.slice(start, stop - start)
        out = {}
        for key in keys:
            if key not in part.column_names:
                raise So101Error(f"{self.root}: the data has no {key} column, which info.json declares")
            try:
                out[key] = self._values(key, part.column(key))
            except (pa.ArrowException, ValueError, TypeError, KeyError) as exc:
                f = self.features[key]
                raise So101Error(f"{self.root}: {key} does not hold {f.dtype} {list(f.shape)} as declared "
                                 f"({str(exc).splitlines()[0][:120]})") from None
        return out

    def _values(self, key: str, column: pa.ChunkedArray) -> np.ndarray:
        f = self.features[key]
        if f.dtype == "image":
            return np.stack([_decode_png(cell["bytes"], f, self.root) for cell in column.to_pylist()])
        flat = column.combine_chunks()
        if pa.types.is_fixed_size_list(flat.type) or pa.types.is_list(flat.type):
            flat = flat.flatten()
        values = flat.to_numpy(zero_copy_only=False).astype(np.dtype(f.dtype))
        return values.reshape(len(column), *f.shape) if tuple(f.shape) != (1,) else values.reshape(len(column))

    def video_frames(self, key: str, i: int) -> Iterator[np.ndarray]:
        """Episode ``i``'s frames of video ``key``, RGB, by their place in the file (from_timestamp x fps)."""
        row = self.episodes.slice(i, 1).to_pylist()[0]
        path = self.root / str(self.info["video_path"]).format(
            video_key=key, chunk_index=row[f"videos/{key}/chunk_index"], file_index=row[f"videos/{key}/file_index"])
        first = round(row[f"videos/{key}/from_timestamp"] * self.fps)
        cap = cv2.VideoCapture(str(path))
        try:
            cap.set(cv2.CAP_PROP_POS_FRAMES, first)
            for _ in range(int(row["length"])):
                ok, bgr = cap.read()
                if not ok:
                    raise So101Error(f"{path}: ends before episode {i}'s frames do")
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()


def _features(info: dict, path: Path) -> dict[str, Feature]:
    """info.json's features, each checked: a dtype LeRobot knows and a shape of positive whole numbers."""
    raw = info.get("features")
    if not isinstance(raw, dict) or not raw:
        raise So101Error(f"{path}: features is not a mapping of feature names to their dtype and shape")
    out = {}
    for key, value in raw.items():
        dtype = value.get("dtype") if isinstance(value, dict) else None
        shape = value.get("shape") if isinstance(value, dict) else None
        if not isinstance(shape, list) or not shape or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise So101Error(f"{path}: {key}: shape {shape!r} is not a list of positive whole numbers")
        if dtype not in ("image", "video", "string", "language"):
            try:
                np.dtype(dtype)
            except TypeError:
                raise So101Error(f"{path}: {key}: dtype {dtype!r} is not one LeRobot writes") from None
        names = value.get("names")
        out[key] = Feature(key, str(dtype), tuple(shape), names if isinstance(names, list) else None,
                           value.get("info") if isinstance(value.get("info"), dict) else None)
    return out


def _read_tables(paths: list[Path], what: str) -> pa.Table:
    tables = []
    for path in paths:
        try:
            tables.append(pq.read_table(path))
        except (pa.ArrowException, OSError) as exc:
            raise So101Error(f"{path}: unreadable {what} file ({str(exc).splitlines()[0]})") from None
    if not tables:
        return pa.table({})
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as exc:
        raise So101Error(f"{paths[0].parent.parent}: the {what} files disagree ({exc})") from None


def _decode_png(raw: bytes | None, f: Feature, root: Path) -> np.ndarray:
    image = None if raw is None else cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise So101Error(f"{root}: an image of {f.key} does not decode")
    if image.ndim == 2:
        image = image[..., None]
    elif image.shape[-1] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def is_dataset(folder: str | Path) -> bool:
    """A LeRobot dataset folder (what ``--demos`` tells apart from a recording)."""
    return (Path(folder) / "meta" / "info.json").is_file()
