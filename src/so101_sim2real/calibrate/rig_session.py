"""A rig calibration as one call: the follower and the wrist camera opened, the poses visited, the fit
written, and everything closed again (torque off first) on the way out.

Two calibrations, each on an arm or on the emulated rig (the twin, its mount and joint zeros off the
sim's guess by a known :class:`~so101_sim2real.calibrate.rig_rehearsal.RigTruth`):

* the rig (:func:`calibrate_rig_on_arm`, :func:`rehearse_rig`): the camera's mount on the gripper
  and the joints' zero offsets, fitted to views of a board lying on the table;
* the alignment (:func:`align_on_arm`, :func:`rehearse_align`): the mount alone, fitted to the
  fingers and the table as the segmentation sees them (no board), or nudged by eye in a window.

Each says what it is doing through ``say`` and returns what it found for the caller to report;
``wait_for_operator`` is asked once before the arm first moves. ``so101 calibrate rig`` and
``so101 calibrate align`` are thin over these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from so101_sim2real.errors import So101Error
from so101_sim2real.geometry.rig_file import RigGeometry

if TYPE_CHECKING:
    from so101_sim2real.calibrate.align import AlignFit, AlignView
    from so101_sim2real.calibrate.hand_eye import RigFit
    from so101_sim2real.control.description import RunDescription
    from so101_sim2real.control.window import LiveWindow
    from so101_sim2real.geometry.camera_model import CameraModel
    from so101_sim2real.hardware.joint_calibration import ArmCalibration
    from so101_sim2real.hardware.so101 import SO101Follower
    from so101_sim2real.interfaces import Camera
    from so101_sim2real.perception.segmentation import SegmentationModel
    from so101_sim2real.sim.standin import StandIn
    from so101_sim2real.sim.table_board import TableBoard
    from so101_sim2real.spec import Spec

Say = Callable[[str], None]
CAPTURE_PERIOD_S = 0.02  # the control period while the arm visits the poses


def _quiet(text: str) -> None:
    pass


@dataclass(frozen=True)
class RigResult:
    """A rig calibration: the fit (``fit.rig`` was written to ``out``), the guess it started from, the
    overlay picture, and on the emulated rig the truth it should have recovered."""

    fit: RigFit
    guess: RigGeometry
    out: Path
    overlay: Path
    truth: RigGeometry | None = None


@dataclass(frozen=True)
class AlignResult:
    """An alignment: the fit of the mount (None by eye), the rig written to ``out`` (None: the person
    left the window without keeping one), the guess, the poses seen, and on the emulated rig the truth."""

    fit: AlignFit | None
    rig: RigGeometry | None
    guess: RigGeometry
    out: Path
    views: int
    truth: RigGeometry | None = None


# --------------------------------------------------------------------------- the arm and its camera


def arm_ranges() -> np.ndarray:
    """(6, 2) the twin's joint ranges in radians, as its emulated arm is calibrated."""
    from so101_sim2real.sim import scene as S

    model = S.build_model()
    return np.array([model.jnt_range[model.joint(j).id] for j in S.JOINTS])


def load_guess(path: Path) -> RigGeometry:
    """Where a calibration starts: a rig.yaml (refined), or a camera.yaml from 'so101 calibrate camera'
    (its lens, the sim's mount and zero joint offsets)."""
    from so101_sim2real.geometry.rig_file import rig_from_camera

    if path.suffix in (".yaml", ".yml") and "format: so101-rig" in _head(path):
        return RigGeometry.load(path)
    return rig_from_camera(path)


def _head(path: Path) -> str:
    try:
        return path.read_text()[:2000]
    except OSError as exc:
        raise So101Error(f"@camera_model {path}: cannot read it ({exc.strerror})") from None


