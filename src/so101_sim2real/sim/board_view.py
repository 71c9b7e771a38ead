"""The twin photographs a calibration board: a camera with known intrinsics and lens, for testing
``so101 calibrate camera`` against the truth.

A small MuJoCo scene holds the printable board (:func:`~so101_sim2real.geometry.board.render_board`)
as a texture on a plane, lit by an even ambient light, and a free camera with explicit
intrinsics. MuJoCo renders an ideal pinhole image; the lens is then applied with
``cv2.remap``: each output pixel takes the ideal image's colour where the true camera model
says that pixel's ray lands. The ideal image is rendered on a canvas wide enough for every
output pixel's ray, so a barrel or fisheye lens has no black corners.

MuJoCo's principal point (``principal_pixel``) is an offset from the sensor centre whose x
sign is opposite OpenCV's: ``cx = (W - 1) / 2 - px`` and ``cy = (H - 1) / 2 + py``, checked by
rendering the board and comparing detected corners with their projection
(:func:`mujoco_principal`; the tests check it again).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import cv2
import mujoco
import numpy as np

from so101_sim2real.errors import So101Error
from so101_sim2real.geometry.board import BoardSpec, board_layout, render_board
from so101_sim2real.geometry.camera_model import CameraModel

CAMERA = "board_cam"
BOARD_DPI = 127  # 5 texels per mm: a 30 mm square is exactly 150 texels, so the texture puts corners where they are
MAX_CANVAS = 1600  # px: the ideal image's longer side at most (render time grows with it)
_PIXEL_PITCH = 1e-5  # m per pixel of the virtual sensor; only the ratios to the focal length matter


@dataclass(frozen=True)
class Pose:
    """A camera pose in the board's frame (metres): ``R`` turns board coordinates into camera ones
    (OpenCV axes: x right, y down, z forward) and ``t`` is the board origin in the camera frame."""

    R: np.ndarray
    t: np.ndarray

    @property
    def position(self) -> np.ndarray:
        return -self.R.T @ self.t


@dataclass
class BoardViews:
    """What the twin saw: distorted RGB images, the true camera, and the true poses."""

    images: list[np.ndarray]
    camera: CameraModel
    poses: list[Pose]
    render_s: float = 0.0  # MuJoCo's share of the time
    lens_s: float = 0.0  # the remap's share
    canvas: tuple[int, int] = (0, 0)  # (H, W) of the ideal renders
    notes: list[str] = field(default_factory=list)


def mujoco_principal(cx: float, cy: float, width: int, height: int) -> tuple[float, float]:
    """MuJoCo's ``principal_pixel`` for an OpenCV principal point (cx, cy) on a W x H image."""
    return (width - 1) / 2 - cx, cy - (height - 1) / 2


@dataclass(frozen=True)
class _Canvas:
    """The ideal pinhole image MuJoCo renders: square pixels of focal ``f``, principal point ``c``."""

    size: tuple[int, int]  # (H, W)
    f: float
    c: tuple[float, float]


def _canvas_for(camera: CameraModel) -> _Canvas:
    """The smallest ideal image that holds every ray of ``camera``'s pixels (with 2 px to spare)."""
    height, width = camera.size
    border = np.concatenate([np.column_stack([np.arange(width), np.full(width, y)]) for y in (-0.5, height - 0.5)]
                            + [np.column_stack([np.full(height, x), np.arange(height)]) for x in (-0.5, width - 0.5)])
    rays = camera.undistort_points(border.astype(np.float64))
    if not np.isfinite(rays).all():
        raise So101Error("the lens bends some pixels' rays past 90 degrees: the twin cannot render it")
    lo, hi = rays.min(axis=0), rays.max(axis=0)
    f = min(max(camera.fx, camera.fy), (MAX_CANVAS - 4) / float(np.max(hi - lo)))
    w, h = (int(math.ceil((hi[i] - lo[i]) * f)) + 4 for i in (0, 1))
    return _Canvas((h, w), f, (2 - lo[0] * f, 2 - lo[1] * f))


