"""The twin takes the calibration (issue 14): a rig file's camera in the twin, real frames undistorted
to the same ideal pinhole camera, joint offsets in the arm's calibration, and ``--rig`` on the commands."""

from __future__ import annotations

import cv2
import mujoco
import numpy as np
import pytest

from fixtures import run_cli as run
from so101_sim2real.control.description import describe
from so101_sim2real.errors import So101Error
from so101_sim2real.geometry.camera_model import CameraModel
from so101_sim2real.geometry.rig_file import RigGeometry, default_rig
from so101_sim2real.interfaces import Frame
from so101_sim2real.sim import scene as S

SIZE = (480, 640)  # the spec's source size (H, W): what the twin renders


def _calibrated_rig(size=(720, 960), D=(0, 0, 0, 0, 0), model="pinhole") -> RigGeometry:
    """A camera unlike the sim's guess: longer focal, non-square pixels, principal point off-centre,
    calibrated at another resolution of the same aspect (so the twin scales it)."""
    s = size[0] / SIZE[0]
    K = np.array([[400.0 * s, 0, 350.0 * s], [0, 404.0 * s, 210.0 * s], [0, 0, 1]])
    return RigGeometry(camera=CameraModel(size=size, K=K, D=np.array(D, float), model=model),
                       mount_pos=(0.008, -0.064, -0.018), mount_euler=(0.41, 0.01, 3.14159))


# --- the twin's camera -----------------------------------------------------------------------------------

def test_the_default_rig_is_todays_twin_exactly():
    from so101_sim2real.control.env import twin_scene
    from so101_sim2real.spec import default_spec

    assert S.scene_for_rig(default_rig(), SIZE) == S.SceneConfig() == twin_scene(default_spec())
    rig = _calibrated_rig()
    scene = S.scene_for_rig(rig, SIZE)
    fx, fy, cx, cy = scene.camera_intrinsics
    assert scene.camera_size == SIZE and (fx, fy) == pytest.approx((400, 404))
    assert (cx, cy) == pytest.approx(((350 * 1.5 + 0.5) / 1.5 - 0.5, (210 * 1.5 + 0.5) / 1.5 - 0.5))
    assert scene.camera_pos == rig.mount_pos and scene.camera_euler == rig.mount_euler


def _dots_model(rig: RigGeometry, pixels: list[tuple[float, float]], depth_m: float = 0.08):
    """The twin with its camera from ``rig``, and a 3 mm ball (a mocap body) on each pixel's ray,
    ``depth_m`` ahead of the camera: where the rig's camera model says the ball's centre projects."""
    spec = S.build_spec(S.scene_for_rig(rig, SIZE))
    for i in range(len(pixels)):
        body = spec.worldbody.add_body(name=f"dot{i}", mocap=True)
        body.add_geom(name=f"dot{i}", type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[0.0015, 0, 0], contype=0,
                      conaffinity=0)
    model = spec.compile()
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    mujoco.mj_camlight(model, data)  # cameras are placed here, not in mj_kinematics
    cam = model.camera(S.WRIST_CAMERA).id
    R, t = data.cam_xmat[cam].reshape(3, 3), data.cam_xpos[cam].copy()
    rays = rig.camera.scaled_to(SIZE).undistort_points(np.array(pixels, float))
    for i, (x, y) in enumerate(rays):
        # OpenCV's camera looks down +z with y down; MuJoCo's down -z with y up
        data.mocap_pos[i] = t + R @ (np.array([x, -y, -1.0]) * depth_m)
    mujoco.mj_kinematics(model, data)
    mujoco.mj_camlight(model, data)
    return model, data, R, t


