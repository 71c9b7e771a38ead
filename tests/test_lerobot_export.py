"""``so101 export lerobot``: recordings as LeRobotDataset v3, read back by a reader written from the
format's description alone (tests/lerobot_reader.py), and imported as demos value for value."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

import lerobot_reader
from fixtures import run_cli as run
from so101_sim2real.arm import CENTRE_TICK
from so101_sim2real.control.env import load_calibration, sim_env
from so101_sim2real.control.pilots import ScriptedPilot
from so101_sim2real.control.recording import Recorder, Recording
from so101_sim2real.control.runner import Runner
from so101_sim2real.errors import So101Error
from so101_sim2real.spec import default_spec


def _record(folder, seeds, steps, with_rgb):
    rig = sim_env(default_spec())
    try:
        rec = Recorder(folder, rig.spec, "sim", "scripted", rig.period_s, with_rgb=with_rgb)
        Runner(rig, ScriptedPilot(rig.twin), recorder=rec, max_steps=steps).run(seeds)
    finally:
        rig.close()
    return folder


@pytest.fixture(scope="module")
def camera_rec(tmp_path_factory):
    """Two short episodes with the camera's RGB (the video path), neither finished."""
    return _record(tmp_path_factory.mktemp("cam") / "rec", [0, 1], 6, with_rgb=True)


@pytest.fixture(scope="module")
def demo_rec(tmp_path_factory):
    """A scripted pick to success and one cut short: both verdicts in one recording."""
    base = tmp_path_factory.mktemp("demo")
    folder = _record(base / "rec", [3], 90, with_rgb=False)
    short = _record(base / "short", [4], 5, with_rgb=False)
    shutil.copy(short / "episode_0000.npz", folder / "episode_0001.npz")
    index = json.loads((folder / "recording.json").read_text())
    entry = json.loads((short / "recording.json").read_text())["episodes"][0]
    index["episodes"].append({**entry, "file": "episode_0001.npz", "index": 1})
    (folder / "recording.json").write_text(json.dumps(index))
    assert [e["success"] for e in Recording(folder).episodes] == [True, False]
    return folder


def _export(capsys, source, out, *extra):
    code, text, err = run(capsys, "export", "lerobot", str(source), "--out", str(out), "--json", *extra)
    assert code == 0, err
    return json.loads(text.strip().splitlines()[-1])


def test_a_recording_is_a_dataset_the_independent_reader_accepts(capsys, camera_rec, tmp_path):
    summary = _export(capsys, camera_rec, tmp_path / "ds")
    assert summary["episodes"] == 2 and summary["frames"] == 12 and summary["fps"] == 50  # 20 ms ticks
    data = lerobot_reader.read(tmp_path / "ds")
    info = data["info"]
    assert info["robot_type"] == "so101_follower" and data["tasks"] == [default_spec().episode.task]
    assert info["features"]["action"]["names"] == ["delta_x", "delta_y", "delta_z", "gripper"]
    assert data["videos"]["observation.images.wrist"] == [((0, 0), 0.0, 6), ((0, 0), 0.12, 6)]

    rec = Recording(camera_rec)
    calibration = load_calibration("twin")
    for i, frames in enumerate(data["frames"]):
        arrays = rec.load(i)
        assert np.array_equal(frames["observation.state"], arrays["state"])
        assert np.array_equal(frames["action"], arrays["action"])
        assert np.array_equal(frames["next.reward"], arrays["reward"].astype(np.float32))
        # the channels are lossless: class ids and disparities exactly as the policy saw them
        assert np.array_equal(frames["observation.images.seg"][..., 0], arrays["obs"][:, 0])
        assert np.array_equal(frames["observation.images.disparity"][..., 0], arrays["obs"][:, 1])
        # LeRobot's ends: done on the last frame however the episode ended, truncated where not a success
        assert frames["next.done"].tolist() == frames["next.truncated"].tolist() == [False] * 5 + [True]
        assert frames["complementary_info.is_intervention"].all()  # the scripted expert's: demonstrations
        # LeRobot's units from the servo ticks the emulated twin arm would read (0 rad = the centre tick)
        ticks = CENTRE_TICK + np.degrees(arrays["joint_pos"]) * 4095 / 360
        mid = np.array([calibration.motors[j].mid for j in calibration.motors])
        lo = calibration.motors["gripper"].range_min
        hi = calibration.motors["gripper"].range_max
        expected = (ticks - mid) * 360 / 4095
        expected[:, 5] = np.clip((ticks[:, 5] - lo) / (hi - lo) * 100, 0, 100)  # LeRobot bounds it to its range
        np.testing.assert_allclose(frames["observation.joints"], expected, atol=1e-3)

    stats = data["stats"]
    state = np.concatenate([f["observation.state"] for f in data["frames"]]).astype(np.float64)
    np.testing.assert_allclose(stats["observation.state"]["mean"], state.mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats["observation.state"]["std"], state.std(0), rtol=1e-5, atol=1e-7)
    assert np.array_equal(stats["observation.state"]["min"], state.min(0))
    assert stats["observation.images.wrist"]["count"] == [12]  # LeRobot counts the frames it sampled