def _lens_maps(camera: CameraModel, canvas: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    height, width = camera.size
    grid = np.stack(np.meshgrid(np.arange(width), np.arange(height)), axis=-1).reshape(-1, 2).astype(np.float64)
    rays = camera.undistort_points(grid)
    map_x = (rays[:, 0] * canvas.f + canvas.c[0]).reshape(height, width).astype(np.float32)
    map_y = (rays[:, 1] * canvas.f + canvas.c[1]).reshape(height, width).astype(np.float32)
    return map_x, map_y


def board_scene(board: BoardSpec, canvas_size: tuple[int, int], f: float, c: tuple[float, float],
                dpi: int = BOARD_DPI) -> mujoco.MjModel:
    """The board (its printable image, margin and caption included) on the plane z = 0 of the
    board frame, facing -z, and a camera ``CAMERA`` with focal ``f`` px and principal point ``c``
    (OpenCV convention) on an image of ``canvas_size`` (H, W)."""
    image = render_board(board, dpi)
    layout = board_layout(board, dpi)
    spec = mujoco.MjSpec()
    height, width = image.shape
    texture = spec.add_texture(name="board", type=mujoco.mjtTexture.mjTEXTURE_2D, width=width, height=height,
                               nchannel=3)
    texture.data = np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2)).tobytes()
    material = spec.add_material(name="board", specular=0, shininess=0, reflectance=0)
    material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "board"
    metre_per_px = layout.mm_per_px / 1000
    centre = [(width / 2 - layout.origin_px[0]) * metre_per_px, (height / 2 - layout.origin_px[1]) * metre_per_px, 0]
    # The plane's own z is its visible side: turned half a turn about x, it faces the camera at -z and its
    # texture reads left to right along +x, top to bottom along +y, like the printed page.
    spec.worldbody.add_geom(name="board", type=mujoco.mjtGeom.mjGEOM_PLANE, material="board", pos=centre,
                            size=[width * metre_per_px / 2, height * metre_per_px / 2, 0.01], quat=[0, 1, 0, 0])
    light = spec.visual.headlight  # only an ambient light: the board's grey levels as printed, no shading
    light.ambient, light.diffuse, light.specular = [1.0] * 3, [0.0] * 3, [0.0] * 3
    spec.visual.global_.offheight, spec.visual.global_.offwidth = canvas_size
    spec.visual.map.znear = 0.01  # of the extent: the camera may come close to the board
    cam = spec.worldbody.add_camera(name=CAMERA)
    cam.resolution = [canvas_size[1], canvas_size[0]]
    cam.sensor_size = [canvas_size[1] * _PIXEL_PITCH, canvas_size[0] * _PIXEL_PITCH]
    cam.focal_pixel = [f, f]
    cam.principal_pixel = list(mujoco_principal(c[0], c[1], canvas_size[1], canvas_size[0]))
    return spec.compile()


def _mujoco_quat(R: np.ndarray) -> np.ndarray:
    """MuJoCo's camera looks down its -z with y up; OpenCV's looks down +z with y down."""
    frame = R.T @ np.diag([1.0, -1.0, -1.0])  # camera axes in the board frame, as columns
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, frame.flatten())
    return quat


def look_at(position: np.ndarray, target: np.ndarray, roll_rad: float = 0.0) -> Pose:
    """The pose of a camera at ``position`` looking at ``target`` (board frame, metres), its image's
    down direction along the board's +y where it can be, turned by ``roll_rad`` about its axis."""
    forward = target - position
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    if np.linalg.norm(right) < 1e-6:
        right = np.cross(forward, [1.0, 0.0, 0.0])
    right = -right / np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = math.cos(roll_rad), math.sin(roll_rad)
    right, down = c * right + s * down, -s * right + c * down
    R = np.stack([right, down, forward])
    return Pose(R, -R @ position)


def view_poses(board: BoardSpec, camera: CameraModel, count: int = 16, seed: int = 0) -> list[Pose]:
    """Varied views: tilts 5-50 degrees all round, the board from ~40% of the image width to
    larger than the image (partly out of view), moved about so its corners reach the image's."""
    rng = np.random.default_rng(seed)
    width_m, height_m = (v / 1000 for v in board.size_mm)
    centre = np.array([width_m / 2, height_m / 2, 0.0])
    poses = []
    for i in range(count):
        tilt = math.radians(5 + 45 * ((i * 7) % count) / max(count - 1, 1))  # spread over the set, not in order
        azimuth = 2 * math.pi * i / count + rng.uniform(-0.3, 0.3)
        fill = rng.uniform(0.45, 1.15)  # the board's width over the image's
        distance = camera.fx * width_m / (fill * camera.size[1])
        target = centre + np.array([rng.uniform(-0.35, 0.35) * width_m, rng.uniform(-0.35, 0.35) * height_m, 0])
        direction = np.array([math.sin(tilt) * math.cos(azimuth), math.sin(tilt) * math.sin(azimuth),
                              -math.cos(tilt)])
        poses.append(look_at(target + distance * direction, target, rng.uniform(-0.35, 0.35)))
    return poses


