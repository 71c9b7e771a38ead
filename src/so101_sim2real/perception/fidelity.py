"""Is a faster backend still the same perception? Checked on frames, never assumed.

A backend computes the networks' cores in another runtime, maybe another precision.
What matters is the policy's observation, so the check compares whole
:meth:`RealPerception.perceive` frames (84x84, after ``finish_frame``) against torch
fp32 on the same images: the share of equal pixels in the seg channel, and the
Spearman rank correlation of the disparity channel (the policy sees min-max
normalised disparity, so ranks are what a backend must keep). The worst frame counts.

:func:`choose_backend` is what ``@backend`` means: ``auto`` times each installed
backend and takes the fastest that passes; a named one is used only if it passes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from so101_sim2real.errors import So101Error
from so101_sim2real.interfaces import Camera
from so101_sim2real.perception.backends import TORCH, Backend, candidates, parse_backend
from so101_sim2real.perception.depth import DepthModel
from so101_sim2real.perception.real import Profile, RealPerception
from so101_sim2real.perception.segmentation import SegmentationModel
from so101_sim2real.spec import ObservationSpec

# What a first load spends its minute on (exports, checks, timings), said as it happens: the CLI
# shows this logger's INFO lines on stderr.
log = logging.getLogger(__name__)

CHECK_FRAMES = 3  # frames per check (a twin render: ~0.5 s on a CPU)
LIVE_GAP = 10  # a live camera's check frames are this many frames apart (a third of a second at 30 fps)
TIMED_CALLS = 3  # perceive calls timed per backend, after the warm-up
WARMUP_CALLS = 2  # the first compiles; torch's first calls in a process were measured 4-10x slow


@dataclass(frozen=True)
class Thresholds:
    """What a backend must keep of torch fp32's frames, on its worst frame."""

    seg_agreement: float = 0.995
    disparity_spearman: float = 0.995


@dataclass(frozen=True)
class Fidelity:
    """A backend's frames against torch fp32's on the same images (worst frame)."""

    seg_agreement: float  # share of seg-channel pixels equal to torch's
    disparity_spearman: float  # rank correlation of the disparity channel with torch's
    frames: int
    thresholds: Thresholds = Thresholds()

    def failures(self) -> list[str]:
        """One phrase per number below its threshold."""
        t, out = self.thresholds, []
        if not self.seg_agreement >= t.seg_agreement:  # `not >=`: a NaN fails
            out.append(f"seg agreement {self.seg_agreement:.4f} < {t.seg_agreement}")
        if not self.disparity_spearman >= t.disparity_spearman:
            out.append(f"disparity Spearman {self.disparity_spearman:.4f} < {t.disparity_spearman}")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    def summary(self) -> str:
        return f"fidelity seg {self.seg_agreement:.4f}, disparity {self.disparity_spearman:.4f}"


@dataclass(frozen=True)
class Speed:
    """Median milliseconds of :meth:`RealPerception.perceive` stages, networks one after the other."""

    seg_ms: float
    depth_ms: float
    total_ms: float


@dataclass(frozen=True)
class Trial:
    """One backend tried: its speed, its fidelity (None for torch, the reference), or why it did not run."""

    backend: Backend
    speed: Speed | None = None
    fidelity: Fidelity | None = None
    error: str | None = None
    seg: SegmentationModel | None = field(default=None, repr=False, compare=False)
    depth: DepthModel | None = field(default=None, repr=False, compare=False)

    @property
    def usable(self) -> bool:
        return self.error is None and (self.fidelity is None or self.fidelity.passed)

    def line(self) -> str:
        """``openvino f32: seg 5.1 ms, depth 11.8 ms, total 19.0 ms; fidelity seg 0.9990, disparity 0.9980: pass``."""
        if self.error is not None:
            return f"{self.backend}: did not run ({self.error})"
        s = self.speed
        assert s is not None  # a trial that ran was timed
        text = f"{self.backend}: seg {s.seg_ms:.1f} ms, depth {s.depth_ms:.1f} ms, total {s.total_ms:.1f} ms"
        if self.fidelity is None:
            return text + "; the reference"
        verdict = "pass" if self.fidelity.passed else "FAIL: " + ", ".join(self.fidelity.failures())
        return f"{text}; {self.fidelity.summary()}: {verdict}"