@contextmanager
def arm_and_camera(port: str, calibration: ArmCalibration, camera: str) -> Iterator[tuple[SO101Follower, Camera]]:
    """(follower, camera): the follower on ``port``, connected, and the wrist camera ``camera`` (``twin``:
    the camera of the emulated arm on ``port``); on the way out the arm's torque goes off, then both close."""
    from so101_sim2real.cameras import open_camera
    from so101_sim2real.hardware.so101 import open_follower

    cam = open_camera(camera, port=port)
    try:
        robot = open_follower(port, calibration)
        try:
            yield robot, cam
        finally:
            robot.close()  # torque off first
    finally:
        cam.close()


def _arm_parts(arm: RunDescription) -> tuple[str, str, str]:
    """(port, calibration, camera) of an arm on a serial port; each missing one named."""
    missing = [f"@{name}" for name, value in (("port", arm.robot.port), ("calibration", arm.robot.calibration),
                                               ("camera", arm.camera.source)) if not value]
    if missing:
        raise So101Error(f"a real rig needs {', '.join(missing)}")
    return cast(str, arm.robot.port), cast(str, arm.robot.calibration), cast(str, arm.camera.source)


def _arm_calibration(calibration: str, guess: RigGeometry) -> ArmCalibration:
    """The follower's calibration (an id, a .json or 'twin') with the guess's joint offsets added."""
    from so101_sim2real.control.env import load_calibration
    from so101_sim2real.hardware.joint_calibration import with_joint_offsets

    return with_joint_offsets(cast("ArmCalibration", load_calibration(calibration)), guess.joint_offsets_rad)


# --------------------------------------------------------------------------- the rig: mount and joint zeros


def calibrate_rig_on_arm(arm: RunDescription, guess: RigGeometry, table: TableBoard, poses: int, seed: int,
                         out: Path, report_dir: Path, *, say: Say = _quiet,
                         wait_for_operator: Callable[[str], object] | None = None) -> RigResult:
    """The rig of ``arm``'s follower (its port and calibration) fitted to views of ``table``'s board
    through its camera, starting from ``guess`` (whose lens is the camera's); the board's reach is
    checked before the arm moves."""
    from so101_sim2real.calibrate.rig_poses import check_reach

    port, calibration, camera = _arm_parts(arm)
    cal = _arm_calibration(calibration, guess)
    check_reach(table, guess, cal.sim_ranges(), poses, seed)  # before the arm moves
    with arm_and_camera(port, cal, camera) as (robot, cam):
        if wait_for_operator is not None:
            wait_for_operator(f"the arm will visit {poses} poses above the board; keep clear of it. Enter to start")
        return run_rig_calibration(robot, cam, guess, table, poses, seed, out, report_dir, say=say)


def rehearse_rig(table: TableBoard, poses: int, seed: int, out: Path, report_dir: Path, *, say: Say = _quiet,
                 note: str | None = None, world: StandIn | None = None, camera: CameraModel | None = None
                 ) -> RigResult:
    """The rig calibration on the emulated rig, from the sim's guess; the result carries the truth.
    ``note`` is said once the board is known to be in reach, before the twin starts. With a stand-in
    ``world`` the rig is that world's, and ``camera`` (its ``calibrate camera``) the fit's lens."""
    from so101_sim2real.calibrate import rig_rehearsal  # at call time: a test may stand in for the twin
    from so101_sim2real.calibrate.rig_poses import check_reach
    from so101_sim2real.geometry.rig_file import default_rig
    from so101_sim2real.sim.standin_scene import standin_rig
    from so101_sim2real.spec import default_spec

    guess = default_rig() if camera is None else replace(default_rig(), camera=camera, calibrated=True)
    check_reach(table, guess, arm_ranges(), poses, seed)
    if note:
        say(note)
    if world is not None:
        truth = standin_rig(world, default_rig())
        say(f"rehearsal on the {world.summary()}: its camera, picture and joints are the world's; the fit does not "
            f"know them")
    else:
        truth = rig_rehearsal.RigTruth().rig(guess)
        say("rehearsal: the twin's camera is moved 8 mm / 4 deg from the sim's guess and its joint zeros are "
            "off by -3 -3 +5 +5 0 deg; the fit does not know that")
    with rig_rehearsal.rig_rehearsal(default_spec(), table, truth, world) as (robot, eyes):
        result = run_rig_calibration(robot, eyes, guess, table, poses, seed, out, report_dir, say=say)
    return RigResult(result.fit, guess, out, result.overlay, truth)