class BoardTwin:
    """The board scene and a renderer: :meth:`photograph` gives what ``camera`` sees from a pose."""

    def __init__(self, board: BoardSpec, camera: CameraModel, dpi: int = BOARD_DPI):
        from so101_sim2real.sim.camera import offscreen_renderer

        self.camera = camera
        self.canvas = _canvas_for(camera)
        self.maps = _lens_maps(camera, self.canvas)
        self.model = board_scene(board, self.canvas.size, self.canvas.f, self.canvas.c, dpi)
        self.data = mujoco.MjData(self.model)
        self.renderer = offscreen_renderer(self.model, *self.canvas.size)
        self.render_s = self.lens_s = 0.0

    def ideal(self, pose: Pose) -> np.ndarray:
        """The ideal pinhole render (the canvas), RGB uint8."""
        started = time.perf_counter()
        cam = self.model.camera(CAMERA)
        cam.pos[:] = pose.position
        cam.quat[:] = _mujoco_quat(pose.R)
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)  # cameras are placed here, not in mj_kinematics
        self.renderer.update_scene(self.data, camera=CAMERA)
        image = self.renderer.render().copy()
        self.render_s += time.perf_counter() - started
        return image

    def photograph(self, pose: Pose) -> np.ndarray:
        """What the camera, lens and all, sees from ``pose``: RGB uint8 of the camera's size."""
        ideal = self.ideal(pose)
        started = time.perf_counter()
        image = cv2.remap(ideal, *self.maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        self.lens_s += time.perf_counter() - started
        return image

    def close(self) -> None:
        """Free the renderer (in its own GL context)."""
        from so101_sim2real.sim.camera import close_renderer

        renderer, self.renderer = getattr(self, "renderer", None), None
        close_renderer(renderer)

    def __enter__(self) -> BoardTwin:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def render_board_views(board: BoardSpec, camera: CameraModel, count: int = 16, seed: int = 0,
                       poses: list[Pose] | None = None) -> BoardViews:
    """Photograph ``board`` from ``count`` varied poses (or the given ones) through ``camera``."""
    poses = poses if poses is not None else view_poses(board, camera, count, seed)
    with BoardTwin(board, camera) as twin:
        images = [twin.photograph(p) for p in poses]
        return BoardViews(images, camera, poses, twin.render_s, twin.lens_s, twin.canvas.size)


# The lens ``so101 calibrate camera --camera twin`` photographs through: a wide pinhole with
# barrel distortion and an off-centre principal point, like a cheap wrist camera's.
REHEARSAL_LENS = CameraModel(size=(480, 640), K=np.array([[420.0, 0, 322.0], [0, 418.0, 236.0], [0, 0, 1]]),
                             D=np.array([-0.25, 0.08, 0.001, -0.0015, -0.01]), source="the rehearsal's lens")


class BoardCamera:
    """A camera (``read``/``close``) that shows the twin's board from a new pose on every read,
    through ``camera``'s lens: what a person waving the board in front of a camera gives."""

    def __init__(self, board: BoardSpec, camera: CameraModel = REHEARSAL_LENS, count: int = 40, seed: int = 0):
        self.camera = camera
        self.poses = view_poses(board, camera, count, seed)
        self.twin = BoardTwin(board, camera)
        self._next = 0

    def read(self):
        from so101_sim2real.cameras import CameraExhausted
        from so101_sim2real.interfaces import Frame

        if self._next >= len(self.poses):
            raise CameraExhausted(f"the rehearsal showed the board from all {len(self.poses)} poses")
        image = self.twin.photograph(self.poses[self._next])
        self._next += 1
        return Frame(image, float(self._next), self._next)

    def close(self) -> None:
        self.twin.close()
