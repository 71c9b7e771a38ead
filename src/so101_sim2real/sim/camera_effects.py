"""What a real camera does to the light a render shows: a stand-in world's picture gaps.

The twin renders an ideal pinhole image. A USB wrist camera's frame went through a lens
(distortion), an exposure while the wrist moved (motion blur), a sensor (exposure time,
gain, white balance, noise) and MJPEG compression, in that order, and so does a
stand-in's frame here. Each step is one of :mod:`so101_sim2real.sim.standin`'s gaps and
runs only when the world has it. The noise is drawn from the world's seed.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

import cv2
import mujoco
import numpy as np

from so101_sim2real.interfaces import Frame
from so101_sim2real.sim.camera import SimCamera
from so101_sim2real.sim.standin import StandIn

PICTURE_GAPS = ("lens_distortion", "motion_blur", "exposure", "sensor_noise", "jpeg")


class CameraEffects:
    """A stand-in's picture gaps, applied to rendered RGB frames (H, W, 3) uint8.

    ``focal_px``: the camera's focal length in pixels at the frame's size (the blur's length
    is the image speed of a turning wrist: focal length x angular speed x exposure)."""

    def __init__(self, world: StandIn, focal_px: float):
        self.world, self.focal_px = world, focal_px
        self.rng = np.random.default_rng([world.seed, 7])  # 7: the picture's own stream

    @property
    def active(self) -> bool:
        return any(self.world.has(name) for name in PICTURE_GAPS)

    def apply(self, rgb: np.ndarray, angular_velocity: np.ndarray | None = None) -> np.ndarray:
        """The frame as the stand-in's camera delivers it. ``angular_velocity``: the camera's
        (rad/s, in its own frame: x right, y up, z back), for the motion blur."""
        w = self.world
        out = rgb
        if (lens := w.get("lens_distortion")) is not None:
            out = distort(out, self.focal_px, lens.coefficients)
        if (blur := w.get("motion_blur")) is not None and angular_velocity is not None:
            out = motion_blur(out, self.focal_px, angular_velocity, blur.exposure_ms / 1000.0)
        exposure, noise = w.get("exposure"), w.get("sensor_noise")
        if exposure is not None or noise is not None:
            out = sensor(out, exposure, noise.std if noise is not None else 0.0, self.rng)
        if (jpeg := w.get("jpeg")) is not None:
            out = compress(out, jpeg.quality)
        return out


@functools.lru_cache(maxsize=4)
def _distortion_maps(size: tuple[int, int], focal_px: float, coefficients: tuple[float, ...]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel of the distorted frame, where it comes from in the ideal one."""
    height, width = size
    K = np.array([[focal_px, 0, (width - 1) / 2], [0, focal_px, (height - 1) / 2], [0, 0, 1]])
    u, v = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    pixels = np.stack([u.ravel(), v.ravel()], axis=1).reshape(-1, 1, 2)
    ideal = cv2.undistortPoints(pixels, K, np.asarray(coefficients, np.float64), P=K).reshape(height, width, 2)
    return ideal[..., 0].astype(np.float32), ideal[..., 1].astype(np.float32)


def distort(image: np.ndarray, focal_px: float, coefficients: tuple[float, ...], nearest: bool = False
            ) -> np.ndarray:
    """The ideal pinhole image seen through a lens with OpenCV's pinhole distortion ``coefficients``;
    ``nearest`` for maps whose values must not blend (class ids, depth across an edge)."""
    map_x, map_y = _distortion_maps(image.shape[:2], float(focal_px), tuple(coefficients))
    mode = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.remap(image, map_x, map_y, mode, borderMode=cv2.BORDER_REPLICATE)