@dataclass(frozen=True)
class BackendChoice:
    """The backend a run uses, the trials that chose it, and the two models on it."""

    trial: Trial
    reference: Trial | None  # torch's trial, when one ran
    refused: tuple[Trial, ...] = ()
    remembered: str | None = None  # when auto chose it (its pick kept for this setup), if not timed now
    camera: Fidelity | None = None  # the chosen backend checked again on the camera's own frames
    camera_refused: Trial | None = None  # auto's pick that passed on twin renders but not on the camera's frames

    @property
    def backend(self) -> Backend:
        return self.trial.backend

    def line(self) -> str:
        """One line: which, how fast against torch, how faithful, and what was refused."""
        text = self._chosen_line()
        if self.camera is not None:
            text += f"; on {self.camera.frames} camera frames too: {self.camera.summary()}"
        if (r := self.camera_refused) is not None:
            assert r.fidelity is not None  # refused for what it did on the camera's frames
            text += (f"; {r.backend} passed on twin renders but not on {r.fidelity.frames} camera frames "
                     f"({', '.join(r.fidelity.failures())})")
        return text

    def _chosen_line(self) -> str:
        t, ref = self.trial, self.reference
        threads = t.backend.threads
        text = f"perception backend: {t.backend}" + (f" on {threads} thread{'s' * (threads > 1)}" if threads else "")
        if self.remembered is not None:
            checked = f"; {t.fidelity.summary()} now" if t.fidelity is not None else ""
            return (f"{text} (auto's pick of {self.remembered} for these weights on this machine{checked}; "
                    f"delete the cache's compiled/choices to time them again)")
        if t.fidelity is not None and ref is not None and ref.speed is not None:
            assert t.speed is not None  # timed beside the reference
            text += (f" (depth {t.speed.depth_ms:.1f} ms, seg {t.speed.seg_ms:.1f} ms vs torch {ref.speed.depth_ms:.1f}"
                     f", {ref.speed.seg_ms:.1f} ms; {t.fidelity.summary()})")
        elif t.speed is not None:
            text += f" (depth {t.speed.depth_ms:.1f} ms, seg {t.speed.seg_ms:.1f} ms; the fastest that passed)"
        if self.refused:
            text += "; not " + "; ".join(_why_not(r) for r in self.refused)
        return text


def _why_not(trial: Trial) -> str:
    if trial.error is not None:
        return f"{trial.backend} (did not run: {trial.error})"
    if trial.fidelity is not None and not trial.fidelity.passed:
        return f"{trial.backend} ({', '.join(trial.fidelity.failures())})"
    return f"{trial.backend} (slower: {_total_ms(trial):.1f} ms)"


def _total_ms(trial: Trial) -> float:
    assert trial.speed is not None  # a trial that ran was timed
    return trial.speed.total_ms


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of two images (ties share their mean rank); 1.0 for two equal constant images."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.min() == a.max() or b.min() == b.max():
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(spearmanr(a, b).statistic)


