"""A recording replayed through the twin: where the recorded observation and the twin's part.

For each recorded tick the twin is posed where the recording says (its joints, and the
cube where ``cube_pos`` and ``cube_quat`` say, else fitted to the first frames' cube mask; a
stand-in's recording is read as an arm's, its cube fitted), and its privileged
observation is rendered through the same :class:`~so101_sim2real.sim.camera.PrivilegedPerception`
and ``finish_frame`` the policy saw in training. The recorded frame is then compared
with it: segmentation per class (IoU, confusion), disparity where both segmentations
agree (rank correlation, median-scaled relative error), and the recorded control period
against the spec's. ``compare.findings`` names the mismatches it recognises, with what to run next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mujoco
import numpy as np

from so101_sim2real.compare.arm_fit import ArmFit, ReplayTwin, fit_arm
from so101_sim2real.compare.cube_fit import CubePlacement, fit_cube
from so101_sim2real.compare.dynamics import DynamicsMetrics, replay_targets
from so101_sim2real.compare.episode import load_episode
from so101_sim2real.compare.findings import findings, id_remap
from so101_sim2real.compare.motion import AxisCheck, axis_check
from so101_sim2real.compare.picture_check import TICKS, FramePair, PictureMetrics, picture_metrics
from so101_sim2real.compare.report import (
    DisparityMetrics,
    FingerShift,
    ReplayReport,
    SegmentationMetrics,
    TickFrames,
    TimingMetrics,
)
from so101_sim2real.compare.state_check import StateFieldCheck, compare_states, twin_states
from so101_sim2real.control.recording import Recording
from so101_sim2real.geometry.rig_file import RigGeometry
from so101_sim2real.sim import scene as S
from so101_sim2real.spec import Spec

NOMINAL_CUBE = (0.25, 0.0, 0.015)  # the task's cube_xy at rest on the table (half side 15 mm)
FINGERS = ("static_finger", "moving_finger")
MIN_MASK_PX = 20  # fewer pixels give no trustworthy centroid


WORST_KEPT = 4
CUBE_PLACED_IOU = 0.5  # a tick whose cube IoU is below this shows the cube elsewhere than the twin's


# ------------------------------------------------------------------ the twin, posed


class PosedTwin:
    """The nominal twin (through the rig's measured camera, when given), posed at recorded states and
    seen through its privileged perception."""

    def __init__(self, spec: Spec, geometry: RigGeometry | None = None):
        from so101_sim2real.control.env import twin_scene
        from so101_sim2real.sim.camera import PrivilegedPerception, SimCamera
        from so101_sim2real.sim.task import LiftCubeTask

        self.task = LiftCubeTask(spec, scene=twin_scene(spec, geometry))
        m = self.task.model
        self._joints = np.array([m.jnt_qposadr[m.joint(j).id] for j in S.JOINTS])
        self._cube = m.jnt_qposadr[m.joint(S.CUBE_JOINT).id]
        self._dofs = np.array([m.jnt_dofadr[m.joint(j).id] for j in S.JOINTS])
        self.perception = PrivilegedPerception(SimCamera(m, self.task.data, spec.observation), spec.observation)

    def observe(self, joint_pos: np.ndarray, cube_pos: np.ndarray | None, joint_vel: np.ndarray | None = None,
                lag_s: float = 0.0, cube_quat: np.ndarray | None = None) -> np.ndarray:
        """The policy frame the twin sees with its joints at ``joint_pos`` (moved back ``lag_s`` along
        ``joint_vel``) and the cube at ``cube_pos``."""
        d = self.task.data
        d.qpos[self._joints] = joint_pos if joint_vel is None else joint_pos - lag_s * np.asarray(joint_vel)
        cube = NOMINAL_CUBE if cube_pos is None else cube_pos
        # Without a recorded orientation (a real arm's recording), upright is the best guess.
        d.qpos[self._cube:self._cube + 7] = [*cube, *(cube_quat if cube_quat is not None else (1.0, 0.0, 0.0, 0.0))]
        mujoco.mj_forward(self.task.model, d)
        return self.perception.observe().frame

    def picture(self, tick: int, recorded_rgb: np.ndarray, joint_vel: np.ndarray | None) -> FramePair:
        """The twin's RGB and class ids as posed by the last :meth:`observe`, beside the recorded image,
        with the camera's angular speed from the recorded joint velocities."""
        m, d = self.task.model, self.task.data
        camera = self.perception.camera
        if joint_vel is not None:
            d.qvel[self._dofs] = joint_vel
            mujoco.mj_forward(m, d)
        velocity = np.zeros(6)
        mujoco.mj_objectVelocity(m, d, mujoco.mjtObj.mjOBJ_CAMERA, m.camera(camera.camera).id, velocity, 1)
        d.qvel[:] = 0.0
        return FramePair(tick, recorded_rgb, camera.read().rgb, camera.seg_ids(), float(np.linalg.norm(velocity[:3])))

    def focal_px(self) -> float:
        """The twin camera's focal length in pixels at its frame's size."""
        m, camera = self.task.model, self.perception.camera
        height = camera.renderer.height
        return float(height / 2 / np.tan(np.deg2rad(m.cam_fovy[m.camera(camera.camera).id]) / 2))

    def close(self) -> None:
        self.perception.close()


# ------------------------------------------------------------------ per-tick measures


def _confusion(recorded: np.ndarray, twin: np.ndarray, n_twin: int) -> np.ndarray:
    """(256, n_twin) pixel counts: recorded ids may be anything a uint8 holds."""
    return np.bincount(recorded.astype(np.int64).ravel() * n_twin + twin.ravel(),
                       minlength=256 * n_twin).reshape(256, n_twin)


def _iou(conf: np.ndarray) -> np.ndarray:
    """Per twin class IoU from a (256, K) confusion matrix; NaN where the class is in neither."""
    k = conf.shape[1]
    inter = np.diag(conf[:k])
    union = conf[:k].sum(axis=1) + conf.sum(axis=0) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), as Spearman wants for uint8 data."""
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - (counts - 1) / 2.0)[inverse]).astype(np.float64)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two samples: Pearson's of their ranks; NaN when either is constant."""
    ra, rb = _ranks(np.ravel(a)), _ranks(np.ravel(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def _scaled_errors(recorded: np.ndarray, twin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel with twin > 0: |s * recorded - twin| / twin with s = median(twin) / median(recorded),
    and the twin's disparity there."""
    keep = twin > 0
    rec, ref = recorded[keep].astype(np.float64), twin[keep].astype(np.float64)
    if rec.size == 0 or np.median(rec) <= 0:
        return np.empty(0), np.empty(0)
    scaled = rec * (np.median(ref) / np.median(rec))
    return np.abs(scaled - ref) / ref, ref


def median_scaled_rel_error(recorded: np.ndarray, twin: np.ndarray) -> float:
    """The mean of :func:`_scaled_errors`: the error left once the two disparities' scales are matched."""
    errors, _ = _scaled_errors(recorded, twin)
    return float(errors.mean()) if errors.size else float("nan")


# The twin's disparity (uint8, near = big) split in thirds: where in depth the error sits.
BANDS = {"far": (0, 85), "middle": (85, 170), "near": (170, 256)}


def _band_sums(errors: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(len(BANDS), 2): per band, the sum of errors and the pixel count."""
    return np.array([[errors[(ref >= lo) & (ref < hi)].sum(), ((ref >= lo) & (ref < hi)).sum()]
                     for lo, hi in BANDS.values()])


def _centroids(seg: np.ndarray) -> np.ndarray:
    """(256, 3): per id, sum of x, sum of y, pixel count."""
    ys, xs = np.indices(seg.shape)
    ids = seg.astype(np.int64).ravel()
    return np.stack([np.bincount(ids, weights=xs.ravel(), minlength=256),
                     np.bincount(ids, weights=ys.ravel(), minlength=256),
                     np.bincount(ids, minlength=256).astype(np.float64)], axis=1)


@dataclass
class _Tick:
    confusion: np.ndarray
    iou: np.ndarray
    spearman: float
    rel_error: float
    pixels: int
    bands: np.ndarray  # (len(BANDS), 2): error sums and pixel counts by the twin's depth band
    rec_centroids: np.ndarray
    twin_centroids: np.ndarray


def compare_frames(recorded: np.ndarray, twin: np.ndarray, spec: Spec) -> _Tick:
    """One tick's measures: recorded and twin policy frames ``(C, H, W)`` uint8."""
    channels = list(spec.observation.channels)
    seg_rec, seg_twin = recorded[channels.index("seg")], twin[channels.index("seg")]
    conf = _confusion(seg_rec, seg_twin, len(spec.observation.segmentation.classes))
    rho = err = float("nan")
    pixels, bands = 0, np.zeros((len(BANDS), 2))
    if "disparity" in channels:
        agree = seg_rec == seg_twin
        d_rec, d_twin = recorded[channels.index("disparity")][agree], twin[channels.index("disparity")][agree]
        pixels = int(agree.sum())
        if pixels > 1:
            errors, ref = _scaled_errors(d_rec, d_twin)
            rho, err = spearman(d_rec, d_twin), float(errors.mean()) if errors.size else float("nan")
            bands = _band_sums(errors, ref)
    return _Tick(conf, _iou(conf), rho, err, pixels, bands, _centroids(seg_rec), _centroids(seg_twin))


# ------------------------------------------------------------------ the episode


def _none_if_nan(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)


def _median(values: list[float]) -> float | None:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.median(finite)) if finite else None


def timing(time_s: np.ndarray, spec_period_s: float) -> TimingMetrics:
    """The recorded period's p50, p95 and jitter against the spec's control period."""
    dt = np.diff(np.asarray(time_s, dtype=np.float64))
    if dt.size == 0:
        return TimingMetrics(spec_period_s, None, None, None, None)
    p50 = float(np.percentile(dt, 50))
    return TimingMetrics(spec_period_s, p50, float(np.percentile(dt, 95)), float(dt.std()),
                         p50 / spec_period_s - 1.0)


def _total(arrays: list[np.ndarray]) -> np.ndarray:
    """The elementwise sum of same-shaped arrays, at least one (in their dtype, as ``sum`` adds them)."""
    total = arrays[0].copy()
    for array in arrays[1:]:
        total = total + array
    return total


def _segmentation(ticks: list[_Tick], classes: list[str]) -> SegmentationMetrics:
    conf = _total([t.confusion for t in ticks])
    used = np.flatnonzero(conf.sum(axis=1))
    rows = max(len(classes), int(used.max()) + 1 if used.size else 0)
    iou = _iou(conf)
    total = conf.sum()
    agreement = float(np.trace(conf[:len(classes)]) / total) if total else float("nan")
    return SegmentationMetrics(classes, {c: _none_if_nan(v) for c, v in zip(classes, iou, strict=True)},
                               agreement, conf[:rows].tolist(),
                               [[_none_if_nan(v) for v in t.iou] for t in ticks])


def finger_shifts(ticks: list[_Tick], classes: list[str], remap: dict[int, int] | None = None) -> list[FingerShift]:
    """Per finger class, the mean recorded-minus-twin centroid shift over the ticks that see it in both.
    ``remap`` (recorded id -> twin id) reads the recorded ids as the twin's first."""
    out = []
    for name in FINGERS:
        if name not in classes:
            continue
        k = classes.index(name)
        rec_ids = [r for r, t in (remap or {}).items() if t == k] or [k]
        shifts = []
        for t in ticks:
            rec = t.rec_centroids[rec_ids].sum(axis=0)
            twin = t.twin_centroids[k]
            if rec[2] >= MIN_MASK_PX and twin[2] >= MIN_MASK_PX:
                shifts.append(rec[:2] / rec[2] - twin[:2] / twin[2])
        if not shifts:
            continue
        s = np.array(shifts)
        mean = s.mean(axis=0)
        norm = np.linalg.norm(mean)
        consistent = float(np.mean(s @ mean > 0)) if norm > 0 else 0.0
        out.append(FingerShift(name, float(mean[0]), float(mean[1]), consistent, len(shifts)))
    return out


# Per-row arrays compare-sim reads: the size of one row (None: the spec's), and whether it must be finite.
def replay(recording: Recording, episode: int = 0, on_tick: Callable[[int, int], None] | None = None,
           on_frames: Callable[[TickFrames], None] | None = None,
           geometry: RigGeometry | None = None, arrays: dict[str, np.ndarray] | None = None) -> ReplayReport:
    """Pose the twin at every tick of ``episode`` and compare its observation with the recorded one.

    ``geometry`` (a rig file) is the camera the twin sees through: the rig's measured one
    rather than the sim's guess, so what is left is what calibration cannot fix.

    ``on_tick(done, total)`` follows the progress; ``on_frames`` sees every tick's pictures
    (for a video) as they are made, so they need not all be kept. ``arrays``: the episode as
    :func:`load_episode` read it (read here if not given).
    """
    arrays = load_episode(recording, episode) if arrays is None else arrays
    if _standin(recording):  # an arm does not know where its cube is: nor does a stand-in's recording here
        arrays = {k: v for k, v in arrays.items() if k not in ("cube_pos", "cube_quat")}
    spec = recording.spec
    lags = _render_lags(len(arrays["joint_pos"]), spec) if recording.meta.get("robot") == "sim" else None
    twin = PosedTwin(spec, geometry)
    focal = twin.focal_px()
    ticks: list[_Tick] = []
    worst: list[TickFrames] = []
    vels = arrays.get("joint_vel")
    joints = arrays["joint_pos"]

    quats = arrays.get("cube_quat")

    def render(i: int, cube: np.ndarray | None) -> np.ndarray:
        return twin.observe(joints[i], cube, None if vels is None else vels[i], 0.0 if lags is None else lags[i],
                            None if quats is None else quats[i])

    try:
        if "cube_pos" in arrays:  # recorded after each row's step: row i's frame shows row i - 1's cube
            cube, cubes = CubePlacement("recorded"), _seen(arrays["cube_pos"])
            quats = None if quats is None else _seen(quats)
        else:  # a real arm's recording: where the first frames show the cube
            cube = fit_cube(render, arrays["obs"], spec, NOMINAL_CUBE)
            cubes = np.repeat(np.array([cube.position]), len(joints), axis=0)
        apart = max(1, len(arrays["obs"]) // (2 * WORST_KEPT))
        # the nominal twin's own pictures are its renders: nothing to compare, and ~0.5 s a render saved
        pictured = "rgb_jpeg" in arrays and not _nominal_twin(recording)
        sampled = set(np.linspace(0, len(joints) - 1, TICKS).round().astype(int)) if pictured else set()
        pairs = []
        for i, obs in enumerate(arrays["obs"]):
            frame = render(i, cubes[i])
            ticks.append(compare_frames(obs, frame, spec))
            if i in sampled:
                pairs.append(twin.picture(i, recording.rgb(arrays, i), None if vels is None else vels[i]))
            # the camera image is decoded here only for a video; the page's few get theirs at the end
            rgb = recording.rgb(arrays, i) if on_frames and "rgb_jpeg" in arrays else None
            frames = TickFrames(i, _agreement(ticks[-1]), obs.copy(), np.array(frame), rgb)
            worst = _keep_worst(worst, frames, apart)
            if on_frames:
                on_frames(frames)
            if on_tick:
                on_tick(i + 1, len(arrays["obs"]))
    finally:
        twin.close()
    replaying = ReplayTwin(spec) if "target" in arrays else None  # one model for the replay and the arm fit
    dynamics = replay_targets(arrays, spec, replaying) if replaying is not None else None
    state = None
    if {"state", "joint_vel"} <= set(arrays) and spec.state.size:
        state = compare_states(arrays["state"], twin_states(arrays["joint_pos"], arrays["joint_vel"], spec), spec)
    motion = None
    if {"action", "tcp_pos"} <= set(arrays):
        motion = axis_check(arrays["action"], arrays["tcp_pos"], spec.action.xyz_scale_m)
    arm = fit_arm([{**arrays, "cube_pos": cubes}], spec, replaying) if replaying is not None else None
    classes = list(spec.observation.segmentation.classes)
    # the cube's colour where the recorded cube is where the twin's is (a grasp, or a misplaced twin, moves it)
    placed = {i for i, t in enumerate(ticks) if np.nan_to_num(t.iou[classes.index("cube")]) >= CUBE_PLACED_IOU}
    picture = picture_metrics(pairs, classes, placed, tuple(twin.task.scene.cube_rgba[:3]), focal) if pairs else None
    report = _report(recording, episode, spec, ticks, arrays["time"], dynamics, state, motion, cube, arm, picture)
    for w in worst:
        if w.rgb is None and "rgb_jpeg" in arrays:
            w.rgb = recording.rgb(arrays, w.tick)
    report.worst = sorted(worst, key=lambda w: w.tick)
    return report


def _nominal_twin(recording: Recording) -> bool:
    """A recording the nominal twin made: the sim's own robot with no stand-in and no perturbation
    (or no run description at all: a recording the library made, not a command)."""
    description = recording.meta.get("description")
    if recording.meta.get("robot") != "sim":
        return False
    return not isinstance(description, dict) or (not description.get("standin") and not description.get("world"))


def _standin(recording: Recording) -> bool:
    description = recording.meta.get("description")
    return isinstance(description, dict) and bool(description.get("standin"))


def _render_lags(rows: int, spec: Spec) -> np.ndarray:
    """Per row of a twin recording, how far (s) its frame's poses are behind its joint reading.

    After a step the twin renders the poses of the last physics step's start (mj_step computes
    the kinematics, then integrates) while it reads the joints after it: one physics step, a
    finger's width on a closing gripper. Semi-implicit Euler steps positions by the new velocity,
    so joint_pos - dt * joint_vel is the rendered pose exactly. The first row is read after the
    reset, which ends with mj_forward: its frame shows the joints as read (the reset's last IK
    step leaves the gripper moving, so the one-step rule would misplace it there).
    """
    lags = np.full(rows, spec.control.physics_timestep_s)
    lags[:1] = 0.0
    return lags


def _seen(after_step: np.ndarray) -> np.ndarray:
    """Per row, the value its frame saw: the previous row's (the first row's for the first frame, which
    the first step has barely moved)."""
    return np.concatenate([after_step[:1], after_step[:-1]])


def _agreement(tick: _Tick) -> float:
    total = tick.confusion.sum()
    return float(np.trace(tick.confusion) / total) if total else 1.0


def _keep_worst(kept: list[TickFrames], new: TickFrames, apart: int = 1) -> list[TickFrames]:
    """The :data:`WORST_KEPT` ticks of lowest agreement so far, at least ``apart`` ticks from each
    other (neighbours look alike; the page should show different moments)."""
    near = [k for k in kept if abs(k.tick - new.tick) < apart]
    if any(k.agreement <= new.agreement for k in near):
        return kept
    kept = [k for k in kept if k not in near]
    return sorted(kept + [new], key=lambda w: w.agreement)[:WORST_KEPT]


def _report(recording: Recording, episode: int, spec: Spec, ticks: list[_Tick], time_s: np.ndarray,
            dynamics: DynamicsMetrics | None = None, state: list[StateFieldCheck] | None = None,
            motion: AxisCheck | None = None, cube: CubePlacement | None = None, arm: ArmFit | None = None,
            picture: PictureMetrics | None = None) -> ReplayReport:
    classes = list(spec.observation.segmentation.classes)
    seg = _segmentation(ticks, classes)
    bands = _total([t.bands for t in ticks])
    by_band = {name: float(b[0] / b[1]) if b[1] else None for name, b in zip(BANDS, bands, strict=True)}
    disp = DisparityMetrics(_median([t.spearman for t in ticks]), _median([t.rel_error for t in ticks]),
                            sum(t.pixels for t in ticks), [_none_if_nan(t.spearman) for t in ticks], by_band)
    period = timing(time_s, spec.control.period_s)
    remap = id_remap(np.array(seg.confusion), classes)
    shifts = finger_shifts(ticks, classes, remap)
    report = ReplayReport(str(recording.folder), episode, len(ticks), seg, disp, period, shifts, dynamics=dynamics,
                          state=state, motion=motion, cube=cube or CubePlacement("recorded"), arm=arm,
                          picture=picture)
    report.findings = findings(report, remap)
    return report