def test_the_video_carries_the_camera(capsys, camera_rec, tmp_path):
    _export(capsys, camera_rec, tmp_path / "ds")
    from so101_sim2real.datasets.lerobot_read import LeRobotFolder

    rec, ds = Recording(camera_rec), LeRobotFolder(tmp_path / "ds")
    arrays = rec.load(1)
    decoded = list(ds.video_frames("observation.images.wrist", 1))
    assert len(decoded) == 6
    for row, frame in enumerate(decoded):  # MPEG-4 is lossy: close, not equal
        assert np.abs(frame.astype(int) - rec.rgb(arrays, row).astype(int)).mean() < 6


def test_export_then_import_as_demos_keeps_every_value(capsys, demo_rec, tmp_path):
    from so101_sim2real.hilserl.demos import demo_episodes
    from so101_sim2real.hilserl.replay import ReplayBuffer
    from so101_sim2real.hilserl.rewards import DenseReward, SuccessReward
    from so101_sim2real.hilserl.run import load_demos

    summary = _export(capsys, demo_rec, tmp_path / "ds")
    assert summary["successes"] == 1
    spec = default_spec()
    data = lerobot_reader.read(tmp_path / "ds")
    assert [f["next.success"].tolist()[-1] for f in data["frames"]] == [True, False]
    assert [f["next.done"].sum() for f in data["frames"]] == [1, 1]
    assert [f["next.truncated"].sum() for f in data["frames"]] == [0, 1]

    pairs = list(zip(demo_episodes(demo_rec, spec), demo_episodes(tmp_path / "ds", spec), strict=True))
    assert len(pairs) == 2
    for mine, theirs in pairs:
        assert mine.success == theirs.success
        for key in ("obs", "state", "action"):
            assert np.array_equal(getattr(mine, key), getattr(theirs, key)), key
        assert np.array_equal(mine.reward.astype(np.float32), theirs.reward.astype(np.float32))
    for rewards in (SuccessReward(), DenseReward()):
        stores = []
        for folder in (demo_rec, tmp_path / "ds"):
            buffer = ReplayBuffer(1000, (2, 84, 84), 18, 4, seed=0)
            assert load_demos((str(folder),), buffer, rewards, spec) == 2
            stores.append(buffer.demos)
        a, b = stores
        assert a.written == b.written >= 41  # 36 + 5 rows, with the stores' own padding
        for key in ("frame", "state", "action", "reward", "terminal", "sampleable", "intervention"):
            assert np.array_equal(getattr(a, key)[:a.written], getattr(b, key)[:b.written]), key