def reference_frames(reference: RealPerception, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The reference's observation of each image: what every candidate is compared with (computed once)."""
    return [reference.perceive(rgb).frame for rgb in images]


def compare_frames(expected: Sequence[np.ndarray], candidate: RealPerception, images: Sequence[np.ndarray],
                   thresholds: Thresholds = Thresholds()) -> Fidelity:
    """The candidate on ``images`` against the reference's observations of them (:func:`reference_frames`):
    its worst-frame seg agreement and disparity Spearman."""
    seg_at = candidate.spec.channels.index("seg")
    disp_at = candidate.spec.channels.index("disparity")
    agreement, rank = [], []
    for a, rgb in zip(expected, images, strict=True):
        b = candidate.perceive(rgb).frame
        agreement.append(float(np.mean(a[seg_at] == b[seg_at])))
        rank.append(spearman(a[disp_at], b[disp_at]))
    return Fidelity(min(agreement), min(rank), len(images), thresholds)


def time_perception(perception: RealPerception, images: Sequence[np.ndarray], calls: int = TIMED_CALLS) -> Speed:
    """Median stage times over ``calls`` perceives, after the warm-up (where a backend compiles)."""
    timings = []
    for i in range(calls + WARMUP_CALLS):
        perception.perceive(images[i % len(images)])
        if i >= WARMUP_CALLS:
            timings.append(perception.last_timing)
    return Speed(*(statistics.median(getattr(t, name) for t in timings) for name in ("seg_ms", "depth_ms",
                                                                                       "total_ms")))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def against_torch(seg: SegmentationModel, depth: DepthModel, spec: ObservationSpec, profile: Profile | str,
                  images: Sequence[np.ndarray], threads: int | None,
                  thresholds: Thresholds = Thresholds()) -> Fidelity:
    """The networks on their backend against the same networks in torch fp32, on ``images``."""
    reference = _reference(seg, depth, spec, profile, threads)
    candidate = RealPerception(None, seg, depth, spec, profile, workers=1, threads=threads)
    try:
        return compare_frames(reference_frames(reference, images), candidate, images, thresholds)
    finally:
        reference.close()
        candidate.close()


def run_trial(backend: Backend, seg: SegmentationModel, depth: DepthModel, spec: ObservationSpec,
              profile: Profile | str, images: Sequence[np.ndarray], expected: Sequence[np.ndarray] | None,
              thresholds: Thresholds = Thresholds(), cache: Path | None = None) -> Trial:
    """Time ``backend`` on ``images`` and, unless it is torch, check it against the reference's
    observations of them (``expected``)."""
    started = time.monotonic()
    if backend == TORCH:
        log.info("perception: timing torch f32, the reference, on %d frame(s)", len(images))
    else:  # the graphs are exported on the first call, when not already cached
        log.info("perception: %s: exporting its graphs (once; cached after) and timing it on %d frame(s)%s",
                 backend, len(images), "" if expected is None else " against torch f32")
    seg_b, depth_b = seg.on_backend(backend, cache), depth.on_backend(backend, cache)
    # stages timed one by one, on the backend's thread budget
    perception = RealPerception(None, seg_b, depth_b, spec, profile, workers=1, threads=backend.threads)
    try:
        speed = time_perception(perception, images)
        fidelity = None if backend == TORCH or expected is None else compare_frames(expected, perception, images,
                                                                                    thresholds)
    except Exception as exc:  # noqa: BLE001 - an exporter or runtime that cannot take the graph: not this one
        log.info("perception: %s: cannot run here (%s)", backend, _first_line(exc))
        return Trial(backend, error=_first_line(exc))
    finally:
        perception.close()
    log.info("perception: %s: done in %.0f s", backend, time.monotonic() - started)
    return Trial(backend, speed, fidelity, seg=seg_b, depth=depth_b)


def _reference(seg: SegmentationModel, depth: DepthModel, spec: ObservationSpec, profile: Profile | str,
               threads: int | None) -> RealPerception:
    """Torch fp32: what every backend is checked against."""
    return RealPerception(None, seg.on_backend(TORCH), depth.on_backend(TORCH), spec, profile, workers=1,
                          threads=threads)


def try_backends(seg: SegmentationModel, depth: DepthModel, spec: ObservationSpec, profile: Profile | str,
                 images: Sequence[np.ndarray], backends: Sequence[Backend] | None = None,
                 thresholds: Thresholds = Thresholds(), cache: Path | None = None,
                 threads: int | None = None) -> list[Trial]:
    """Torch first (the reference), then each of ``backends`` (default: every installed one), all on ``images``
    and on ``threads`` CPU threads (default: torch's count)."""
    others = [b for b in (backends if backends is not None else candidates(threads)) if b != TORCH]
    reference = _reference(seg, depth, spec, profile, threads)
    try:
        trials = [run_trial(TORCH.with_threads(threads), seg, depth, spec, profile, images, None, thresholds, cache)]
        expected = reference_frames(reference, images) if others else None
    finally:
        reference.close()
    return trials + [run_trial(b, seg, depth, spec, profile, images, expected, thresholds, cache) for b in others]


def choose_backend(seg: SegmentationModel, depth: DepthModel, spec: ObservationSpec, profile: Profile | str,
                   wanted: str = "auto", frames: Callable[[], Sequence[np.ndarray]] | None = None,
                   thresholds: Thresholds = Thresholds(), cache: Path | None = None,
                   threads: int | None = None) -> BackendChoice:
    """What ``@backend wanted`` runs on: torch as asked; a named backend if it passes the check (else a
    one-line error); ``auto``: the fastest that passes, torch if none is faster. Every backend runs
    on ``threads`` CPU threads (default: torch's count), and is timed on them.

    ``auto`` remembers its pick for these weights, sizes, versions, thread budget and this machine;
    the next load checks only that backend's fidelity (the check is never skipped) instead of timing all."""
    backend = parse_backend(wanted)
    backend = backend.with_threads(threads) if backend is not None else None
    gpu = seg.device.type == "cuda"
    if backend is not None and backend.precision == "f16" and not gpu:
        raise So101Error(f"@backend {wanted}: fp16 is for networks on a GPU (@device cuda); on a CPU use @backend "
                         f"auto, openvino or onnxruntime")
    if backend == TORCH:  # the reference itself: nothing to check
        return BackendChoice(Trial(backend, seg=seg, depth=depth), None)
    images = list(frames()) if frames is not None else []
    if not images:
        if backend is not None:
            raise So101Error(f"@backend {wanted}: no frames to check it against torch on; use @backend torch")
        return BackendChoice(Trial(TORCH.with_threads(threads), seg=seg, depth=depth), None)
    remembered = _choice_file(seg, depth, spec, profile, cache, threads) if backend is None else None
    if remembered is not None and (again := _recheck(remembered, seg, depth, spec, profile, images, thresholds,
                                                      cache, threads)) is not None:
        return again
    tried = [backend] if backend else candidates(threads, gpu)
    log.info("perception: choosing where the networks run: %s, each checked against torch f32 on %d frame(s) "
             "(a first load exports each graph, about 20 s apiece on 2 cores; the pick is remembered)",
             ", ".join(str(b) for b in tried if b != TORCH), len(images))
    trials = try_backends(seg, depth, spec, profile, images, tried, thresholds, cache, threads)
    reference, others = trials[0], trials[1:]
    if backend is not None:
        trial = others[0]
        if not trial.usable:
            raise So101Error(f"@backend {wanted}: refused: {_why_not(trial)} against torch f32 on "
                             f"{len(images)} frames; use @backend auto or torch")
        return BackendChoice(trial, reference)
    choice = _fastest(reference, others)
    if remembered is not None:
        _remember(remembered, choice)
    return choice


def camera_frames(camera: Camera, count: int = CHECK_FRAMES, gap: int = LIVE_GAP,
                  partial: bool = False) -> list[np.ndarray]:
    """A live camera's next ``count`` frames, ``gap`` frames apart: what it shows now. ``partial``: a
    source that runs out first gives the frames it had (a file of unknown length)."""
    from so101_sim2real.cameras import CameraExhausted

    frames = []
    try:
        for i in range((count - 1) * gap + 1):
            image = camera.read()
            if i % gap == 0:
                frames.append(image.rgb)
    except CameraExhausted:
        if not partial:
            raise
    return frames


def confirm_on_camera(choice: BackendChoice, images: Sequence[np.ndarray], spec: ObservationSpec,
                      profile: Profile | str, wanted: str = "auto",
                      thresholds: Thresholds = Thresholds()) -> BackendChoice:
    """The backend chosen on twin renders, checked again on the camera's own frames (a real scene's
    textures may lose what the renders keep): kept if it passes; else ``auto`` falls back to torch
    and a named backend is refused in one line."""
    trial = choice.trial
    if choice.backend == TORCH or not images:
        return choice
    threads = trial.backend.threads
    assert trial.seg is not None and trial.depth is not None  # a chosen trial carries its models
    fidelity = against_torch(trial.seg, trial.depth, spec, profile, images, threads, thresholds)
    if fidelity.passed:
        return dataclasses.replace(choice, camera=fidelity)
    if wanted != "auto":
        raise So101Error(f"@backend {wanted}: refused on {len(images)} camera frames: "
                         f"{', '.join(fidelity.failures())} against torch f32; use @backend auto or torch")
    torch_trial = Trial(TORCH.with_threads(threads), seg=trial.seg.on_backend(TORCH),
                        depth=trial.depth.on_backend(TORCH))
    return BackendChoice(torch_trial, None, camera_refused=dataclasses.replace(trial, fidelity=fidelity))


# ------------------------------------------------------------------ auto's remembered pick


def _choice_file(seg: SegmentationModel, depth: DepthModel, spec: ObservationSpec, profile: Profile | str,
                 cache: Path | None, threads: int | None) -> Path | None:
    """Where auto's pick for exactly this setup is kept (None: no writable cache)."""
    import hashlib
    import json

    import torch

    from so101_sim2real.files import writable_folder
    from so101_sim2real.machine import cpu_model
    from so101_sim2real.perception.backends import backend_version, compiled_dir, installed, weights_hash

    root = (cache if cache is not None else compiled_dir()) / "choices"
    if writable_folder(root) is not None:
        return None
    key = {"seg": weights_hash(seg.net), "depth": weights_hash(depth.net),
           "profile": profile if isinstance(profile, str) else profile.name,
           "region": spec.disparity.normalise_region, "source": list(spec.source_size),
           "threads": threads or torch.get_num_threads(), "device": str(seg.device), "machine": cpu_model(),
           "candidates": [str(b) for b in candidates(gpu=seg.device.type == "cuda")],
           "versions": {n: backend_version(n) for n in ("openvino", "onnxruntime") if installed(n)}}
    return root / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32] + ".json")