def motion_blur(rgb: np.ndarray, focal_px: float, angular_velocity: np.ndarray, exposure_s: float) -> np.ndarray:
    """A line blur as long as the image moves during the exposure (rotation only: the wrist
    turning moves the picture far more than it moving does)."""
    wx, wy = float(angular_velocity[0]), float(angular_velocity[1])
    # turning about the camera's y axis sweeps the image sideways, about its x axis up and down
    dx, dy = focal_px * wy * exposure_s, focal_px * wx * exposure_s
    length = float(np.hypot(dx, dy))
    if length < 1.0:
        return rgb
    n = int(np.ceil(length)) | 1  # odd: the kernel has a centre
    kernel = np.zeros((n, n), np.float32)
    c = n // 2
    ux, uy = dx / length, dy / length
    for t in np.linspace(-length / 2, length / 2, 2 * n):
        kernel[int(round(c + uy * t)), int(round(c + ux * t))] = 1.0
    return cv2.filter2D(rgb, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REPLICATE)


def sensor(rgb: np.ndarray, exposure, noise_std: float, rng: np.random.Generator) -> np.ndarray:  # noqa: ANN001
    """Exposure time x gain x white balance, then noise (scaled by the gain), clipped to 8 bits."""
    out = rgb.astype(np.float32)
    gain = 1.0
    if exposure is not None:
        gain = exposure.gain
        out *= exposure.scale * exposure.gain * np.asarray(exposure.white_balance, np.float32)
    if noise_std > 0:
        out += rng.normal(0.0, noise_std * gain, out.shape).astype(np.float32)
    return np.clip(out, 0, 255).round().astype(np.uint8)


def compress(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Through JPEG at ``quality`` and back, as an MJPEG camera's frames are."""
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    assert decoded is not None  # what imencode just wrote
    return decoded[..., ::-1].copy()


class StandInCamera:
    """A twin camera whose RGB frames go through a stand-in's picture gaps. Its privileged
    channels (rendered classes and depth) are the truth the stand-in's perception is measured
    against, never what its policy sees: they go through the lens too (so each pixel's label
    is that pixel's), and nothing else of the picture's gaps."""

    def __init__(self, inner: SimCamera, effects: CameraEffects):
        self.inner, self.effects = inner, effects
        self._camera_id = inner.model.camera(inner.camera).id

    def _angular_velocity(self) -> np.ndarray:
        velocity = np.zeros(6)
        mujoco.mj_objectVelocity(self.inner.model, self.inner.data, mujoco.mjtObj.mjOBJ_CAMERA, self._camera_id,
                                 velocity, 1)  # 1: in the camera's own frame
        return velocity[:3]

    def read(self) -> Frame:
        frame = self.inner.read()
        return replace(frame, rgb=self.effects.apply(frame.rgb, self._angular_velocity()))

    def _through_lens(self, image: np.ndarray) -> np.ndarray:
        lens = self.effects.world.get("lens_distortion")
        return image if lens is None else distort(image, self.effects.focal_px, lens.coefficients, nearest=True)

    def seg_ids(self) -> np.ndarray:
        """Sim class ids ``(H, W)`` of the pixels the frame shows."""
        return self._through_lens(self.inner.seg_ids())

    def depth_m(self) -> np.ndarray:
        """Metric depth ``(H, W)`` of the pixels the frame shows."""
        return self._through_lens(self.inner.depth_m())

    def __getattr__(self, name: str) -> Any:  # close, model, data, renderer: the render's
        return getattr(self.inner, name)


def picture_effects(model: mujoco.MjModel, world: StandIn | None, size: tuple[int, int],
                    camera: str = "wrist_cam") -> CameraEffects | None:
    """``world``'s picture gaps for ``camera`` rendering at ``size`` (H, W); None when it has none."""
    if world is None:
        return None
    cam = model.camera(camera).id
    intrinsic = model.cam_intrinsic
    if intrinsic is not None and model.cam_sensorsize[cam].any():  # explicit intrinsics: lengths on a sensor
        focal = float(intrinsic[cam][1] / model.cam_sensorsize[cam][1] * size[0])
    else:
        focal = (size[0] / 2) / float(np.tan(np.deg2rad(model.cam_fovy[cam]) / 2))
    effects = CameraEffects(world, focal)
    return effects if effects.active else None


def standin_camera(camera: SimCamera, world: StandIn) -> SimCamera | StandInCamera:
    """``camera`` through ``world``'s picture gaps (itself when the world has none)."""
    effects = picture_effects(camera.model, world, (camera.renderer.height, camera.renderer.width), camera.camera)
    return camera if effects is None else StandInCamera(camera, effects)
