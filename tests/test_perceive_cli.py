"""``so101 perceive``, ``so101 models`` and ``so101 infer --perception real``, in-process."""

from __future__ import annotations

import json

import cv2
import pytest

from fixtures import run_cli
from so101_sim2real.perception import DEFAULT_DEPTH_MODEL


@pytest.fixture(scope="module")
def twin_images(tmp_path_factory):
    """Two wrist-camera images of the twin at seeded resets, as PNG files."""
    from so101_sim2real.sim.camera import SimCamera
    from so101_sim2real.sim.task import LiftCubeTask
    from so101_sim2real.spec import default_spec

    spec = default_spec()
    task = LiftCubeTask(spec)
    camera = SimCamera(task.model, task.data, spec.observation)
    folder = tmp_path_factory.mktemp("images")
    for seed in range(2):
        task.reset(seed)
        cv2.imwrite(str(folder / f"{seed:03d}.png"), cv2.cvtColor(camera.read().rgb, cv2.COLOR_RGB2BGR))
    camera.close()
    return folder


@pytest.mark.slow
def test_perceive_writes_one_picture_per_frame(capsys, tmp_path, twin_images, seg_ckpt, depth_folder):
    out = tmp_path / "seen"
    code, stdout, err = run_cli(capsys, "perceive", str(twin_images), "--seg-ckpt", str(seg_ckpt), "--depth-model",
                                str(depth_folder), "--out", str(out), "--json", "--backend", "torch")  # auto: elsewhere
    assert code == 0, err
    pictures = sorted(out.glob("*.png"))
    assert [p.name for p in pictures] == ["perceive_00000.png", "perceive_00001.png"]
    picture = cv2.imread(str(pictures[0]))
    assert picture.shape[0] == 240 and picture.shape[1] > 4 * 240  # camera | seg | disparity | 2 channels
    lines = stdout.strip().splitlines()
    assert lines[1].startswith("perception backend: ")  # which backend, and why
    assert lines[2].startswith("frame 0: seg") and "cube" in lines[2]
    summary = json.loads(lines[-1])
    assert summary["frames"] == 2 and summary["profile"] == "fast" and summary["total_ms"]["p50"] > 0


@pytest.mark.slow  # builds the random-weight perception models (8 s)
def test_perceive_explains_bad_input(capsys, tmp_path, twin_images, seg_ckpt, depth_folder):
    cases = [
        ((str(twin_images), "--depth-model", str(depth_folder)), "needs --seg-ckpt"),
        ((str(twin_images), "--seg-ckpt", str(seg_ckpt), "--depth-model", "someone/not-cached-model"),
         "so101 models download someone/not-cached-model"),
        ((str(tmp_path / "nothing"), "--seg-ckpt", str(seg_ckpt), "--depth-model", str(depth_folder)),
         "no such file or folder"),
        ((str(twin_images), "--seg-ckpt", str(seg_ckpt), "--depth-model", str(depth_folder), "--profile", "turbo"),
         "unknown; profiles: exact, fast"),
    ]
    for args, message in cases:
        code, _, err = run_cli(capsys, "perceive", *args, "--out", str(tmp_path / "o"))
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow  # writes a random-weight Depth Anything folder
def test_models_add_list_and_download_offline(capsys, tmp_path, depth_folder):
    cache = str(tmp_path / "cache")
    code, out, _ = run_cli(capsys, "models", "list", "--cache-dir", cache)
    assert code == 0 and "default depth model is not cached" in out
    code, out, _ = run_cli(capsys, "models", "add", str(depth_folder), "--cache-dir", cache)
    assert code == 0 and DEFAULT_DEPTH_MODEL in out
    code, out, _ = run_cli(capsys, "models", "list", "--cache-dir", cache, "--json")
    listed = json.loads(out)
    assert [m["repo_id"] for m in listed] == [DEFAULT_DEPTH_MODEL] and listed[0]["size_bytes"] > 90e6
    # No hub here (and on a machine with one, this repo does not exist): one line, exit 2.
    code, _, err = run_cli(capsys, "models", "download", "so101-sim2real-tests/no-such-model", "--cache-dir", cache)
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_infer_with_real_perception_on_the_twin(capsys, snapshot, seg_ckpt, depth_folder):
    code, out, err = run_cli(capsys, "infer", "--ckpt", str(snapshot), "--perception", "real", "--seg-ckpt",
                             str(seg_ckpt), "--depth-model", str(depth_folder), "-n", "1", "--max-steps", "3",
                             "--json", "--backend", "torch")  # auto's choice is tested in test_backends.py
    assert code == 0, err
    assert "real perception, fast profile" in out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["episodes"] == 1 and result["per_episode"][0]["steps"] == 3
    assert result["latency_ms"]["obs"]["p50_ms"] > 0



