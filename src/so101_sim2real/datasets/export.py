"""A recording or a HIL-SERL run as a LeRobotDataset v3 (``so101 export lerobot``).

Each control tick is one frame. The features (names as LeRobot's SO-101 and RL tools use them):

- ``observation.state`` (18,): the policy's state, named by the spec's fields;
- ``observation.joints`` (6,): the measured joints in LeRobot's follower units (degrees from the
  middle of each calibrated range, the gripper 0-100 of its range), named ``shoulder_pan.pos`` ...;
- ``action`` (4,): the policy's action ``delta_x, delta_y, delta_z, gripper`` in [-1, 1], the one
  executed (the person's during an intervention);
- ``observation.images.wrist``: the camera's RGB, a video, where the recording kept it;
- ``observation.images.seg`` and ``observation.images.disparity``: the newest observation frame's
  two channels, 84x84 PNG (lossless: seg is the class ids 0-4, disparity 0-255 near-high);
- ``next.reward`` (the task's reward), ``next.done`` (the task succeeded on this frame), ``next.truncated``
  (the episode ended otherwise), ``next.success`` (the episode's verdict on its last frame);
- ``complementary_info.is_intervention`` (0/1 float, as LeRobot's replay buffer writes it): a person
  or the scripted expert was in control; a run also keeps ``complementary_info.learner_reward``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from so101_sim2real.control.recording import Recording
from so101_sim2real.datasets.lerobot_v3 import DatasetWriter, Episode, Feature, video_info
from so101_sim2real.errors import So101Error
from so101_sim2real.files import write_folder
from so101_sim2real.hardware.joint_calibration import ArmCalibration
from so101_sim2real.interfaces import JOINT_NAMES
from so101_sim2real.spec import Spec

ROBOT_TYPE = "so101_follower"
ACTION_NAMES = ["delta_x", "delta_y", "delta_z", "gripper"]
RPY = ("roll", "pitch", "yaw")
XYZ = ("x", "y", "z")


@dataclass(frozen=True)
class Source:
    """What is exported: a recording folder, or a run folder's episodes."""

    folder: Path
    recording: Recording
    kind: str  # "recording" or "run"


@dataclass(frozen=True)
class ExportSummary:
    out: Path
    kind: str
    episodes: int
    frames: int
    fps: int
    period_s: float
    features: list[str]
    successes: int
    interventions: int


