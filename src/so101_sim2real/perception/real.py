"""Real perception: a camera image -> EfficientViT classes + Depth Anything disparity -> one policy frame.

The two networks run concurrently (on a GPU, or a CPU with cores to spare; see
:func:`auto_workers`), and end in
:func:`~so101_sim2real.observation.finish_frame`, the function the sim twin
uses, so the crop, the class table, the normalisation region and the interpolations
are the spec's on both sides.

Two profiles:

- ``exact``: as trained. Segmentation on the whole frame at the checkpoint's input
  size (``img_height`` x ``img_width``), depth at 518 (shorter side), both maps at the
  camera's resolution.
- ``fast``: segmentation on the crop only (the seg channel is cropped, so nothing
  outside it reaches the policy) at 192, depth at 140, maps at 2x the policy's size.
  Depth sees the whole frame when the spec normalises disparity over the full frame
  (the default: the training observation), only the crop when it normalises over the
  crop. About 10x less compute; ``scripts/bench_perception.py`` says how far it is
  from ``exact`` on given weights.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from so101_sim2real.errors import ObservationError, So101Error
from so101_sim2real.interfaces import Camera, Perceived
from so101_sim2real.observation import center_crop_box, finish_frame, real_to_sim_ids
from so101_sim2real.perception import DEFAULT_DEPTH_MODEL
from so101_sim2real.perception.backends import thread_budget, usable_cores, use_threads
from so101_sim2real.perception.depth import TRAINED_SIDE, DepthModel
from so101_sim2real.perception.segmentation import SegmentationModel
from so101_sim2real.spec import ObservationSpec


@dataclass(frozen=True)
class Profile:
    """How much of the frame, at what sizes, the networks see."""

    name: str
    crop_first: bool
    seg_side: int | None  # shorter side of the seg input; None: the checkpoint's trained size
    depth_side: int  # shorter side of the depth input, a multiple of 14
    map_scale: int | None  # maps at map_scale x the policy's size; None: the camera's resolution


PROFILES = {
    "exact": Profile("exact", crop_first=False, seg_side=None, depth_side=TRAINED_SIDE, map_scale=None),
    "fast": Profile("fast", crop_first=True, seg_side=192, depth_side=140, map_scale=2),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise So101Error(f"@profile {name}: unknown; profiles: {', '.join(PROFILES)}")
    return PROFILES[name]


def fit_to_source(rgb: np.ndarray, source_size: tuple[int, int]) -> np.ndarray:
    """A camera image at the spec's source size: resized if only the scale differs."""
    h, w = rgb.shape[:2]
    sh, sw = source_size
    if (h, w) == (sh, sw):
        return rgb
    if abs(w / h - sw / sh) > 0.01:
        raise ObservationError(f"the camera gives {w}x{h} images; the policy was trained on {sw}x{sh} (another "
                               f"aspect ratio): set the camera to {sw}x{sh}")
    return cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)


def _scaled(size: tuple[int, int], side: int) -> tuple[int, int]:
    scale = side / min(size)
    return round(size[0] * scale), round(size[1] * scale)


def auto_workers(device: str | object, threads: int | None = None) -> int:
    """Two concurrent networks where each has its threads (``threads``, default torch's count) on
    cores of its own, else one after the other.

    On a 2-core CPU, two networks of 2 threads each were measured slower concurrently (108 vs 71
    ms p50 end to end in the fast profile). With HIL-SERL's budget there (1 perception thread
    beside a 1-thread learner) they overlap: segmentation is ~15 ms of a ~150 ms observation, and
    the learner, at the lowest priority, gives way; perception's p95 stayed at 146-167 ms where
    taking turns gave 200-205 ms (the learner made 0.7-0.8 updates/s against 1.0).
    """
    import torch

    if str(device).startswith("cuda"):
        return 2
    return 2 if usable_cores() >= 2 * (threads or torch.get_num_threads()) else 1


@dataclass(frozen=True)
class Timing:
    """Milliseconds per stage of one :meth:`RealPerception.perceive`."""

    seg_ms: float
    depth_ms: float
    finish_ms: float
    total_ms: float


def _check_classes(seg: SegmentationModel, spec: ObservationSpec) -> None:
    table = spec.segmentation.real_to_sim
    if seg.num_classes != len(table):
        raise So101Error(f"the segmentation model {seg.source} has {seg.num_classes} classes; the spec's real class "
                         f"table has {len(table)} ({', '.join(spec.segmentation.real_classes)})")


