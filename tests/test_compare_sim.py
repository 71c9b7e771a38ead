"""``so101 compare-sim``: a recording replayed through the twin, with injected mismatches it must name."""

import json
import shutil

import cv2
import numpy as np
import pytest

from fixtures import run_cli
from so101_sim2real.compare.replay import spearman, timing
from so101_sim2real.control.env import sim_env
from so101_sim2real.control.pilots import ScriptedPilot
from so101_sim2real.control.recording import Recorder, Recording
from so101_sim2real.control.runner import Runner
from so101_sim2real.control.video import PANEL
from so101_sim2real.sim.perturb import Perturbation
from so101_sim2real.spec import default_spec

# Before the scripted grasp touches the cube: the recording keeps the cube's position, not its
# orientation, so a tipped cube cannot be posed exactly.
STEPS = 10


def _record(folder, perturbation: Perturbation | None = None, pilot=None, steps: int = STEPS, swap_xy: bool = False,
            with_rgb: bool = False, geometry=None, seed: int = 0):
    rig = sim_env(default_spec(), perturbation=perturbation, geometry=geometry)
    if swap_xy:  # the user's controller bug: the action's x moves the target along y and back
        command = rig.controller.command
        rig.controller.command = lambda action, q: command(np.asarray(action)[[1, 0, 2, 3]], q)
    try:
        rec = Recorder(folder, rig.spec, "sim", "scripted", rig.period_s, with_rgb=with_rgb)
        Runner(rig, pilot or ScriptedPilot(rig.twin), recorder=rec, max_steps=steps).run([seed])
    finally:
        rig.close()
    return folder


class Wander:
    """Moves along x, y and z at once at three frequencies: every axis commanded on its own."""

    name, needs_pixels = "wander", False

    def reset(self, obs) -> None:
        self.t = 0

    def act(self, obs) -> np.ndarray:
        self.t += 1
        return np.array([np.sin(self.t / 3), np.sin(self.t / 5 + 1), 0.6 * np.sin(self.t / 7 + 2), 1.0], np.float32)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return _record(tmp_path_factory.mktemp("clean") / "rec", with_rgb=True)


@pytest.fixture
def copy(clean, tmp_path):
    return shutil.copytree(clean, tmp_path / "rec")


def _edit(folder, drop=(), **changes):
    path = folder / "episode_0000.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k not in drop}
    for key, fn in changes.items():
        arrays[key] = fn(arrays[key])
    np.savez_compressed(path, **arrays)


def _json(capsys, folder):
    code, out, err = run_cli(capsys, "compare-sim", str(folder), "--json")
    assert code == 0, err
    return json.loads(out)


def test_a_clean_twin_recording_matches_the_twin(capsys, clean, tmp_path):
    code, out, err = run_cli(capsys, "compare-sim", str(clean), "--out", str(tmp_path / "report"))
    assert code == 0, err
    assert "no findings" in out and "finding:" not in out
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert (tmp_path / "report" / "iou.png").stat().st_size > 0
    assert report["ticks"] == STEPS and report["findings"] == []
    present = {k: v for k, v in report["segmentation"]["iou"].items() if v is not None}
    assert {"table", "cube", "static_finger"} <= set(present)
    assert min(present.values()) >= 0.99, present
    # every tick, not only the sum: the twin's frame is one physics step older than its joint reading
    per_tick = np.array(report["segmentation"]["per_tick_iou"], dtype=float)
    assert np.nanmin(per_tick) >= 0.99, np.nanmin(per_tick, axis=1)
    assert report["disparity"]["spearman"] >= 0.99
    bands = report["disparity"]["by_band"]
    assert set(bands) == {"far", "middle", "near"} and all(v < 0.01 for v in bands.values() if v is not None), bands
    assert report["cube"]["source"] == "recorded"
    assert report["timing"]["p50_s"] == pytest.approx(0.02)
    # the recorded targets, replayed open loop from the first row, move the twin exactly as recorded
    assert all(j["rms_error_rad"] < 1e-6 for j in report["dynamics"]["joints"]), report["dynamics"]
    page = (tmp_path / "report" / "index.html").read_text()
    assert "none: the recording matches the twin" in page
    # the whole episode, one row per tick: camera | recorded seg, disparity | twin's | difference
    video = cv2.VideoCapture(str(tmp_path / "report" / "compare.mp4"))
    ok, first = video.read()
    assert ok and video.get(cv2.CAP_PROP_FRAME_COUNT) == STEPS
    assert first.shape[0] == PANEL and first.shape[1] == round(PANEL * 4 / 3) + 5 * PANEL
    assert not list((tmp_path / "report").glob(".*"))  # no partial file left behind
    assert "src=\"http" not in page and "src='http" not in page and page.count("data:image/png;base64,") >= 2


