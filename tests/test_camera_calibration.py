"""Camera intrinsics: the board, camera.yaml, the fit, and ``so101 calibrate board|camera`` against the twin.

The twin photographs the board through a camera whose intrinsics and lens are known
(:mod:`so101_sim2real.sim.board_view`), so the calibration is checked against the truth.
The pictures are rendered once per module and written as PNGs, as a person's would be.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fixtures import run_cli
from so101_sim2real.calibrate.camera_fit import Coverage, ModelFit, View, choose, fit_camera
from so101_sim2real.errors import So101Error
from so101_sim2real.geometry.board import BoardSpec, board_layout, board_yaml_path, detect, object_points, render_board
from so101_sim2real.geometry.camera_model import CameraModel

PINHOLE = CameraModel((480, 640), [[605.0, 0, 327.3], [0, 598.0, 236.8], [0, 0, 1]],
                      [-0.25, 0.08, 0.001, -0.0015, -0.01], "pinhole")
FISHEYE = CameraModel((480, 640), [[280.0, 0, 322.0], [0, 279.0, 243.0], [0, 0, 1]],
                      [0.03, -0.01, 0.004, -0.001], "fisheye")


def _write(folder, images) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, rgb in enumerate(images):
        cv2.imwrite(str(folder / f"view_{i:02d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def twin_views(tmp_path_factory):
    """The twin's pictures of the default board through each true camera: {name: (folder, BoardViews)}."""
    from so101_sim2real.sim.board_view import render_board_views

    root = tmp_path_factory.mktemp("board_views")
    out = {}
    for name, camera in (("pinhole", PINHOLE), ("fisheye", FISHEYE)):
        views = render_board_views(BoardSpec(), camera, count=16, seed=0)
        _write(root / name, views.images)
        out[name] = (root / name, views)
    return out


def _one_line_error(code: int, out: str, err: str, *words: str) -> None:
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err + out
    for word in words:
        assert word in err, err


# --- the board -----------------------------------------------------------------------------------------------

def test_a_charuco_board_is_found_in_its_own_image_corner_for_corner():
    spec = BoardSpec()
    image = render_board(spec, dpi=127)  # 5 px per mm: the squares' edges fall on whole pixels
    image_points, obj, ids = detect(spec, image)
    assert len(ids) == len(object_points(spec)) == 24
    layout = board_layout(spec, 127)
    expected = obj[:, :2] / layout.mm_per_px + np.array(layout.origin_px) - 0.5  # pixel centres at integers
    assert np.abs(image_points - expected).max() < 0.05
    np.testing.assert_allclose(obj, object_points(spec)[ids])


def test_a_checkerboard_is_found_in_its_own_image():
    spec = BoardSpec(type="checkerboard", squares=(7, 5), square_mm=30)
    image_points, obj, ids = detect(spec, render_board(spec, dpi=72))
    assert len(image_points) == 24 and obj.shape == (24, 3)


def test_the_printable_image_has_its_physical_size_and_a_caption():
    spec = BoardSpec()
    layout = board_layout(spec, 300)
    image = render_board(spec, 300)
    assert image.shape == layout.image_px[::-1]
    assert layout.board_px == (round(210 / 25.4 * 300), round(150 / 25.4 * 300))
    caption_band = image[layout.origin_px[1] + layout.board_px[1]:, :]
    assert (caption_band < 128).any()  # the caption is drawn below the board


def test_board_yaml_round_trip_and_a_bad_one(tmp_path):
    spec = BoardSpec(squares=(9, 6), square_mm=25, marker_mm=18, dictionary="DICT_4X4_50", legacy=True)
    path = spec.save(board_yaml_path(tmp_path / "board.png"))
    assert path.name == "board.yaml" and BoardSpec.load(path) == spec
    path.write_text("type: charuco\nsquares: [9, six]\nsquare_mm: 25\nmarker_mm: 18\n")
    with pytest.raises(So101Error, match="squares"):
        BoardSpec.load(path)
    path.write_text("type: charuco\nsquares: [7, 5]\nsquare_mm: 30\nmarker_mm: 40\n")
    with pytest.raises(So101Error, match="marker"):
        BoardSpec.load(path)


# --- camera.yaml ---------------------------------------------------------------------------------------------