def _remember(path: Path, choice: BackendChoice) -> None:
    import json
    import time

    from so101_sim2real.files import write_file

    b = choice.backend
    record = {"backend": f"{b.name}:{b.precision}", "chosen": time.strftime("%Y-%m-%d %H:%M"), "line": choice.line()}
    with contextlib.suppress(So101Error):  # a cache that cannot be written costs the next start its timing
        write_file(path, json.dumps(record, indent=1))


def _recheck(path: Path, seg: SegmentationModel, depth: DepthModel, spec: ObservationSpec, profile: Profile | str,
             images: Sequence[np.ndarray], thresholds: Thresholds, cache: Path | None,
             threads: int | None) -> BackendChoice | None:
    """The remembered pick, its fidelity checked again on ``images``; None to choose afresh (no record, an
    unreadable one, or a pick that no longer passes)."""
    import json

    try:
        record = json.loads(path.read_text())
        backend = parse_backend(record["backend"])
    except (OSError, ValueError, KeyError, TypeError, So101Error):
        return None
    if backend is None:
        return None
    backend = backend.with_threads(threads)
    if backend == TORCH:
        return BackendChoice(Trial(backend, seg=seg, depth=depth), None, remembered=record.get("chosen", "?"))
    log.info("perception: checking %s (picked on %s) against torch f32 on %d frames", backend,
             record.get("chosen", "?"), len(images))
    seg_b, depth_b = seg.on_backend(backend, cache), depth.on_backend(backend, cache)
    try:
        fidelity = against_torch(seg_b, depth_b, spec, profile, images, threads, thresholds)
    except Exception:  # noqa: BLE001 - a runtime that no longer takes the graph: choose afresh
        return None
    if not fidelity.passed:
        return None
    return BackendChoice(Trial(backend, fidelity=fidelity, seg=seg_b, depth=depth_b), None,
                         remembered=record.get("chosen", "?"))


def _fastest(reference: Trial, others: list[Trial]) -> BackendChoice:
    """The fastest usable trial (torch when nothing usable beats it), and why each other one is not it."""
    usable = sorted((t for t in [reference, *others] if t.usable), key=_total_ms)
    best = usable[0]
    refused = tuple(t for t in others if t is not best)
    return BackendChoice(best, reference, refused)