def run_rig_calibration(robot: SO101Follower, camera: Camera, guess: RigGeometry, table: TableBoard, poses: int,
                        seed: int, out: Path, report_dir: Path, *, say: Say = _quiet) -> RigResult:
    """With the arm and its camera open: the poses planned and visited, the board found in each view,
    the rig fitted and written to ``out``, the overlay of the fitted twin drawn in ``report_dir``."""
    from so101_sim2real.calibrate.hand_eye import fit_rig
    from so101_sim2real.calibrate.rig_capture import capture_views
    from so101_sim2real.calibrate.rig_poses import rig_poses
    from so101_sim2real.calibrate.rig_report import OVERLAY_PNG, plot_rig_overlay

    limits = np.column_stack([robot.limits.low, robot.limits.high])
    plan = rig_poses(limits, guess.camera, table, guess, poses, seed, start=robot.read().position)
    if len(plan) < poses:
        say(f"{poses - len(plan)} pose(s) have no clear path from the others; visiting {len(plan)}")
    captured = capture_views(robot, camera, table.board, plan, period_s=CAPTURE_PERIOD_S, say=say)
    fit = fit_rig(captured.views, guess.camera, table, guess)
    fit.rig.save(out)
    overlay = plot_rig_overlay(fit, guess, captured, table, report_dir / OVERLAY_PNG)
    return RigResult(fit, guess, out, overlay)


# --------------------------------------------------------------------------- the alignment: the mount alone


def align_on_arm(arm: RunDescription, guess: RigGeometry, out: Path, *, window: LiveWindow | None = None,
                 say: Say = _quiet, wait_for_operator: Callable[[str], object] | None = None) -> AlignResult:
    """The mount of ``arm``'s follower fitted to what its segmentation (@seg_ckpt) sees of the fingers
    and the table at the start pose; with a ``window``, nudged by eye instead (no segmentation)."""
    from so101_sim2real.calibrate.align import align_poses, capture_align_views
    from so101_sim2real.cameras import undistorted
    from so101_sim2real.perception.segmentation import load_segmentation
    from so101_sim2real.sim.task import LiftCubeTask
    from so101_sim2real.spec import default_spec

    port, calibration, camera = _arm_parts(arm)
    seg_ckpt = arm.perception.seg_ckpt
    if window is None and seg_ckpt is None:
        raise So101Error("@seg_ckpt: the fit finds the fingers and the table with it (or nudge the mount by eye in a "
                         "window)")
    spec = default_spec()
    seg = None if window is not None else load_segmentation(cast(str, seg_ckpt))  # before the arm moves
    cal = _arm_calibration(calibration, guess)
    with arm_and_camera(port, cal, camera) as (robot, cam):
        # the twin renders the ideal pinhole picture: the network reads the frame undistorted to it
        segment = _segmenter(undistorted(cam, guess.camera), spec, seg) if seg is not None else None
        if wait_for_operator is not None:
            wait_for_operator("take the cube off the table; the arm will move to the start pose. Enter to start")
        if window is not None:
            return by_eye(robot, lambda: cam.read().rgb, guess, window, out, say=say)
        assert segment is not None  # no window: the network segments
        views = capture_align_views(robot, segment, align_poses(LiftCubeTask(spec).start_pose()),
                                    CAPTURE_PERIOD_S, say)
    return _fit_and_write(views, spec, guess, out, say)