def test_swapped_class_ids_are_named_with_the_mapping(capsys, copy, tmp_path):
    swap = np.array([0, 2, 1, 3, 4], dtype=np.uint8)  # table <-> cube
    _edit(copy, obs=lambda obs: np.concatenate([swap[obs[:, :1]], obs[:, 1:]], axis=1))
    report = _json(capsys, copy)
    names = [f["name"] for f in report["findings"]]
    assert names == ["class ids not remapped"], names
    assert report["findings"][0]["evidence"]["recorded_to_twin"] == {"1": 2, "2": 1}
    assert report["segmentation"]["iou"]["table"] < 0.2
    assert len(report["worst_ticks"]) == 4  # the page shows the ticks that agree least


def test_offset_class_ids_are_named_as_an_offset(capsys, copy):
    _edit(copy, obs=lambda obs: np.concatenate([obs[:, :1] + 1, obs[:, 1:]], axis=1))
    code, out, _ = run_cli(capsys, "compare-sim", str(copy))
    assert code == 0
    found = [line for line in out.splitlines() if line.startswith("finding:")]
    assert len(found) == 1 and "class ids not remapped" in found[0]
    assert "recorded id = twin id + 1" in found[0] and "[0, 0, 1, 2, 3, 4]" in found[0]


def test_a_slow_control_loop_is_named(capsys, copy):
    _edit(copy, time=lambda t: t[0] + 0.1 * np.arange(len(t)))
    report = _json(capsys, copy)
    # Joints that moved 20 ms a row, stamped 100 ms apart, also read as an arm slower than its targets: the
    # period comes first, and nothing of the picture is named.
    assert report["findings"][0]["name"] == "control period differs from the spec"
    assert all(set(f["gaps"]) <= {"period", "max_speed", "compliance", "latency", "backlash", "gripper"}
               for f in report["findings"])
    assert report["timing"]["p50_s"] == pytest.approx(0.1)
    assert report["findings"][0]["evidence"]["offset"] == pytest.approx(4.0)


def test_a_moved_camera_is_named(capsys, tmp_path):
    folder = _record(tmp_path / "moved", Perturbation(camera_shift_mm=(8.0, 0.0, 0.0), camera_tilt_deg=(4.0, 0.0, 0.0)))
    report = _json(capsys, folder)
    # the moved camera loses the moving finger to the table: not a renaming (the table is the table too)
    assert [f["name"] for f in report["findings"]] == ["camera pose offset"], report["finger_shifts"]
    shift = report["findings"][0]
    assert shift["evidence"]["shift_px"] >= 1.0 and "so101 calibrate align" in shift["next"]


def test_a_misplaced_cube_is_not_taken_for_renamed_ids(capsys, copy):
    _edit(copy, cube_pos=lambda c: c + [0.06, 0.0, 0.0])  # the twin poses the cube 6 cm from where it was seen
    report = _json(capsys, copy)
    assert report["segmentation"]["iou"]["cube"] < 0.5
    assert report["findings"] == []  # recorded cube and table both land on the twin's table: no renaming