class RealPerception:
    """Camera -> (seg, depth) concurrently -> sim class ids -> ``finish_frame``."""

    def __init__(self, camera: Camera | None, seg: SegmentationModel, depth: DepthModel, spec: ObservationSpec,
                 profile: Profile | str = "fast", workers: int | None = None, backend_line: str | None = None,
                 threads: int | None = None):
        self.camera, self.seg, self.depth, self.spec = camera, seg, depth, spec
        self.backend_line = backend_line  # which backend runs the networks, and why (see perception.fidelity)
        # torch's threads wherever perception runs (the exported backends take theirs from Backend.threads)
        self.threads = threads
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        _check_classes(seg, spec)
        # Depth can crop first only if nothing outside the crop matters to the observation.
        self.crop_first = self.profile.crop_first and spec.disparity.normalise_region == "crop"
        self.workers = workers or auto_workers(seg.device, threads)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="perception") if self.workers > 1 else None
        self.last_timing: Timing | None = None

    @property
    def example_models(self) -> list[str]:
        """The networks running on random example weights (`so101 models example`)."""
        return [m.source for m in (self.seg, self.depth) if m.example]

    def _map_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Output map size for an input of ``size``: the camera's, or map_scale x the policy's over the crop."""
        if self.profile.map_scale is None:
            return size
        rows, cols = center_crop_box(*size, self.spec.crop)
        crop_side = min(rows.stop - rows.start, cols.stop - cols.start)
        return _scaled(size, round(min(size) * self.profile.map_scale * min(self.spec.image_size) / crop_side))

    def _plan(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """The images segmentation and depth see, and the seg input size."""
        height, width = rgb.shape[:2]
        rows, cols = center_crop_box(height, width, self.spec.crop)
        cropped = np.ascontiguousarray(rgb[rows, cols]) if self.profile.crop_first else rgb
        seg_image = cropped  # the seg channel is cropped: pixels outside the crop never reach the policy
        depth_image = cropped if self.crop_first else rgb
        p = self.profile
        seg_size = _scaled(seg_image.shape[:2], p.seg_side) if p.seg_side else self.seg.input_size
        return seg_image, depth_image, seg_size

    def _to_depth_geometry(self, real_ids: np.ndarray, maps: tuple[int, int]) -> np.ndarray:
        """Seg computed on the crop, placed in the full-frame maps of a full-frame disparity.

        Outside the crop the ids are 0 (unlabeled): ``finish_frame`` crops them away.
        """
        if real_ids.shape == maps:
            return real_ids
        full = np.zeros(maps, dtype=real_ids.dtype)
        rows, cols = center_crop_box(*maps, self.spec.crop)
        full[rows, cols] = real_ids
        return full

    def _timed(self, fn, *args) -> tuple[np.ndarray, float]:
        use_threads(self.threads)  # in the pool's thread too
        t0 = time.perf_counter()
        out = fn(*args)
        return out, (time.perf_counter() - t0) * 1e3

    def perceive(self, rgb: np.ndarray, timestamp: float = 0.0, with_rgb: bool = False) -> Perceived:
        """One RGB image (any size of the source's aspect ratio) -> one policy frame."""
        with thread_budget(self.threads):
            return self._perceive(rgb, timestamp, with_rgb)

    def _perceive(self, rgb: np.ndarray, timestamp: float, with_rgb: bool) -> Perceived:
        t0 = time.perf_counter()
        rgb = fit_to_source(rgb, self.spec.source_size)
        seg_image, depth_image, seg_size = self._plan(rgb)
        maps = self._map_size(depth_image.shape[:2])
        seg_call = (self.seg.predict, seg_image, seg_size, self._map_size(seg_image.shape[:2]))
        depth_call = (self.depth.predict, depth_image, self.profile.depth_side, maps)
        if self._pool is not None:
            seg_job = self._pool.submit(self._timed, *seg_call)
            (disparity, depth_ms) = self._timed(*depth_call)
            (real_ids, seg_ms) = seg_job.result()
        else:
            real_ids, seg_ms = self._timed(*seg_call)
            disparity, depth_ms = self._timed(*depth_call)
        t1 = time.perf_counter()
        seg_ids = real_to_sim_ids(self._to_depth_geometry(real_ids, maps), self.spec.segmentation.real_to_sim)
        frame = finish_frame(self.spec, seg_ids, disparity)
        t2 = time.perf_counter()
        self.last_timing = Timing(seg_ms, depth_ms, (t2 - t1) * 1e3, (t2 - t0) * 1e3)
        return Perceived(frame, seg_ids, disparity, rgb if with_rgb else None, timestamp)

    def observe(self, with_rgb: bool = False) -> Perceived:
        if self.camera is None:
            raise So101Error("this perception has no camera; call perceive(rgb) with an image")
        image = self.camera.read()
        return self.perceive(image.rgb, image.timestamp, with_rgb)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self.camera is not None:
            self.camera.close()


@dataclass(frozen=True)
class RealModels:
    """Which weights the real perception uses, and how it runs them."""

    seg_ckpt: str | None = None
    depth_model: str = DEFAULT_DEPTH_MODEL
    profile: str = "fast"
    device: str = "cpu"
    trust_pickle: bool = False
    backend: str = "auto"  # torch, openvino[:f32|:bf16], onnxruntime, or auto: the fastest that passes the check
    overlap: bool = True  # on an arm on a serial port: perceive the next frame while the loop acts
    threads: int | None = None  # CPU threads of the networks, whichever backend; None: torch's count