def rehearse_align(guess: RigGeometry, out: Path, *, window: LiveWindow | None = None, say: Say = _quiet,
                   world: StandIn | None = None, seg_ckpt: str | Path | None = None) -> AlignResult:
    """The alignment on the emulated rig (its joint zeros right, its mount off the guess); the result
    carries the truth. With a stand-in ``world`` the rig is that world's (its joint offsets are
    ``guess``'s to know, from ``calibrate rig``), and ``seg_ckpt`` (its network) reads its picture as
    on an arm; without one, the twin's own classes."""
    from so101_sim2real.calibrate import rig_rehearsal  # at call time: a test may stand in for the twin
    from so101_sim2real.calibrate.align import align_poses, capture_align_views
    from so101_sim2real.cameras import undistorted
    from so101_sim2real.geometry.rig_file import default_rig
    from so101_sim2real.perception.segmentation import load_segmentation
    from so101_sim2real.sim.standin_scene import standin_rig
    from so101_sim2real.sim.task import LiftCubeTask
    from so101_sim2real.spec import default_spec

    spec = default_spec()
    if world is not None:
        truth = standin_rig(world, default_rig())
        say(f"rehearsal on the {world.summary()}: its camera is mounted as the world says; the fit does not know it")
    else:
        truth = rig_rehearsal.RigTruth(joint_offsets_deg=(0.0,) * 6).rig(guess)
        say("rehearsal: the twin's camera is mounted 8 mm / 4 deg from the guess; the fit does not know that")
    # on a stand-in, the arm's zeros as the rig measured them, as on an arm
    corrections = guess.joint_offsets_rad if world is not None else None
    with rig_rehearsal.rig_rehearsal(spec, None, truth, world, corrections) as (robot, camera):
        if window is not None:
            return by_eye(robot, lambda: camera.read().rgb, guess, window, out, say=say)
        segment = _segmenter(undistorted(camera, guess.camera), spec, load_segmentation(seg_ckpt)) if seg_ckpt else None
        if segment is None:

            def segment():
                with camera.lock:
                    return camera.inner.seg_ids()

        views = capture_align_views(robot, segment, align_poses(LiftCubeTask(spec).start_pose()),
                                    CAPTURE_PERIOD_S, say)
    result = _fit_and_write(views, spec, guess, out, say)
    return AlignResult(result.fit, result.rig, guess, out, result.views, truth)


def _segmenter(cam: Camera, spec: Spec, seg: SegmentationModel) -> Callable[[], np.ndarray]:
    """The segmentation network on ``cam``'s frames, as the twin's class ids (what the mount fit compares)."""
    from so101_sim2real.observation import real_to_sim_ids

    def segment() -> np.ndarray:
        real = seg.predict(cam.read().rgb, seg.input_size)
        return real_to_sim_ids(real, spec.observation.segmentation.real_to_sim)

    return segment


def by_eye(robot: SO101Follower, take_picture: Callable[[], np.ndarray], guess: RigGeometry, window: LiveWindow,
           out: Path, *, say: Say = _quiet) -> AlignResult:
    """The start pose, one picture, the nudge loop in ``window`` (closed after); the rig written when
    the person keeps it."""
    from so101_sim2real.calibrate.align import align_poses, capture_align_views
    from so101_sim2real.calibrate.align_view import KEYS_HELP, nudge_loop
    from so101_sim2real.sim.task import LiftCubeTask
    from so101_sim2real.spec import default_spec

    pictures: list[np.ndarray] = []

    def picture() -> np.ndarray:
        pictures.append(take_picture())
        return pictures[-1]

    views = capture_align_views(robot, picture, align_poses(LiftCubeTask(default_spec()).start_pose())[:1],
                                CAPTURE_PERIOD_S, say)
    say(KEYS_HELP)
    try:
        nudged = nudge_loop(guess, pictures[-1], views[0].joints, window)
    finally:
        window.close()
    if nudged is not None:
        nudged.fitted["align"] = {"by_eye": True}
        nudged.save(out)
    return AlignResult(None, nudged, guess, out, len(views))


def _fit_and_write(views: list[AlignView], spec: Spec, guess: RigGeometry, out: Path, say: Say) -> AlignResult:
    from so101_sim2real.calibrate.align import fit_mount

    say("fitting the mount (about a minute) ...")
    fit = fit_mount(views, spec, guess)
    fit.rig.save(out)
    return AlignResult(fit, fit.rig, guess, out, len(views))