@pytest.mark.parametrize("args, expected", [
    (["missing-folder"], "no such recording folder"),
    ([__file__], "not a folder"),
    (["."], "not a recording"),
    (["{clean}", "--episode", "5"], "episode 5 out of range"),
    (["{cut}"], "unreadable episode file"),
    (["{clean}", "--out", "/proc/no-report"], "cannot write the report there"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, clean, tmp_path, args, expected):
    cut = shutil.copytree(clean, tmp_path / "cut")  # an episode file cut short, as a kill mid-write leaves it
    data = (cut / "episode_0000.npz").read_bytes()
    (cut / "episode_0000.npz").write_bytes(data[:len(data) // 2])
    args = [a.replace("{clean}", str(clean)).replace("{cut}", str(cut)) if a != "missing-folder"
            else str(tmp_path / a) for a in args]
    code, out, err = run_cli(capsys, "compare-sim", *args)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a = rng.integers(0, 20, 500)
    b = a + rng.integers(0, 15, 500)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)


def test_timing_reads_the_period_of_the_time_column():
    t = timing(np.array([0.0, 0.02, 0.04, 0.07]), 0.02)
    assert t.p50_s == pytest.approx(0.02) and t.offset == pytest.approx(0.0, abs=1e-9)


def test_the_recording_reader_is_the_recorders(clean):
    assert len(Recording(clean).episodes) == 1


def test_an_arm_that_lags_its_targets_is_named_with_the_lag(capsys, copy):
    def late(joints):  # the recorded arm 3 ticks behind where its targets took the twin
        return np.concatenate([np.repeat(joints[:1], 3, axis=0), joints[:-3]])

    # the camera's images dropped: they show where the arm was, and the twin posed at late joints would
    # not sit on them (a real arm's late joints and its picture agree)
    _edit(copy, drop=("rgb_jpeg", "rgb_offsets"), joint_pos=late)
    report = _json(capsys, copy)
    late = [f for f in report["findings"] if f["gaps"] == ["latency"]]
    assert [f["name"] for f in report["findings"]] == ["commands reach the arm late"], report["findings"]
    assert late[0]["evidence"]["ms"] == pytest.approx(60.0)  # 3 ticks of 20 ms, fitted by replaying it late
    assert max(j["lag_ticks"] or 0 for j in report["dynamics"]["joints"]) == 3


def test_disparity_normalised_over_another_region_is_named(capsys, copy):
    def renormalised(obs):  # the same depth order, stretched as a crop's min-max would stretch it
        out = obs.copy()
        d = out[:, 1].astype(float)
        out[:, 1] = np.clip((d - 30) * 1.6, 0, 255).astype(np.uint8)
        return out

    _edit(copy, obs=renormalised)
    report = _json(capsys, copy)
    names = [f["name"] for f in report["findings"]]
    assert names == ["disparity normalised another way"], report["findings"]
    assert report["segmentation"]["agreement"] > 0.99  # the seg channel untouched


def test_degrees_in_the_state_are_named(capsys, copy):
    def in_degrees(state):  # joint positions written in degrees, the rest as it was
        out = state.copy()
        out[:, :6] = np.degrees(out[:, :6])
        return out

    clean = _json(capsys, copy)
    assert all(c["rms"] < 1e-3 for c in clean["state"]), clean["state"]  # the twin computes the same state
    _edit(copy, state=in_degrees)
    report = _json(capsys, copy)
    slips = [f for f in report["findings"] if f["name"] == "degrees and radians mixed in the state"]
    assert slips and slips[0]["evidence"]["fields"] == "joint_pos", report["findings"]


@pytest.mark.parametrize("swap_xy", [False, True])
def test_an_xy_swap_in_the_controller_is_named(capsys, tmp_path, swap_xy):
    folder = _record(tmp_path / "rec", pilot=Wander(), steps=40, swap_xy=swap_xy)
    report = _json(capsys, folder)
    names = [f["name"] for f in report["findings"]]
    if not swap_xy:  # the same wandering through a correct controller: nothing to name
        assert names == [] and report["motion"]["moves"] == {"x": "x", "y": "y", "z": "z"}, report["findings"]
        assert report["motion"]["r2_identity"] > 0.7
        return
    assert names == ["commanded and measured end-effector motion on different axes"], report["findings"]
    assert report["findings"][0]["evidence"]["moves"] == "+x -> +y, +y -> +x"
    # the observation is the twin's own: only the motion gives the swap away
    assert report["segmentation"]["iou"]["table"] >= 0.99, report["segmentation"]["iou"]


def _drop(folder, key):
    path = folder / "episode_0000.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != key}
    np.savez_compressed(path, **arrays)


def test_a_recording_without_the_cube_gets_it_fitted_to_the_first_frames(capsys, copy):
    with np.load(copy / "episode_0000.npz") as z:
        truth = z["cube_pos"][0]
    _drop(copy, "cube_pos")  # as a real arm records: the joints, not the cube
    report = _json(capsys, copy)
    cube = report["cube"]
    assert cube["source"] == "fitted" and cube["tick"] == 0 and cube["iou"] > 0.95, cube
    assert np.allclose(cube["position"][:2], truth[:2], atol=0.002), (cube["position"], truth)
    assert report["segmentation"]["iou"]["cube"] > 0.95 and report["findings"] == []


def test_with_the_rigs_measured_camera_the_pose_offset_is_gone(capsys, tmp_path):
    from dataclasses import replace

    from so101_sim2real.geometry.rig_file import default_rig

    guess = default_rig()
    moved = replace(guess, mount_pos=tuple(np.add(guess.mount_pos, (0.008, 0.0, 0.0))),
                    mount_euler=tuple(np.add(guess.mount_euler, (np.radians(4.0), 0.0, 0.0))))
    folder = _record(tmp_path / "rec", geometry=moved)  # the real camera sits elsewhere than the sim's guess
    rig_file = moved.save(tmp_path / "rig.yaml")
    assert [f["name"] for f in _json(capsys, folder)["findings"]] == ["camera pose offset"]
    code, out, err = run_cli(capsys, "compare-sim", str(folder), "--rig", str(rig_file))
    assert code == 0, err
    assert "twin camera:" in out and "no findings" in out, out
    code, _, err = run_cli(capsys, "compare-sim", str(folder), "--rig", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml" in err and "Traceback" not in err


def test_a_grasp_is_replayed_exactly_cube_included(capsys, tmp_path):
    # through the close and the lift the cube moves and tips: its recorded pose is the observation's
    folder = _record(tmp_path / "grasp", steps=36)
    report = _json(capsys, folder)
    per_tick = np.array(report["segmentation"]["per_tick_iou"], dtype=float)
    assert report["ticks"] == 36 and report["findings"] == []
    assert np.nanmin(per_tick) >= 0.99, np.nanmin(per_tick, axis=1)


@pytest.mark.parametrize("seed", [37, 41, 43])
def test_a_twin_recording_replays_pixel_for_pixel_on_every_tick(tmp_path, seed):
    # the first row's frame comes straight from the reset, the others from a step: both must be posed exactly
    from so101_sim2real.compare.replay import replay

    folder = _record(tmp_path / "rec", steps=12, seed=seed)
    differing = []

    def check(frames):
        if not np.array_equal(frames.recorded, frames.twin):
            differing.append((frames.tick, int((frames.recorded != frames.twin).sum())))

    report = replay(Recording(folder), on_frames=check)
    assert report.ticks == 12 and differing == [], differing
    assert all(v == 1.0 for row in report.segmentation.per_tick_iou for v in row if v is not None)


def test_a_recording_unlike_the_twin_is_named_with_what_to_check(capsys, copy):
    # what a wrong seg model or another camera gives: no class anywhere near the twin's
    rng = np.random.default_rng(5)
    _edit(copy, obs=lambda obs: rng.integers(0, 256, obs.shape).astype(np.uint8))
    report = _json(capsys, copy)
    assert [f["name"] for f in report["findings"]] == ["the recorded segmentation does not resemble the twin's"], \
        report["findings"]  # not a camera offset: the noise's finger 'centroids' sit mid-frame
    unlike = report["findings"][0]
    assert unlike["evidence"]["max_iou"] < 0.1 and abs(unlike["evidence"]["spearman"]) < 0.3
    assert "so101 perceive" in unlike["next"] and "class ids" in unlike["next"]


def test_a_recording_of_another_episode_is_not_named_unlike(capsys, copy):
    # the same view of the table, the cube and a finger elsewhere: a partial mismatch, not a different world
    _edit(copy, obs=lambda obs: obs[::-1].copy())
    names = [f["name"] for f in _json(capsys, copy)["findings"]]
    assert "the recorded segmentation does not resemble the twin's" not in names


def test_an_arm_ahead_of_the_twins_replay_is_said_in_words(capsys, copy, tmp_path):
    def early(joints):  # the recorded arm 3 ticks ahead of where its targets took the twin
        return np.concatenate([joints[3:], np.repeat(joints[-1:], 3, axis=0)])

    _edit(copy, joint_pos=early)
    code, out, err = run_cli(capsys, "compare-sim", str(copy), "--out", str(tmp_path / "r"))
    assert code == 0, err
    lags = [j["lag_ticks"] for j in json.loads((tmp_path / "r" / "report.json").read_text())["dynamics"]["joints"]]
    ahead = -min(lag for lag in lags if lag is not None)
    assert ahead >= 2, lags  # the estimate is a tick off at this length; its sign is what is said
    assert f"the recorded joints move {ahead} ticks ahead of the twin's replay of their targets" in out, out
    assert f"lag -{ahead}" not in out and "lags its targets" not in out
    assert "finding: the arm moves ahead of the twin's replay of its targets" in out, out
    assert f"{ahead} ticks ahead of the twin" in (tmp_path / "r" / "index.html").read_text()


def test_the_page_shows_the_state_table(capsys, copy, tmp_path):
    code, _, err = run_cli(capsys, "compare-sim", str(copy), "--out", str(tmp_path / "r"))
    assert code == 0, err
    page = (tmp_path / "r" / "index.html").read_text()
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert "<h2>The state: recorded vs twin</h2>" in page
    for field in report["state"]:
        assert f"<td>{field['name']}</td>" in page