def _without_action(ds, out):
    shutil.copytree(ds, out)
    info = json.loads((out / "meta" / "info.json").read_text())
    del info["features"]["action"]
    (out / "meta" / "info.json").write_text(json.dumps(info))
    path = next((out / "data").glob("*/*.parquet"))
    pq.write_table(pq.read_table(path).drop_columns(["action"]), path)
    return out


def test_bad_inputs_are_one_line_and_exit_2(capsys, demo_rec, tmp_path):
    from so101_sim2real.hilserl.demos import demo_episodes

    code, _, err = run(capsys, "export", "lerobot", str(tmp_path), "--out", str(tmp_path / "x"))
    assert code == 2 and "neither a recording" in err and len(err.strip().splitlines()) == 1
    _export(capsys, demo_rec, tmp_path / "ds")
    code, _, err = run(capsys, "export", "lerobot", str(demo_rec), "--out", str(tmp_path / "ds"))
    assert code == 2 and "already exists" in err

    no_action = _without_action(tmp_path / "ds", tmp_path / "no_action")
    code, _, err = run(capsys, "hilserl", "train", "--ckpt", str(tmp_path / "missing.pt"), "--out",
                       str(tmp_path / "r"), "--demos", str(no_action))
    assert code == 2 and "no action feature" in err and len(err.strip().splitlines()) == 1, err

    broken = shutil.copytree(tmp_path / "ds", tmp_path / "broken")
    episodes = next((broken / "meta" / "episodes").glob("*/*.parquet"))
    episodes.write_bytes(episodes.read_bytes()[:100])
    code, _, err = run(capsys, "hilserl", "train", "--ckpt", str(tmp_path / "missing.pt"), "--out",
                       str(tmp_path / "r"), "--demos", str(broken))
    assert code == 2 and "unreadable episodes file" in err and len(err.strip().splitlines()) == 1, err

    cut = shutil.copytree(tmp_path / "ds", tmp_path / "cut")
    data = next((cut / "data").glob("*/*.parquet"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(So101Error, match="unreadable data file"):
        list(demo_episodes(cut, default_spec()))

    video = shutil.copytree(tmp_path / "ds", tmp_path / "video")
    info = json.loads((video / "meta" / "info.json").read_text())
    info["features"]["observation.images.seg"]["dtype"] = "video"
    (video / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(So101Error, match="lossless images"):
        list(demo_episodes(video, default_spec()))


def test_the_joints_are_read_through_the_runs_calibration_and_rig(tmp_path):
    """An arm's recording with a rig file: its joints were read with the rig's offsets added, and LeRobot's
    units come from the servo ticks, so the export takes the offsets back out."""
    from so101_sim2real.control.description import RunDescription
    from so101_sim2real.datasets.export import lerobot_joints, recorded_calibration
    from so101_sim2real.geometry.rig_file import RigGeometry, pinhole_from_fovy
    from so101_sim2real.hardware.joint_calibration import with_joint_offsets

    offsets = np.radians([3, -2, 4, 1, -5, 2])
    rig = RigGeometry(camera=pinhole_from_fovy(70.5), joint_offsets_rad=offsets).save(tmp_path / "rig.yaml")
    where = RunDescription.from_dict({"robot": {"kind": "so101", "port": "emulator", "calibration": "twin"},
                                      "camera": {"source": "twin", "rig": str(rig)}}, "test")
    folder = tmp_path / "rec"
    Recorder(folder, default_spec(), "so101", "policy", 0.1, with_rgb=False, description=where.to_dict())
    twin = load_calibration("twin")
    ticks = np.array([[1900, 2300, 1700, 2500, 2047, 2200], [2100, 1800, 2400, 1600, 2600, 2047]], float)
    read = with_joint_offsets(twin, offsets)  # what the arm's driver reported as joint_pos
    joint_pos = np.array([[read.raw_to_sim(j, t) for j, t in zip(read.motors, row, strict=True)] for row in ticks])
    m = [twin.motors[j] for j in twin.motors]
    degrees = (ticks - [x.mid for x in m]) * 360 / 4095  # LeRobot's motor bus on the same ticks
    degrees[:, 5] = (np.clip(ticks[:, 5], m[5].range_min, m[5].range_max) - m[5].range_min) / (
        m[5].range_max - m[5].range_min) * 100
    exported = lerobot_joints(recorded_calibration(Recording(folder)), joint_pos)
    np.testing.assert_allclose(exported, degrees, atol=1e-6)
    assert np.abs(lerobot_joints(twin, joint_pos) - degrees).max() > 1  # without the rig: off by the offsets
    rig.unlink()
    with pytest.raises(So101Error, match="rig file"):
        recorded_calibration(Recording(folder))


def _damaged(ds, out, edit):
    shutil.copytree(ds, out)
    info = json.loads((out / "meta" / "info.json").read_text())
    edit(info)
    (out / "meta" / "info.json").write_text(json.dumps(info))
    return out


def test_a_damaged_dataset_or_recording_is_one_line(capsys, demo_rec, tmp_path):
    from so101_sim2real.hilserl.demos import demo_episodes

    _export(capsys, demo_rec, tmp_path / "ds")
    spec = default_spec()

    def listed(info):
        info["features"] = list(info["features"])

    def float33(info):
        info["features"]["action"]["dtype"] = "float33"

    def worded(info):
        info["features"]["action"]["shape"] = "four"

    def scalar(info):
        info["features"]["action"]["shape"] = [1]  # the data holds 4 numbers a row

    for i, edit in enumerate((listed, float33, worded, scalar)):
        with pytest.raises(So101Error) as caught:
            list(demo_episodes(_damaged(tmp_path / "ds", tmp_path / f"d{i}", edit), spec))
        assert "\n" not in str(caught.value), edit.__name__

    dropped = shutil.copytree(tmp_path / "ds", tmp_path / "dropped")
    path = next((dropped / "data").glob("*/*.parquet"))
    pq.write_table(pq.read_table(path).drop_columns(["next.reward"]), path)
    with pytest.raises(So101Error, match="no next.reward column"):
        list(demo_episodes(dropped, spec))

    # a recording whose second episode lost its states, or whose rows disagree: refused before anything is written
    broken = shutil.copytree(demo_rec, tmp_path / "rec")
    with np.load(broken / "episode_0001.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(broken / "episode_0001.npz", **{k: v for k, v in arrays.items() if k != "state"})
    code, _, err = run(capsys, "export", "lerobot", str(broken), "--out", str(tmp_path / "x"))
    assert code == 2 and "episode_0001.npz: no state rows" in err and not (tmp_path / "x").exists()
    np.savez(broken / "episode_0001.npz", **{**arrays, "reward": arrays["reward"][:-1]})
    code, _, err = run(capsys, "export", "lerobot", str(broken), "--out", str(tmp_path / "x"))
    assert code == 2 and "reward hold other than its 5 rows" in err and not (tmp_path / "x").exists()


def test_reward_labels_travel_as_a_success_label(capsys, demo_rec, tmp_path):
    from so101_sim2real.reward.labels import load_labels

    rec = shutil.copytree(demo_rec, tmp_path / "rec")
    code, _, err = run(capsys, "reward", "label", str(rec), "--twin")
    assert code == 0, err
    labels = load_labels(Recording(rec))
    _export(capsys, rec, tmp_path / "ds")
    data = lerobot_reader.read(tmp_path / "ds")
    for i, frames in enumerate(data["frames"]):
        expected = labels.episodes[i].positives(len(frames["action"])).astype(np.float32)
        assert np.array_equal(frames["complementary_info.success_label"], expected)
    assert data["frames"][0]["complementary_info.success_label"][-1] == 1.0  # the successful pick ends labelled
    assert not data["frames"][1]["complementary_info.success_label"].any()
