"""``so101 compare-sim`` on malformed recordings and reports: exit 2, one line, nothing written or left behind.

These need a recording or a report made for the case, so they live here rather than in
test_malformed.py's sweep; they assert what the sweep asserts.
"""

import json
import math
import shutil

import numpy as np
import pytest

from fixtures import run_cli
from so101_sim2real.control.env import sim_env
from so101_sim2real.control.pilots import ScriptedPilot
from so101_sim2real.control.recording import Recorder
from so101_sim2real.control.runner import Runner
from so101_sim2real.spec import default_spec


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good") / "rec"
    rig = sim_env(default_spec())
    try:
        rec = Recorder(folder, rig.spec, "sim", "scripted", rig.period_s, with_rgb=False)
        Runner(rig, ScriptedPilot(rig.twin), recorder=rec, max_steps=4).run([3])
    finally:
        rig.close()
    return folder


def _listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def _fails_cleanly(capsys, tmp_path, args, expected):
    before = _listing(tmp_path)
    code, out, err = run_cli(capsys, *args)
    assert code == 2, err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert _listing(tmp_path) == before  # nothing written, nothing half-made


def _index(folder, **changes):
    path = folder / "recording.json"
    meta = json.loads(path.read_text())
    for key, fn in changes.items():
        meta[key] = fn(meta[key])
    path.write_text(json.dumps(meta))


def _episode(folder, fn):
    path = folder / "episode_0000.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez_compressed(path, **fn(arrays))


def _without(key):
    return lambda arrays: {k: v for k, v in arrays.items() if k != key}


def _changed(key, fn):
    return lambda arrays: {**arrays, key: fn(arrays[key])}


BAD_INDEX = [
    ({"period_s": lambda p: math.nan}, "period_s is nan"),
    ({"period_s": lambda p: -0.02}, "period_s is -0.02"),
    ({"period_s": lambda p: "fast"}, "period_s is 'fast'"),
    ({"episodes": lambda e: {"0": e[0]}}, "'episodes' is not a list"),
    ({"episodes": lambda e: [{"seed": 3}]}, "episode 0 names no file"),
    ({"episodes": lambda e: [{**e[0], "file": "../elsewhere.npz"}]}, "episode 0's file '../elsewhere.npz'"),
]


@pytest.mark.parametrize("changes, expected", BAD_INDEX, ids=[b[1] for b in BAD_INDEX])
@pytest.mark.parametrize("with_out", [False, True])
def test_a_malformed_recording_index_is_named(capsys, recording, tmp_path, changes, expected, with_out):
    folder = shutil.copytree(recording, tmp_path / "rec")
    _index(folder, **changes)
    out = ["--out", str(tmp_path / "report")] if with_out else []
    _fails_cleanly(capsys, tmp_path, ["compare-sim", str(folder), *out], expected)


BAD_EPISODE = [
    (None, ["--episode", "1"], "episode 1 out of range"),
    ("cut", [], "unreadable episode file"),
    (_without("obs"), [], "no 'obs' to compare"),
    (_changed("obs", lambda o: o[:, :1]), [], "obs holds frames of 1x84x84"),
    (_changed("time", lambda t: t[:-1]), [], "holds 4 joint rows and 3 time rows"),
    (_changed("time", lambda t: np.where(np.arange(len(t)) == 2, np.nan, t)), [], "time is not finite"),
    (_changed("joint_pos", lambda q: q[:, :5]), [], "joint_pos is (4, 5), not (4, 6)"),
    (_changed("cube_pos", lambda c: np.full_like(c, np.inf)), [], "cube_pos is not finite"),
]


@pytest.mark.parametrize("edit, args, expected", BAD_EPISODE, ids=[b[2] for b in BAD_EPISODE])
def test_a_bad_episode_leaves_no_out_folder(capsys, recording, tmp_path, edit, args, expected):
    folder = shutil.copytree(recording, tmp_path / "rec")
    if edit == "cut":  # as a kill mid-write leaves it
        data = (folder / "episode_0000.npz").read_bytes()
        (folder / "episode_0000.npz").write_bytes(data[:len(data) // 2])
    elif edit is not None:
        _episode(folder, edit)
    _fails_cleanly(capsys, tmp_path, ["compare-sim", str(folder), *args, "--out", str(tmp_path / "report")], expected)


def _report(tmp_path, **changes):
    data = {"timing": {"p50_s": 0.05, "spec_period_s": 0.02},
            "finger_shifts": [{"name": "static_finger", "mean_dx": 1.0, "mean_dy": 0.5}],
            "segmentation": {"iou": {"table": 0.9, "cube": 0.6, "moving_finger": None}},
            "disparity": {"rel_error": 0.05}, "dynamics": {"joints": [{"lag_ticks": 2}, {"lag_ticks": None}]}}
    for path, value in changes.items():
        *keys, last = path.split("__")
        node = data
        for key in keys:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data))
    return path


BAD_REPORT = [
    ({"timing__p50_s": math.nan}, "timing.p50_s is nan"),
    ({"timing__p50_s": 0.0}, "timing.p50_s is 0.0"),
    ({"timing__p50_s": "50 ms"}, "timing.p50_s is '50 ms'"),
    ({"finger_shifts__0__mean_dx": math.inf}, "finger_shifts[0].mean_dx is inf"),
    ({"segmentation__iou__cube": math.nan}, "segmentation.iou.cube is nan"),
    ({"segmentation__iou__cube": 1.5}, "segmentation.iou.cube is 1.5"),
    ({"disparity__rel_error": -math.inf}, "disparity.rel_error is -inf"),
    ({"dynamics__joints__0__lag_ticks": 2.5}, "dynamics.joints[0].lag_ticks is 2.5"),
]


@pytest.mark.parametrize("changes, expected", BAD_REPORT, ids=[b[1] for b in BAD_REPORT])
def test_a_report_with_a_bad_number_is_named_not_dropped(capsys, tmp_path, changes, expected):
    report = _report(tmp_path, **changes)
    # one short episode a row: where the report is accepted, the budget runs quickly and the test fails
    _fails_cleanly(capsys, tmp_path, ["compare-sim", "sensitivity", "--ckpt", "scripted", "--episodes", "1",
                                      "--max-steps", "1", "--report", str(report), "--out", str(tmp_path / "s")],
                   expected)


def test_a_good_report_reads_every_amount(tmp_path):
    from so101_sim2real.compare.sensitivity import read_report

    measured = read_report(_report(tmp_path))
    assert measured == {"period_s": 0.05, "finger_shift_px": pytest.approx(math.hypot(1.0, 0.5)),
                        "finger_shift": (1.0, 0.5), "iou": {"table": 0.9, "cube": 0.6}, "rel_error": 0.05,
                        "lag_ticks": 2}


def test_a_video_thrown_away_takes_the_folders_it_made_with_it(tmp_path):
    # a replay that fails or is interrupted after --out was made: the folder goes with the partial video
    from so101_sim2real.compare.pictures import EpisodeVideo

    (tmp_path / "kept").mkdir()
    for out in (tmp_path / "report" / "deep", tmp_path / "kept"):
        EpisodeVideo(out, ["seg", "disparity"], fps=10.0).close(keep=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
