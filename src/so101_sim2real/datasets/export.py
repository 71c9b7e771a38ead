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
- ``next.reward`` (the task's reward), ``next.done`` (the episode ends on this frame, as LeRobot's RL
  tools mark it however it ended), ``next.truncated`` (it ended without the task's success),
  ``next.success`` (the episode's verdict, on its last frame);
- ``complementary_info.is_intervention`` (0/1 float, as LeRobot's replay buffer writes it): a person
  or the scripted expert was in control (a run's flags; every row of the scripted expert's
  recordings, which are demonstrations); a run also keeps ``complementary_info.learner_reward``;
- ``complementary_info.success_label``: where the recording has reward labels (``labels.json``,
  ``so101 reward label``), 1 on the frames that show success, 0 before, NaN in unlabelled episodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from so101_sim2real.control.env import load_calibration, load_rig_file
from so101_sim2real.control.recording import Recording
from so101_sim2real.datasets.lerobot_v3 import IMAGE_NAMES, DatasetWriter, Episode, Feature, video_info
from so101_sim2real.errors import So101Error
from so101_sim2real.files import write_folder
from so101_sim2real.hardware.joint_calibration import TICKS_PER_DEGREE, ArmCalibration, with_joint_offsets
from so101_sim2real.interfaces import JOINT_NAMES
from so101_sim2real.reward.labels import Labels, labels_path, load_labels
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
    """Sim radians (N, 6) -> LeRobot's follower units, as its motor bus normalises the servo ticks:
    degrees from the middle of each calibrated range for the arm (its ``use_degrees`` default),
    0-100 of the range for the gripper (bounded to the range, reversed by a drive mode)."""
    out = np.empty_like(np.asarray(joint_pos, dtype=np.float64))
    for j, name in enumerate(JOINT_NAMES):
        m, s = calibration.motors[name], calibration.sim[name]
        lerobot_rad = (joint_pos[:, j] - s.offset_rad) * s.sign  # ArmCalibration.sim_to_raw, unrounded
        raw = m.mid + np.degrees(-lerobot_rad if m.drive_mode else lerobot_rad) * TICKS_PER_DEGREE
        if name == "gripper":
            norm = (np.clip(raw, m.range_min, m.range_max) - m.range_min) / max(1, m.range_max - m.range_min) * 100
            out[:, j] = 100 - norm if m.drive_mode else norm
        else:
            out[:, j] = (raw - m.mid) * 360 / 4095
    return out


def recorded_calibration(rec: Recording, name: str | None = None) -> ArmCalibration:
    """The calibration the recording's joints were read through: ``name`` (an id, a .json or ``twin``),
    else the one its run used (``twin`` in the sim), with the run's rig file's joint offsets where
    the run had one on an arm (a stand-in included): a rig corrects the arm's readings."""
    where = rec.description
    if name is None:
        if where is None and rec.meta.get("robot") != "sim":
            raise So101Error(f"{rec.folder}: recorded on an arm before recordings kept where they were made; say "
                             f"its calibration with @calibration ID")
        arm = where is not None and where.robot.kind != "sim"
        name = (where.robot.calibration if arm and where is not None else None) or "twin"
    calibration = load_calibration(name)
    assert calibration is not None
    if where is not None and where.camera.rig and (where.robot.kind != "sim" or where.standin is not None):
        if not Path(where.camera.rig).is_file():
            raise So101Error(f"{rec.folder}: its run read the joints through the rig file {where.camera.rig}, "
                             f"which is not here; copy it back to export the joints")
        geometry = load_rig_file(where.camera.rig)
        if geometry is not None:
            calibration = with_joint_offsets(calibration, geometry.joint_offsets_rad)
    return calibration


def _features(spec: Spec, arrays: dict[str, np.ndarray], kind: str, fps: int, labelled: bool) -> list[Feature]:
    features = [Feature("observation.state", "float32", (spec.state.size,), state_names(spec)),
                Feature("observation.joints", "float32", (6,), [f"{j}.pos" for j in JOINT_NAMES]),
                Feature("action", "float32", (spec.action.dim,), ACTION_NAMES[:spec.action.dim])]
    if "rgb_jpeg" in arrays:
        h, w = spec.observation.source_size
        features.append(Feature("observation.images.wrist", "video", (h, w, 3), IMAGE_NAMES, video_info(h, w, fps)))
    if "obs" in arrays:
        h, w = spec.observation.image_size
        for channel in spec.observation.channels:
            features.append(Feature(f"observation.images.{channel}", "image", (h, w, 1), IMAGE_NAMES))
    features += [Feature("next.reward", "float32", (1,)), Feature("next.done", "bool", (1,)),
                 Feature("next.truncated", "bool", (1,)), Feature("next.success", "bool", (1,)),
                 Feature("complementary_info.is_intervention", "float32", (1,))]
    if kind == "run":
        features.append(Feature("complementary_info.learner_reward", "float32", (1,)))
    if labelled:
        features.append(Feature("complementary_info.success_label", "float32", (1,)))
    return features


def _columns(spec: Spec, arrays: dict[str, np.ndarray], meta: dict, kind: str, pilot: str,
             calibration: ArmCalibration, labels: Labels | None) -> dict[str, np.ndarray]:
    n = len(arrays["action"])
    last = np.zeros(n, bool)
    last[-1] = True
    # the task's end: a run's own flags, else the recording's verdict on its last row
    terminated = np.asarray(arrays["terminated"], bool) if kind == "run" else last & bool(meta.get("success"))
    # LeRobot's convention: done on the episode's last frame however it ended (its buffer bootstraps
    # across any frame not done); truncated and success tell the two ends apart
    done = terminated | last
    # who moved the arm: a run's flags; in a recording the scripted expert's episodes are demonstrations
    control = arrays["is_intervention"] if kind == "run" else np.full(n, pilot == "scripted")
    joints = lerobot_joints(calibration, arrays["joint_pos"])
    cols = {"observation.state": arrays["state"], "observation.joints": joints, "action": arrays["action"],
            "next.reward": arrays["reward"], "next.done": done, "next.truncated": done & ~terminated,
            "next.success": last & bool(meta.get("success")),
            "complementary_info.is_intervention": np.asarray(control, np.float32)}
    if "obs" in arrays:
        for c, channel in enumerate(spec.observation.channels):
            cols[f"observation.images.{channel}"] = arrays["obs"][:, c, :, :, None]
    if kind == "run":
        cols["complementary_info.learner_reward"] = arrays["learner_reward"]
    if labels is not None:  # the reward classifier's labels: 1 on frames that show success, NaN unlabelled
        label = labels.episodes.get(int(meta["index"]))
        cols["complementary_info.success_label"] = (np.full(n, np.nan, np.float32) if label is None
                                                    else label.positives(n).astype(np.float32))
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
    labels = load_labels(rec) if labels_path(rec).is_file() else None
    features = _features(spec, first, source.kind, fps, labels is not None)
    needed = ["action", "state", "joint_pos", "reward", *(["obs"] if "obs" in first else []),
              *(["terminated", "learner_reward", "is_intervention"] if source.kind == "run" else [])]
    pilot = str(rec.meta.get("pilot", ""))
    task = task or spec.episode.task
    counts = {"frames": 0, "successes": 0, "interventions": 0}

    def write(root: Path) -> None:
        writer = DatasetWriter(root, fps, ROBOT_TYPE, features)
        try:
            for i in progress(range(len(episodes))):
                arrays = first if i == 0 else rec.load(i)
                _check_episode(arrays, needed, "rgb_jpeg" in first, f"{source.folder}: {episodes[i]['file']}")
                cols = _columns(spec, arrays, episodes[i], source.kind, pilot, calibration, labels)
                videos = {"observation.images.wrist": _rgb_frames(rec, arrays)} if "rgb_jpeg" in first else {}
                writer.add(Episode(len(arrays["action"]), task, cols, videos))
                counts["frames"] += len(arrays["action"])
                counts["successes"] += bool(episodes[i].get("success"))
                counts["interventions"] += int(cols["complementary_info.is_intervention"].sum())
            writer.finish()
        finally:
            writer.close()

    write_folder(out, write, overwrite)
    return ExportSummary(Path(out), source.kind, len(episodes), counts["frames"], fps, period,
                         [f.key for f in features], counts["successes"], counts["interventions"])


def _check_episode(arrays: dict[str, np.ndarray], needed: list[str], rgb: bool, name: str) -> None:
    """An episode file holds every row the dataset's features need, one per tick, before any is written."""
    missing = [k for k in needed if k not in arrays] + (["rgb_jpeg"] if rgb and "rgb_jpeg" not in arrays else [])
    if missing:
        raise So101Error(f"{name}: no {', '.join(missing)} rows where the recording's first episode has them")
    n = len(arrays["action"])
    if n < 1:
        raise So101Error(f"{name}: an episode without rows")
    short = [k for k in needed if len(arrays[k]) != n]
    if short:
        raise So101Error(f"{name}: {', '.join(short)} hold other than its {n} rows; the episode file is damaged")


def _rgb_frames(rec: Recording, arrays: dict[str, np.ndarray]) -> Callable[[], Iterable[np.ndarray]]:
    n = len(arrays["action"])
    return lambda: (rec.rgb(arrays, row) for row in range(n))