def open_source(folder: str | Path) -> Source:
    """A recording folder (``recording.json``) or a HIL-SERL run folder (``run.yaml`` + ``episodes/``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise So101Error(f"{folder}: no such folder; export a recording (@record DIR) or a run folder")
    if (folder / "recording.json").is_file():
        return Source(folder, Recording(folder), "recording")
    if (folder / "run.yaml").is_file():
        if not (folder / "episodes" / "recording.json").is_file():
            raise So101Error(f"{folder}: a run folder without finished episodes; nothing to export yet")
        return Source(folder, Recording(folder / "episodes"), "run")
    raise So101Error(f"{folder}: neither a recording (recording.json) nor a HIL-SERL run folder (run.yaml)")


def state_names(spec: Spec) -> list[str]:
    """One name per state entry: ``joint_pos.shoulder_pan``, ``tcp_pos.x``, ``tcp_rpy.roll``, ..."""
    names = []
    for f in spec.state.fields:
        parts = {6: JOINT_NAMES, 3: RPY if "rpy" in f.name else XYZ}.get(f.size, [str(i) for i in range(f.size)])
        names += [f"{f.name}.{p}" for p in parts]
    return names


def lerobot_joints(calibration: ArmCalibration, joint_pos: np.ndarray) -> np.ndarray:
    """Sim radians (N, 6) -> LeRobot's follower units: degrees from the middle of each calibrated range
    (its ``use_degrees`` default), the gripper 0-100 of its range."""
    out = np.empty_like(np.asarray(joint_pos, dtype=np.float64))
    for j, name in enumerate(JOINT_NAMES):
        m, s = calibration.motors[name], calibration.sim[name]
        lerobot_rad = (joint_pos[:, j] - s.offset_rad) * s.sign
        degrees = np.degrees(-lerobot_rad if m.drive_mode else lerobot_rad)
        if name == "gripper":
            raw = m.mid + degrees * 4095 / 360
            out[:, j] = np.clip((raw - m.range_min) / max(1, m.range_max - m.range_min) * 100, 0, 100)
        else:
            out[:, j] = degrees
    return out


def _features(spec: Spec, arrays: dict[str, np.ndarray], kind: str, fps: int) -> list[Feature]:
    features = [Feature("observation.state", "float32", (spec.state.size,), state_names(spec)),
                Feature("observation.joints", "float32", (6,), [f"{j}.pos" for j in JOINT_NAMES]),
                Feature("action", "float32", (spec.action.dim,), ACTION_NAMES[:spec.action.dim])]
    if "rgb_jpeg" in arrays:
        h, w = spec.observation.source_size
        features.append(Feature("observation.images.wrist", "video", (h, w, 3), ["height", "width", "channels"],
                                video_info(h, w, fps)))
    if "obs" in arrays:
        h, w = spec.observation.image_size
        for channel in spec.observation.channels:
            features.append(Feature(f"observation.images.{channel}", "image", (h, w, 1),
                                    ["height", "width", "channels"]))
    features += [Feature("next.reward", "float32", (1,)), Feature("next.done", "bool", (1,)),
                 Feature("next.truncated", "bool", (1,)), Feature("next.success", "bool", (1,)),
                 Feature("complementary_info.is_intervention", "float32", (1,))]
    if kind == "run":
        features.append(Feature("complementary_info.learner_reward", "float32", (1,)))
    return features


def _columns(spec: Spec, arrays: dict[str, np.ndarray], meta: dict, kind: str,
             calibration: ArmCalibration) -> dict[str, np.ndarray]:
    n = len(arrays["action"])
    success = bool(meta.get("success"))
    done = np.zeros(n, bool)
    if kind == "run":
        done = np.asarray(arrays["terminated"], bool)
    elif success:
        done[-1] = True
    last = np.zeros(n, bool)
    last[-1] = True
    joints = lerobot_joints(calibration, arrays["joint_pos"])
    cols = {"observation.state": arrays["state"], "observation.joints": joints, "action": arrays["action"],
            "next.reward": arrays["reward"], "next.done": done,
            "next.truncated": last & ~done, "next.success": last & success,
            "complementary_info.is_intervention": np.asarray(arrays.get("is_intervention", np.zeros(n)), np.float32)}
    if "obs" in arrays:
        for c, channel in enumerate(spec.observation.channels):
            cols[f"observation.images.{channel}"] = arrays["obs"][:, c, :, :, None]
    if kind == "run":
        cols["complementary_info.learner_reward"] = arrays["learner_reward"]
    return cols


def export_lerobot(source: Source, out: Path, calibration: ArmCalibration, task: str | None = None,
                   overwrite: bool = False, progress: Callable[[Iterable[int]], Iterable[int]] = lambda x: x
                   ) -> ExportSummary:
    """Write ``source`` to ``out`` as a LeRobotDataset v3 (the whole folder appears at the end)."""
    rec, spec = source.recording, source.recording.spec
    episodes = rec.episodes
    if not episodes:
        raise So101Error(f"{source.folder}: no finished episodes to export")
    period = float(rec.meta.get("period_s") or spec.control.period_s)
    fps = max(1, round(1.0 / period))
    first = rec.load(0)
    for key in ("action", "state", "joint_pos", "reward"):
        if key not in first:
            raise So101Error(f"{source.folder}: its episodes hold no '{key}' rows (recorded by an older version; "
                             f"record again)")
    features = _features(spec, first, source.kind, fps)
    task = task or spec.episode.task
    counts = {"frames": 0, "successes": 0, "interventions": 0}

    def write(root: Path) -> None:
        writer = DatasetWriter(root, fps, ROBOT_TYPE, features)
        for i in progress(range(len(episodes))):
            arrays = first if i == 0 else rec.load(i)
            cols = _columns(spec, arrays, episodes[i], source.kind, calibration)
            videos = {}
            if "observation.images.wrist" in {f.key for f in features}:
                if "rgb_jpeg" not in arrays:
                    raise So101Error(f"{source.folder}: episode {episodes[i]['file']} kept no camera images where "
                                     f"the first did")
                videos["observation.images.wrist"] = _rgb_frames(rec, arrays)
            writer.add(Episode(len(arrays["action"]), task, cols, videos))
            counts["frames"] += len(arrays["action"])
            counts["successes"] += bool(episodes[i].get("success"))
            counts["interventions"] += int(cols["complementary_info.is_intervention"].sum())
        writer.finish()

    write_folder(out, write, overwrite)
    return ExportSummary(Path(out), source.kind, len(episodes), counts["frames"], fps, period,
                         [f.key for f in features], counts["successes"], counts["interventions"])


def _rgb_frames(rec: Recording, arrays: dict[str, np.ndarray]) -> Callable[[], Iterable[np.ndarray]]:
    n = len(arrays["action"])
    return lambda: (rec.rgb(arrays, row) for row in range(n))