def test_camera_yaml_round_trip(tmp_path):
    camera = CameraModel(PINHOLE.size, PINHOLE.K, PINHOLE.D, "pinhole", rms=0.21, per_view_errors=[0.2, 0.25],
                         date="2025-01-02T03:04:05+00:00", source="test")
    loaded = CameraModel.load(camera.save(tmp_path / "camera.yaml"))
    np.testing.assert_array_equal(loaded.K, camera.K)
    np.testing.assert_array_equal(loaded.D, camera.D)
    assert (loaded.size, loaded.model, loaded.rms, loaded.per_view_errors, loaded.date, loaded.source) == (
        camera.size, camera.model, camera.rms, camera.per_view_errors, camera.date, camera.source)
    assert "fx 605.0" in (tmp_path / "camera.yaml").read_text()  # the header a person reads


@pytest.mark.parametrize(("text", "field"), [
    ("model: pinhole\nsize: [480, 640]\nK: [[600, 0, 320], [0, 600, 240]]\nD: [0, 0, 0, 0, 0]\n", "K"),
    ("model: pinhole\nsize: [480, 640]\nK: [[600, 0, 320], [0, 600, 240], [0, 0, 1]]\nD: [0, 0, 0]\n", "D"),
    ("model: fisheye\nsize: [480, 640]\nK: [[600, 0, 320], [0, 600, 240], [0, 0, 1]]\nD: [0, 0, 0, 0, 0]\n", "D"),
    ("model: pinhole\nsize: [480]\nK: [[600, 0, 320], [0, 600, 240], [0, 0, 1]]\nD: [0, 0, 0, 0, 0]\n", "size"),
    ("model: wide\nsize: [480, 640]\nK: [[600, 0, 320], [0, 600, 240], [0, 0, 1]]\nD: [0, 0, 0, 0, 0]\n", "model"),
    ("model: pinhole\nsize: [480, 640]\nK: [[600, 0, 320], [0, 600, 240], [0, 0, 1]]\nD: [0, 0, 0, 0, 0]\n"
     "rsm: 0.2\n", "rsm"),
    ("model: pinhole\nsize: [480, 640]\nK: [[600, 0, 320], [0, 600, 240], [0, 0, 1]\n", "YAML error"),
    ("- just a list\n", "mapping"),
])
def test_a_malformed_camera_yaml_is_one_line_naming_the_field(tmp_path, text, field):
    path = tmp_path / "camera.yaml"
    path.write_text(text)
    with pytest.raises(So101Error) as caught:
        CameraModel.load(path)
    assert field in str(caught.value) and "\n" not in str(caught.value)


def test_points_through_the_lens_and_back():
    for camera in (PINHOLE, FISHEYE):
        pixels = np.array([[0.0, 0.0], [320.0, 240.0], [639.0, 479.0], [100.0, 400.0]])
        np.testing.assert_allclose(camera.distort_points(camera.undistort_points(pixels)), pixels, atol=1e-6)
        rays = np.column_stack([camera.undistort_points(pixels) * 2.0, np.full(4, 2.0)])
        np.testing.assert_allclose(camera.project(rays), pixels, atol=1e-6)


def test_scaled_to_another_resolution_of_the_same_sensor():
    big = PINHOLE.scaled_to((960, 1280))
    assert big.fx == pytest.approx(2 * PINHOLE.fx) and big.cx == pytest.approx(2 * PINHOLE.cx + 0.5)
    assert big.fovy_deg() == pytest.approx(PINHOLE.fovy_deg(), abs=0.01)
    with pytest.raises(So101Error, match="aspect ratio"):
        PINHOLE.scaled_to((720, 1280))


# --- the twin and the fit ------------------------------------------------------------------------------------

@pytest.mark.slow  # the module's twin renders: ~5-9 s for the first test that needs them
def test_the_twin_puts_each_corner_where_the_true_camera_projects_it(twin_views):
    """Checks the twin itself: MuJoCo's principal-point convention, the texture's placement, the lens."""
    for name in ("pinhole", "fisheye"):
        _, views = twin_views[name]
        residuals = []
        for image, pose in zip(views.images, views.poses, strict=True):
            found = detect(BoardSpec(), image)
            if found is not None:
                image_points, obj, _ = found
                projected = views.camera.project((pose.R @ (obj.T / 1000.0)).T + pose.t)
                residuals.append(image_points - projected)
        residuals = np.concatenate(residuals)
        assert np.abs(residuals.mean(axis=0)).max() < 0.05, name  # no bias (a half pixel, a flipped sign)
        assert np.sqrt(np.mean(np.sum(residuals ** 2, axis=1))) < 0.3, name  # detection noise, resampling


