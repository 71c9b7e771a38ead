"""The twin's wrist camera: RGB frames, and the privileged segmentation and depth.

Segmentation classes come from body and geom names, never from hard-coded ids, so a
different MJCF version still maps right: floor -> table, cube -> cube, every geom of the
``gripper`` body (jaw and wrist-roll servo) -> static finger, every geom of the moving
jaw body -> moving finger, everything else (rest of the arm, sky) -> background.
The privileged perception renders at the spec's source size and goes through
``finish_frame``, the one function the real perception uses too.
"""

from __future__ import annotations

import importlib.util
import os

import mujoco
import numpy as np

from so101_sim2real.errors import So101Error
from so101_sim2real.interfaces import Frame, Perceived
from so101_sim2real.observation import depth_to_disparity, finish_frame
from so101_sim2real.sim import scene as S
from so101_sim2real.spec import ObservationSpec

# sim class name -> how to find its geoms in the model
_CLASS_SOURCES = {
    "table": ("geom", S.FLOOR_GEOM),
    "cube": ("geom", S.CUBE_GEOM),
    "static_finger": ("body", S.GRIPPER_BODY),
    "moving_finger": ("body", S.MOVING_JAW_BODY),
}


def segmentation_lut(model: mujoco.MjModel, classes: list[str]) -> np.ndarray:
    """Geom id + 1 -> sim class id (index 0 is MuJoCo's -1, nothing rendered)."""
    lut = np.zeros(model.ngeom + 1, dtype=np.uint8)
    for cls, (kind, name) in _CLASS_SOURCES.items():
        if cls not in classes:
            raise So101Error(f"the spec's segmentation classes {classes} lack '{cls}', which the twin renders")
        class_id = classes.index(cls)
        if kind == "geom":
            lut[model.geom(name).id + 1] = class_id
        else:
            body = model.body(name).id
            lut[np.flatnonzero(model.geom_bodyid == body) + 1] = class_id
    return lut


def _import_triton_before_gl() -> None:
    """Import triton, when installed, before the first GL context exists.

    Mesa's software rasteriser (EGL without a GPU) and triton (which torch's dynamo
    imports, e.g. through torchvision) each bundle their own LLVM; importing triton
    after Mesa has loaded its LLVM crashes the process. The other order is fine.
    """
    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401


def _check_intrinsics_size(model: mujoco.MjModel, camera: str, size: tuple[int, int]) -> None:
    """A camera with explicit intrinsics is only right at the resolution they were given for
    (MuJoCo stretches its frustum over any other)."""
    cam = model.camera(camera).id
    if model.cam_sensorsize[cam].any() and tuple(model.cam_resolution[cam]) != (size[1], size[0]):
        w, h = model.cam_resolution[cam]
        raise So101Error(f"the twin's camera has intrinsics for {w}x{h} images, rendered at {size[1]}x{size[0]}: "
                         f"build the scene for the spec's source size")


def offscreen_renderer(model: mujoco.MjModel, height: int, width: int) -> mujoco.Renderer:
    """A renderer of ``height`` x ``width`` (triton imported first); a one-line error where GL is missing."""
    _import_triton_before_gl()
    try:
        return mujoco.Renderer(model, height, width)
    except Exception as exc:  # noqa: BLE001 - GL back-ends fail in many ways; all mean "no rendering"
        backend = os.environ.get("MUJOCO_GL", "default")
        raise So101Error(f"the twin cannot render offscreen (MUJOCO_GL={backend}: {exc}); on Linux install EGL "
                         f"(libegl1) or OSMesa and set MUJOCO_GL=egl or osmesa before mujoco is imported") from None


def close_renderer(renderer: mujoco.Renderer | None) -> None:
    """Free a renderer with its own GL context current.

    ``mujoco.Renderer.close`` frees GL objects in whichever context is current, so another
    renderer's framebuffer would be freed instead (its segmentation then comes back as
    colours) when renderers are closed out of creation order.
    """
    if renderer is None:
        return
    gl = getattr(renderer, "_gl_context", None)
    if gl is not None and getattr(renderer, "_mjr_context", None) is not None:
        gl.make_current()
    renderer.close()


class SimCamera:
    """Offscreen renders of the wrist camera at the spec's source size (H, W)."""

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, spec: ObservationSpec,
                 camera: str = S.WRIST_CAMERA):
        height, width = spec.source_size
        if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
            raise So101Error(f"the scene's offscreen buffer is smaller than the camera's {width}x{height}")
        _check_intrinsics_size(model, camera, (height, width))
        self.model, self.data, self.camera = model, data, camera
        self.renderer = offscreen_renderer(model, height, width)
        self.lut = segmentation_lut(model, spec.segmentation.classes)
        self.options = mujoco.MjvOption()
        self.options.sitegroup[:] = 0  # the TCP and base frame markers are not in the picture
        self._index = 0

    def _render(self, mode: str) -> np.ndarray:
        r = self.renderer
        r.disable_depth_rendering()
        r.disable_segmentation_rendering()
        if mode == "depth":
            r.enable_depth_rendering()
        elif mode == "seg":
            r.enable_segmentation_rendering()
        r.update_scene(self.data, camera=self.camera, scene_option=self.options)
        return r.render()

    def read(self) -> Frame:
        self._index += 1
        return Frame(self._render("rgb").copy(), float(self.data.time), self._index)

    def seg_ids(self) -> np.ndarray:
        """Sim class ids ``(H, W)`` uint8."""
        seg = self._render("seg")
        ids = np.where(seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM), seg[..., 0], -1)
        return self.lut[ids + 1]

    def depth_m(self) -> np.ndarray:
        """Metric depth along the optical axis ``(H, W)`` float32."""
        return self._render("depth").copy()

    def close(self) -> None:
        """Free the renderer (in its own GL context: :func:`close_renderer`)."""
        renderer, self.renderer = getattr(self, "renderer", None), None
        close_renderer(renderer)

    def __del__(self) -> None:
        self.close()


class PrivilegedPerception:
    """The twin's observation: rendered classes and depth, through ``finish_frame``."""

    def __init__(self, camera: SimCamera, spec: ObservationSpec):
        self.camera, self.spec = camera, spec

    def observe(self, with_rgb: bool = False) -> Perceived:
        seg = self.camera.seg_ids()
        disparity = depth_to_disparity(self.camera.depth_m(), self.spec.disparity.epsilon_m)
        rgb = self.camera.read().rgb if with_rgb else None
        frame = finish_frame(self.spec, seg, disparity)
        return Perceived(frame, seg, disparity, rgb, float(self.camera.data.time))

    def close(self) -> None:
        self.camera.close()