def _centroids(model, data, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Each ball's segmentation-mask centroid (px) and area, in one render of the wrist camera."""
    from so101_sim2real.sim.camera import _import_triton_before_gl

    _import_triton_before_gl()  # else Mesa's LLVM and triton's crash the process
    renderer = mujoco.Renderer(model, *SIZE)
    try:
        renderer.enable_segmentation_rendering()
        options = mujoco.MjvOption()
        options.sitegroup[:] = 0
        renderer.update_scene(data, camera=S.WRIST_CAMERA, scene_option=options)
        seg = renderer.render()
    finally:
        renderer.close()
    centres, areas = [], []
    for i in range(count):
        ys, xs = np.nonzero((seg[..., 0] == model.geom(f"dot{i}").id) & (seg[..., 1] == mujoco.mjtObj.mjOBJ_GEOM))
        centres.append((xs.mean(), ys.mean()) if len(xs) else (np.nan, np.nan))
        areas.append(len(xs))
    return np.array(centres), np.array(areas)


# Clear of the jaws, from the centre to the corners of the image.
PIXELS = [(320, 240), (60, 50), (600, 60), (80, 430), (610, 260), (350, 210)]


@pytest.mark.parametrize("which", ["calibrated", "default"])
def test_the_twin_renders_a_point_where_the_rigs_camera_model_projects_it(which):
    rig = _calibrated_rig() if which == "calibrated" else default_rig()
    model, data, R, t = _dots_model(rig, PIXELS)
    centres, areas = _centroids(model, data, len(PIXELS))
    points = np.array([R.T @ (data.mocap_pos[i] - t) for i in range(len(PIXELS))]) * [1, -1, -1]  # OpenCV axes
    expected = rig.camera.scaled_to(SIZE).project(points)
    f = rig.camera.scaled_to(SIZE).fx
    assert (areas > 0.8 * np.pi * (f * 0.0015 / 0.08) ** 2).all(), areas  # each ball whole, not behind a jaw
    error = np.linalg.norm(centres - expected, axis=1)
    assert error.max() < 0.5, f"projection error {np.round(error, 3)} px"


def test_the_twins_camera_refuses_a_render_size_its_intrinsics_are_not_for():
    from so101_sim2real.sim.camera import SimCamera
    from so101_sim2real.spec import default_spec

    model = S.build_model(S.scene_for_rig(_calibrated_rig(), (240, 320)))
    with pytest.raises(So101Error, match="intrinsics for 320x240 images, rendered at 640x480"):
        SimCamera(model, mujoco.MjData(model), default_spec().observation)


# --- real frames undistorted to the ideal pinhole camera ------------------------------------------------

def _checkerboard(size: tuple[int, int], square: int) -> tuple[np.ndarray, np.ndarray]:
    """An ideal image of a centred 8 x 6 checkerboard (anti-aliased), and its inner corners in pixels."""
    ss = 8  # supersampling: an edge at supersampled pixel ss * b is at pixel b - 0.5
    height, width = size
    x0, y0 = (width - 8 * square) // 2, (height - 6 * square) // 2
    big = np.full((height * ss, width * ss), 255, np.uint8)
    for r in range(6):
        for c in range(8):
            if (r + c) % 2 == 0:
                top, left = (y0 + r * square) * ss, (x0 + c * square) * ss
                big[top:top + square * ss, left:left + square * ss] = 0
    image = cv2.resize(big, (width, height), interpolation=cv2.INTER_AREA)
    corners = np.array([(x0 + c * square - 0.5, y0 + r * square - 0.5) for r in range(1, 6) for c in range(1, 8)])
    return np.repeat(image[:, :, None], 3, axis=2), corners


def _through_lens(ideal: np.ndarray, camera: CameraModel) -> np.ndarray:
    """What ``camera`` (lens and all) sees of the scene whose ideal pinhole image is ``ideal``."""
    height, width = camera.size
    grid = np.stack(np.meshgrid(np.arange(width), np.arange(height)), axis=-1).reshape(-1, 2).astype(float)
    rays = camera.undistort_points(grid)
    map_x = (rays[:, 0] * camera.fx + camera.cx).reshape(height, width).astype(np.float32)
    map_y = (rays[:, 1] * camera.fy + camera.cy).reshape(height, width).astype(np.float32)
    return cv2.remap(ideal, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(255,) * 3)


def _corner_error(image: np.ndarray, corners: np.ndarray) -> float:
    """How far the board's corners found in ``image`` are from ``corners``, at most (px)."""
    found, detected = cv2.findChessboardCornersSB(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (7, 5))
    assert found
    detected = detected.reshape(-1, 2)
    return float(max(np.linalg.norm(detected - c, axis=1).min() for c in corners))


def _detected(image: np.ndarray) -> np.ndarray:
    found, corners = cv2.findChessboardCornersSB(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (7, 5))
    assert found
    return corners.reshape(-1, 2)


class _Frames:
    def __init__(self, *images: np.ndarray):
        self.images, self.closed = list(images), False

    def read(self) -> Frame:
        return Frame(self.images.pop(0), 0.0, 1)

    def close(self) -> None:
        self.closed = True


# squares of 20 px or less bias the corner detector by ~0.3 px
@pytest.mark.parametrize(("lens", "size", "square"), [("pinhole", (480, 640), 40), ("fisheye", (240, 320), 26)])
def test_a_distorted_frame_is_undistorted_to_the_ideal_pinhole_image(lens, size, square):
    from so101_sim2real.cameras import UndistortedCamera, undistorted

    D = (-0.28, 0.09, 0.001, -0.001, 0.0) if lens == "pinhole" else (0.06, -0.02, 0.004, 0.0)
    calibrated = CameraModel(size=(480, 640), K=np.array([[420.0, 0, 322], [0, 418, 236], [0, 0, 1]]), D=D,
                             model=lens)
    camera = calibrated.scaled_to(size)  # a stream at half the calibrated resolution uses the scaled model
    ideal, corners = _checkerboard(size, square)
    distorted = _through_lens(ideal, camera)
    straightened = undistorted(_Frames(distorted, distorted), calibrated)
    assert isinstance(straightened, UndistortedCamera)
    first = straightened.read().rgb
    assert straightened.active.size == size and np.array_equal(straightened.read().rgb, first)  # maps made once
    assert _corner_error(ideal, corners) < 0.2  # the detector finds the drawn corners
    assert _corner_error(first, corners) < 0.3
    assert _corner_error(first, _detected(ideal)) < 0.15  # against the same detector on the ideal image
    assert _corner_error(distorted, corners) > 2.0  # the lens matters: left as it is, the corners are off


def test_undistortion_refuses_another_aspect_ratio_and_passes_a_lens_free_camera():
    from so101_sim2real.cameras import UndistortedCamera, undistorted

    calibrated = _calibrated_rig(D=(-0.2, 0.05, 0, 0, 0)).camera
    with pytest.raises(So101Error, match="another aspect ratio") as info:
        UndistortedCamera(_Frames(np.zeros((480, 480, 3), np.uint8)), calibrated).read()
    assert "\n" not in str(info.value)
    frames = _Frames()
    assert undistorted(frames, _calibrated_rig().camera) is frames


# --- joint offsets ----------------------------------------------------------------------------------------

def test_joint_offsets_add_to_the_reading_and_come_off_the_goals():
    from so101_sim2real.control.twin_bus import twin_arm_calibration
    from so101_sim2real.hardware.joint_calibration import with_joint_offsets

    base = twin_arm_calibration()
    offsets = np.radians([-3.0, -3.0, 5.0, 5.0, 0.0, 1.5])
    calibration = with_joint_offsets(base, offsets)
    raw = {j: m.mid + 100 * (i - 2) for i, (j, m) in enumerate(base.motors.items())}
    raw = {j: int(v) for j, v in raw.items()}
    assert np.allclose(calibration.to_sim(raw), base.to_sim(raw) + offsets)
    assert calibration.to_raw(calibration.to_sim(raw)) == raw
    assert calibration.to_raw(base.to_sim(raw) + offsets) == raw  # a goal in sim angles: the offset comes off
    assert base.sim == twin_arm_calibration().sim  # the calibration it came from is left as it was


# --- the rig request and the commands --------------------------------------------------------------------

def test_an_arm_gets_the_rigs_offsets_and_undistorted_frames(tmp_path, monkeypatch):
    """build_env on a serial port: the calibration and camera so101_env gets (no arm, no networks)."""
    import so101_sim2real.control.env as rig_module
    import so101_sim2real.perception.load as load
    from so101_sim2real.cameras import UndistortedCamera
    from so101_sim2real.control.twin_bus import twin_arm_calibration
    from so101_sim2real.spec import default_spec

    rig = _calibrated_rig(D=(-0.2, 0.05, 0, 0, 0))
    rig.joint_offsets_rad = np.radians([1.0, -2.0, 3.0, 0.0, 0.0, 0.0])
    path = rig.save(tmp_path / "rig.yaml")
    cv2.imwrite(str(tmp_path / "frame.png"), np.full((480, 640, 3), 128, np.uint8))
    (tmp_path / "ttyFAKE").write_text("")
    got = {}
    monkeypatch.setattr(load, "real_perception_factory", lambda *a, **k: (lambda camera: None))
    monkeypatch.setattr(rig_module, "so101_env", lambda spec, port, **kw: got.update(kw))
    where = describe(robot="so101", port=tmp_path / "ttyFAKE", calibration="twin", camera=tmp_path / "frame.png",
                     perception="real", seg_ckpt="seg.ckpt", rig=path)
    rig_module.build_env(default_spec(), where)
    raw = {j: int(m.mid) for j, m in twin_arm_calibration().motors.items()}
    assert np.allclose(got["calibration"].to_sim(raw), twin_arm_calibration().to_sim(raw) + rig.joint_offsets_rad)
    assert isinstance(got["camera"], UndistortedCamera) and got["camera"].read().rgb.shape == (480, 640, 3)


def test_the_twin_sees_through_the_rig_files_camera(tmp_path):
    from so101_sim2real.control.env import build_env
    from so101_sim2real.spec import default_spec

    camera = _calibrated_rig().camera
    camera.save(tmp_path / "camera.yaml")  # a plain camera.yaml works as a rig: the mount stays the sim's
    twin = build_env(default_spec(), describe(rig=tmp_path / "camera.yaml"))
    try:
        model = twin.twin.model
        cam = model.camera(S.WRIST_CAMERA).id
        assert tuple(model.cam_resolution[cam]) == (640, 480)
        assert model.cam_intrinsic[cam][:2] == pytest.approx(np.array([400, 404]) * model.cam_sensorsize[cam] /
                                                             [640, 480])
        assert np.allclose(model.cam_pos[cam], S.SceneConfig().camera_pos)
        assert twin.perception.observe(with_rgb=True).rgb.shape == (480, 640, 3)
    finally:
        twin.close()


def test_inspect_says_which_camera_the_twin_sees_through(capsys, snapshot, tmp_path):
    code, out, _ = run(capsys, "inspect", "--ckpt", str(snapshot))
    assert code == 0
    assert out.strip().splitlines()[-1] == f"camera: {default_rig().describe()}"
    assert "the sim's guesses, not calibrated (so101 calibrate camera" in out
    rig = _calibrated_rig()
    code, out, _ = run(capsys, "inspect", "--ckpt", str(snapshot), "--rig", str(rig.save(tmp_path / "rig.yaml")))
    assert code == 0 and out.strip().splitlines()[-1] == f"camera: {rig.describe()}" and "not calibrated" not in out


def test_infer_prints_the_camera_line(capsys, tmp_path):
    code, out, _ = run(capsys, "infer", "--ckpt", "scripted", "--episodes", "1", "--max-steps", "1")
    assert code == 0 and f"camera: {default_rig().describe()}" in out.splitlines()
    path = _calibrated_rig().save(tmp_path / "rig.yaml")
    code, out, _ = run(capsys, "infer", "--ckpt", "scripted", "--episodes", "1", "--max-steps", "1", "--rig", str(path))
    assert code == 0 and f"camera: {_calibrated_rig().describe()}" in out.splitlines()


def test_a_hilserl_run_keeps_its_rig_and_a_resume_refuses_another(capsys, tmp_path):
    from so101_sim2real.hilserl.run import RunFolder, RunOptions
    from so101_sim2real.hilserl.trainer import TrainConfig

    path = str(_calibrated_rig().save(tmp_path / "rig.yaml"))
    RunFolder.create(tmp_path / "run", RunOptions(describe(ckpt="policy.pt", rig=path)), TrainConfig())
    kept = RunFolder.open(tmp_path / "run").options.where.camera.rig
    assert kept == str((tmp_path / "run" / "rig.yaml").resolve())  # its own copy, not the file given
    (tmp_path / "rig.yaml").write_text("edited later: not yaml that a rig reads\n")
    from so101_sim2real.geometry.rig_file import RigGeometry

    assert RigGeometry.load(kept).describe() == _calibrated_rig().describe()
    code, _, err = run(capsys, "hilserl", "train", "--out", str(tmp_path / "run"), "--resume", "--rig", path)
    assert code == 2 and "--rig: a resumed run keeps its own" in err