@pytest.mark.parametrize("where", [(), ("--robot", "so101", "--port", "emulator")])
def test_overlap_is_refused_where_the_camera_renders_in_the_loops_thread(capsys, snapshot, seg_ckpt, where):
    code, _, err = run_cli(capsys, "infer", "--ckpt", str(snapshot), *where, "--perception", "real", "--seg-ckpt",
                           str(seg_ckpt), "--overlap", "-n", "1")
    assert code == 2 and "only for an arm on a serial port" in err, err


def test_backends_are_checked_on_frames_spread_over_the_source(tmp_path):
    """A file or folder: frames spread over it, read by a second reader (the run still sees every
    frame from the first); a live camera: its next frames, a few apart."""
    import numpy as np

    from so101_sim2real.cameras import open_camera
    from so101_sim2real.control.frames import source_frames
    from so101_sim2real.interfaces import Frame
    from so101_sim2real.perception.fidelity import LIVE_GAP

    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((48, 64, 3), i * 40, np.uint8))
    camera = open_camera(str(tmp_path))
    images = source_frames(camera, 3, lambda: open_camera(str(tmp_path)))
    assert [int(im[0, 0, 0]) for im in images] == [0, 80, 160]  # first, middle, last
    assert int(camera.read().rgb[0, 0, 0]) == 0  # the run's camera still starts at the first frame
    two = tmp_path / "two"
    two.mkdir()
    for name in ("0.png", "4.png"):
        (two / name).write_bytes((tmp_path / name).read_bytes())
    assert len(source_frames(open_camera(str(two)), 3, lambda: open_camera(str(two)))) == 2  # all there are
    reads = []

    def counted():
        reader = open_camera(str(tmp_path))
        inner = reader.read
        reader.read = lambda: reads.append(1) or inner()
        return reader

    source_frames(open_camera(str(tmp_path)), 3, counted)
    assert len(reads) == 3  # straight to each pick: nothing decoded on the way

    class Promising:  # a header that promises more frames than the file holds
        frame_count = 10

        def seek(self, index: int) -> None:
            pytest.fail("the run's camera is not moved")

    images = source_frames(Promising(), 3, lambda: open_camera(str(tmp_path)))
    assert [int(im[0, 0, 0]) for im in images] == [0, 160]  # frames 0 and 4 (of 0, 4, 9): what there is
    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    for i in range(12):
        writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    writer.release()
    images = source_frames(open_camera(str(video)), 3, lambda: open_camera(str(video)))
    assert [round(int(im[0, 0, 0]) / 20) for im in images] == [0, 6, 11]
    for unsaid in (0, -1):  # a header that does not say how long: its first frames, a gap apart

        def headerless(unsaid: int = unsaid):
            camera = open_camera(str(video))
            camera.frames = unsaid
            return camera

        run = headerless()
        images = source_frames(run, 3, headerless)
        assert [round(int(im[0, 0, 0]) / 20) for im in images] == [0, LIVE_GAP]  # 12 frames hold two picks
        assert round(int(run.read().rgb[0, 0, 0]) / 20) == 0  # the run's camera still at its first frame
    assert len(source_frames(open_camera(str(tmp_path / "3.png")), 3, lambda: open_camera(str(tmp_path / "3.png"))))\
        == 1

    class Live:
        count = 0

        def read(self) -> Frame:
            self.count += 1
            return Frame(np.full((4, 4, 3), self.count, np.uint8), float(self.count))

    live = Live()
    images = source_frames(live, 3, lambda: pytest.fail("a live camera is not opened twice"))
    assert [int(im[0, 0, 0]) for im in images] == [1, 1 + LIVE_GAP, 1 + 2 * LIVE_GAP]