def _views(folder) -> list[View]:
    out = []
    for path in sorted(folder.glob("*.png")):
        found = detect(BoardSpec(), cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
        if found is not None:
            out.append(View(found[0], found[1], path.name))
    return out


def _relative_errors(camera: CameraModel, truth: CameraModel) -> dict[str, float]:
    return {k: abs(getattr(camera, k) - getattr(truth, k)) / getattr(truth, k) for k in ("fx", "fy", "cx", "cy")}


@pytest.mark.slow  # the module's twin renders: ~5-9 s for the first test that needs them
def test_calibrate_camera_recovers_a_pinhole_lens(capsys, twin_views, tmp_path):
    folder, _ = twin_views["pinhole"]
    code, out, err = run_cli(capsys, "calibrate", "camera", "--images", str(folder), "--out",
                             str(tmp_path / "camera.yaml"), "--report", str(tmp_path / "report"))
    assert code == 0, err
    camera = CameraModel.load(tmp_path / "camera.yaml")
    errors = _relative_errors(camera, PINHOLE)
    assert max(errors.values()) < 0.01, errors
    assert camera.model == "pinhole" and camera.rms < 0.5
    assert "pinhole *" in out and "16 used of 16 found" in out
    assert (tmp_path / "report" / "reprojection_errors.png").exists()
    assert (tmp_path / "report" / "undistorted.png").exists()


@pytest.mark.slow  # the module's twin renders: ~5-9 s for the first test that needs them
def test_a_fisheye_lens_is_fitted_with_the_fisheye_model(twin_views):
    folder, _ = twin_views["fisheye"]
    camera, report = fit_camera(_views(folder), FISHEYE.size)
    errors = _relative_errors(camera, FISHEYE)
    assert report.chosen == "fisheye" and camera.model == "fisheye", report.reason
    assert max(errors.values()) < 0.01, errors
    assert camera.rms < 0.5 and report.fit("fisheye").rms < report.fit("pinhole").rms


@pytest.mark.slow  # the module's twin renders: ~5-9 s for the first test that needs them
def test_live_capture_takes_views_that_add_coverage(capsys, twin_views, tmp_path):
    folder, _ = twin_views["pinhole"]
    code, out, err = run_cli(capsys, "calibrate", "camera", "--camera", str(folder), "--views", "12",
                             "--min-views", "6", "--out", str(tmp_path / "camera.yaml"))
    assert code == 0, err
    taken = [line for line in out.splitlines() if line.startswith("view ")]
    assert 6 <= len(taken) <= 12 and taken[0].startswith("view 1: coverage ")
    assert CameraModel.load(tmp_path / "camera.yaml").rms < 0.5


def test_the_better_model_is_kept_by_rms_then_edge_rms_and_a_failed_fit_is_out():
    def fit(model, rms, edge, ok=True):
        camera = PINHOLE if model == "pinhole" else FISHEYE
        return ModelFit(model, camera if ok else None, rms, edge, problem=None if ok else "diverged")

    assert choose([fit("pinhole", 0.30, 0.5), fit("fisheye", 0.20, 0.6)])[0].model == "fisheye"
    assert choose([fit("pinhole", 0.30, 0.5), fit("fisheye", 0.29, 0.3)])[0].model == "fisheye"  # a tie: edges
    assert choose([fit("pinhole", 0.30, 0.3), fit("fisheye", 0.29, 0.3)])[0].model == "pinhole"  # a tie of ties
    best, reason = choose([fit("pinhole", 0.9, 0.9), fit("fisheye", 0.1, 0.1, ok=False)])
    assert best.model == "pinhole" and "fisheye failed" in reason
    assert choose([fit("pinhole", 0.9, 0.9, ok=False)])[0] is None


def test_too_few_views_is_one_line():
    with pytest.raises(So101Error, match="too few views: 3, need at least 6"):
        fit_camera([View(np.zeros((6, 2)), np.zeros((6, 3)))] * 3, (480, 640))


def test_coverage_takes_a_view_only_when_it_adds_to_the_picture():
    coverage = Coverage((480, 640))
    grid = np.mgrid[0:4, 0:3].T.reshape(-1, 2).astype(np.float32)
    obj = np.column_stack([grid * 30, np.zeros(len(grid))]).astype(np.float32)
    top_left = grid * 40 + 20
    assert coverage.add(top_left, obj)
    assert not coverage.adds(top_left + 1, obj)  # the same place, the same tilt
    assert coverage.add(top_left + [450, 300], obj)  # the bottom right corner
    assert 0 < coverage.fraction < 0.5


# --- the commands --------------------------------------------------------------------------------------------

def test_calibrate_board_writes_the_png_its_yaml_and_a_pdf(capsys, tmp_path):
    code, out, err = run_cli(capsys, "calibrate", "board", "--out", str(tmp_path / "board.png"), "--dpi", "100")
    assert code == 0, err
    assert {p.name for p in tmp_path.iterdir()} == {"board.png", "board.yaml", "board.pdf"}
    assert BoardSpec.load(tmp_path / "board.yaml") == BoardSpec()  # what calibrate camera assumes without --board
    assert "210 x 150 mm" in out
    image = cv2.imread(str(tmp_path / "board.png"), cv2.IMREAD_GRAYSCALE)
    assert detect(BoardSpec(), image) is not None


def _board_pictures(folder, count: int) -> None:
    """Flat pictures of the board, no twin needed: enough to be found, too few to calibrate."""
    board = cv2.cvtColor(render_board(BoardSpec(), dpi=60), cv2.COLOR_GRAY2RGB)
    canvas = np.zeros((480, 640, 3), np.uint8)
    canvas[:board.shape[0], :board.shape[1]] = board[:480, :640]
    _write(folder, [canvas] * count)


@pytest.mark.parametrize(("case", "words"), [
    ("missing", ["no such folder"]),
    ("empty", ["no images"]),
    ("no board", ["not in any of the 3 image(s)"]),
    ("mixed sizes", ["view_02.png", "320x240", "640x480"]),
    ("too few", ["too few views", "found in 4 of 4", "need at least 10"]),
])
def test_bad_input_to_calibrate_camera_is_one_line_and_exit_2(capsys, tmp_path, case, words):
    images = tmp_path / "images"
    if case == "empty":
        images.mkdir()
    elif case in ("no board", "mixed sizes"):
        _write(images, [np.full((480, 640, 3), 200, np.uint8)] * 3)
    elif case == "too few":
        _board_pictures(images, 4)
    if case == "mixed sizes":
        cv2.imwrite(str(images / "view_02.png"), np.full((240, 320, 3), 200, np.uint8))
    code, out, err = run_cli(capsys, "calibrate", "camera", "--images", str(images), "--out",
                             str(tmp_path / "camera.yaml"))
    _one_line_error(code, out, err, *words)
    assert not (tmp_path / "camera.yaml").exists()


def test_a_board_yaml_that_does_not_parse_is_one_line(capsys, tmp_path):
    _board_pictures(tmp_path / "images", 1)
    (tmp_path / "board.yaml").write_text("type: charuco\nsquares: [7, 5\n")
    code, out, err = run_cli(capsys, "calibrate", "camera", "--images", str(tmp_path / "images"), "--board",
                             str(tmp_path / "board.yaml"), "--out", str(tmp_path / "camera.yaml"))
    _one_line_error(code, out, err, "board.yaml", "YAML error")
    code, out, err = run_cli(capsys, "calibrate", "camera", "--out", str(tmp_path / "camera.yaml"))
    _one_line_error(code, out, err, "--camera", "--images")


@pytest.mark.slow
def test_the_camera_rehearsal_recovers_the_twins_lens(capsys, tmp_path):
    from fixtures import run_cli
    from so101_sim2real.geometry.camera_model import CameraModel
    from so101_sim2real.sim.board_view import REHEARSAL_LENS

    code, out, err = run_cli(capsys, "calibrate", "camera", "--camera", "twin", "--out", str(tmp_path / "camera.yaml"))
    assert code == 0, err
    model = CameraModel.load(tmp_path / "camera.yaml")
    assert model.model == "pinhole" and model.rms < 0.5
    for got, want in ((model.fx, REHEARSAL_LENS.fx), (model.fy, REHEARSAL_LENS.fy), (model.cx, REHEARSAL_LENS.cx),
                      (model.cy, REHEARSAL_LENS.cy)):
        assert abs(got / want - 1) < 0.01
    assert "against the rehearsal's lens" in out
