"""``so101 calibrate rig`` and ``align``: the wrist camera's mount (and the joints' zeros), measured.

``rig`` fits both to views of a board on the table; ``align`` needs no board: it fits the
mount to what the segmentation sees of the fingers and the table. Thin over
:mod:`so101_sim2real.calibrate.rig_session`; :func:`register` adds them to the ``calibrate`` group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import numpy as np
import typer

from so101_sim2real.errors import So101Error

if TYPE_CHECKING:
    from so101_sim2real.calibrate.hand_eye import RigFit
    from so101_sim2real.calibrate.rig_session import AlignResult, RigResult
    from so101_sim2real.control.window import LiveWindow
    from so101_sim2real.geometry.rig_file import RigGeometry
    from so101_sim2real.sim.standin import StandIn

BOARD_AT_HELP = ("Where the board lies: X,Y of its squares' top-left corner in metres in the arm's base frame "
                 "(x forward, y left), and optionally its turn in degrees, e.g. 0.145,0.075,0 (the default: "
                 "a 7x5 board of 30 mm squares centred where the task's cube goes).")


def _board_at(text: str) -> tuple[tuple[float, float], float]:
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (2, 3) or not all(math.isfinite(v) for v in values):
        raise So101Error(f"--board-at {text!r}: use X,Y or X,Y,YAW_DEG, e.g. 0.145,0.075,0")
    return (values[0], values[1]), math.radians(values[2]) if len(values) == 3 else 0.0


PortOpt = Annotated[str, typer.Option("--port", help="The follower's serial port, or 'emulator': a rehearsal on "
                                                      "the twin, whose camera mount (and for rig, joint zeros) "
                                                      "are off the guess by a known amount.")]
OutOpt = Annotated[Path, typer.Option("--out", help="The rig.yaml to write (camera, mount, joint offsets).")]
CalibrationOpt = Annotated[Optional[str], typer.Option("--calibration", help="The follower's calibration: its id "
                                                                             "or a .json.")]
CameraOpt = Annotated[Optional[str], typer.Option("--camera", help="The wrist camera: an index (0) or a device "
                                                                   "(/dev/video2).")]
StandinOpt = Annotated[Optional[Path], typer.Option("--standin", help="With --port emulator: rehearse on this "
                                                                     "stand-in world's arm (its camera, picture, "
                                                                     "joints and servos; configs/standin.yaml) "
                                                                     "instead of the rehearsal's rig.")]


def _world(standin: Path | None, port: str) -> StandIn | None:
    """The stand-in world of --standin, for the emulated arm only."""
    if standin is None:
        return None
    if port != "emulator":
        raise So101Error("--standin: a stand-in is rehearsed on the emulated arm (--port emulator), never a real port")
    from so101_sim2real.sim.standin import load_standin

    return load_standin(standin)


def calibrate_rig(
    port: PortOpt,
    out: OutOpt,
    calibration: CalibrationOpt = None,
    camera: CameraOpt = None,
    camera_model: Annotated[Optional[Path], typer.Option("--camera-model", help="camera.yaml from 'so101 "
                                                                                "calibrate camera' (or a "
                                                                                "rig.yaml to refine).")
                            ] = None,
    board: Annotated[Optional[Path], typer.Option("--board", help="The board.yaml of the printed board "
                                                                  "(default: ChArUco 7x5, 30 mm).")] = None,
    board_at: Annotated[str, typer.Option("--board-at", help=BOARD_AT_HELP)] = "0.145,0.075,0",
    poses: Annotated[int, typer.Option("--poses", help="Poses the arm visits.")] = 12,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the pose set.")] = 0,
    report: Annotated[Optional[Path], typer.Option("--report", help="Folder for the overlay picture (default: "
                                                                    "beside --out).")] = None,
    standin: StandinOpt = None,
) -> None:
    """Fit the camera's mount on the gripper and the joints' zero offsets to views of a board.

    The board lies flat at --board-at. The arm visits --poses generated poses above it
    (each goal clamped to the arm's ranges and step limit; torque off at the end); at
    each, the board's corners are found, and one least-squares fit makes the sim's
    kinematics agree with every view. Prints each value with its uncertainty and the
    residual before and after; writes rig.yaml and an overlay of the fitted twin on the
    pictures. Give the rig file to infer and hilserl with --rig.
    """
    from so101_sim2real.calibrate.rig_session import calibrate_rig_on_arm, load_guess, rehearse_rig
    from so101_sim2real.control.description import describe
    from so101_sim2real.files import writable_folder
    from so101_sim2real.geometry.board import BoardSpec
    from so101_sim2real.sim.table_board import TableBoard

    if poses < 6:
        raise So101Error("--poses must be at least 6 (the fit has 10 unknowns; 12 or more is better)")
    origin, yaw = _board_at(board_at)
    for folder in (out.parent, report or out.parent):
        if problem := writable_folder(folder):
            raise So101Error(f"cannot write to {folder}: {problem}")
    table = TableBoard(BoardSpec.load(board) if board else BoardSpec(), origin, yaw)
    world = _world(standin, port)
    if world is not None and camera_model is None:
        raise So101Error("--standin: the fit needs the stand-in camera's lens, as a real rig does: --camera-model "
                         "camera.yaml from 'so101 calibrate camera --camera twin --standin ...'")
    if port == "emulator":
        lens = load_guess(camera_model).camera if camera_model is not None else None  # refused as the real day would
        stand_ins: dict[str, tuple[object, str]] = {"--calibration": (calibration, "the twin's arm"),
                                                    "--camera": (camera, "the twin's camera")}
        if world is None:
            stand_ins["--camera-model"] = (camera_model, "the sim's lens, fovy 70.5")
        result = rehearse_rig(table, poses, seed, out, report or out.parent, say=typer.echo,
                              note=stand_in_line(stand_ins), world=world, camera=lens if world else None)
        _say_rig(result)
        return
    missing = [name for name, value in (("--calibration", calibration), ("--camera", camera),
                                        ("--camera-model", camera_model)) if value is None]
    if missing:
        raise So101Error(f"--port {port}: a real rig needs {', '.join(missing)} (the camera's intrinsics come from "
                         f"'so101 calibrate camera')")
    assert camera_model is not None  # in missing otherwise
    arm = describe(robot="so101", port=port, calibration=calibration, camera=camera)
    _say_rig(calibrate_rig_on_arm(arm, load_guess(camera_model), table, poses, seed, out, report or out.parent,
                                  say=typer.echo, wait_for_operator=_enter))


def _enter(message: str) -> None:
    typer.prompt(message, default="", show_default=False)


def stand_in_line(stand_ins: Mapping[str, tuple[object, str]]) -> str | None:
    """The one line a rehearsal says about the real day's options it was given: what stands in for each."""
    given = [f"{flag} {value} ({what})" for flag, (value, what) in stand_ins.items() if value is not None]
    return f"rehearsal: the twin stands in for {', '.join(given)}; not used today" if given else None


def _say_rig(result: RigResult) -> None:
    """The fit, its notes, the files; on the twin, how far the fit is from the truth."""
    for line in fit_table(result.fit, result.guess):
        typer.echo(line)
    for note in result.fit.notes:
        typer.echo(note)
    typer.echo(f"wrote {result.out}; overlay: {result.overlay}")
    if result.truth is not None:
        from so101_sim2real.calibrate.rig_rehearsal import mount_error

        mm, deg = mount_error(result.fit.rig, result.truth)
        off = np.degrees(result.fit.rig.joint_offsets_rad - result.truth.joint_offsets_rad)[:5]
        typer.echo(f"against the truth: mount {mm:.2f} mm / {deg:.2f} deg off; joint offsets off by "
                   + " ".join(f"{v:+.2f}" for v in off) + " deg")


def fit_table(fit: RigFit, guess: RigGeometry) -> list[str]:
    """The fitted values with their 1-sigma, and the residuals."""
    from so101_sim2real.arm import JOINT_NAMES

    rig = fit.rig
    pos = ", ".join(f"{v * 1000:.1f}" for v in rig.mount_pos)
    moved = np.subtract(rig.mount_pos, guess.mount_pos) * 1000
    lines = [f"mount position (mm, gripper frame): {pos}  (moved {np.linalg.norm(moved):.1f} mm from the guess; "
             f"+-{', '.join(f'{s:.2f}' for s in fit.sigma_mount_mm)})",
             f"mount euler (rad, MuJoCo xyz): {', '.join(f'{v:.4f}' for v in rig.mount_euler)}  "
             f"(+-{', '.join(f'{s:.2f}' for s in fit.sigma_mount_deg)} deg)"]
    for joint, value in zip(JOINT_NAMES, np.degrees(rig.joint_offsets_rad), strict=True):
        if joint in fit.sigma_offsets_deg:
            lines.append(f"{joint:<14} offset {value:+6.2f} deg  (+-{fit.sigma_offsets_deg[joint]:.2f})")
    before, after = (float(np.sqrt(np.mean(np.square(v)))) for v in (fit.rms_before_px, fit.rms_after_px))
    lines.append(f"reprojection RMS: {before:.1f} px with the guess -> {after:.2f} px fitted, over "
                 f"{len(fit.rms_after_px)} views (worst {max(fit.rms_after_px):.2f} px)")
    return lines


def calibrate_align(
    port: PortOpt,
    out: OutOpt,
    calibration: CalibrationOpt = None,
    camera: CameraOpt = None,
    seg_ckpt: Annotated[Optional[Path], typer.Option("--seg-ckpt", help="Your segmentation checkpoint: it "
                                                                        "finds the fingers and the table.")
                        ] = None,
    rig: Annotated[Optional[Path], typer.Option("--rig", help="A rig.yaml (or camera.yaml) to start from "
                                                              "(default: the sim's guesses).")] = None,
    interactive: Annotated[bool, typer.Option("--interactive", help="No fit: a window with the real picture, "
                                                                    "the twin's and their blend at the start "
                                                                    "pose, and keys to nudge the mount and the "
                                                                    "field of view by eye.")] = False,
    standin: StandinOpt = None,
) -> None:
    """Fit the camera's mount to the fingers and the table as the segmentation sees them.

    Take the cube off the table. The arm holds the sim's start pose with four gripper
    openings and three wrist turns; the twin, rendered at the same joints, is moved
    until its class maps match the real ones. Prints the IoU per class before and
    after; writes rig.yaml. Joint zeros must be right already (calibrate rig fits both).
    """
    from so101_sim2real.calibrate.rig_session import align_on_arm, rehearse_align
    from so101_sim2real.control.description import describe
    from so101_sim2real.files import writable_folder

    if problem := writable_folder(out.parent):
        raise So101Error(f"cannot write to {out.parent}: {problem}")
    if port == "emulator" and seg_ckpt is not None and not seg_ckpt.is_file():  # the real day would fail on it
        raise So101Error(f"--seg-ckpt {seg_ckpt}: no such file")
    window = _window() if interactive else None
    world = _world(standin, port)
    if world is not None and seg_ckpt is None and not interactive:
        raise So101Error("--standin: the fit reads the stand-in's picture with a segmentation network, as on an arm: "
                         "--seg-ckpt (so101 seg train --standin ...)")
    if port == "emulator":
        stand_ins: dict[str, tuple[object, str]] = {"--calibration": (calibration, "the twin's arm"),
                                                    "--camera": (camera, "the twin's camera")}
        if world is None:  # on a stand-in the network reads its picture, as on an arm
            stand_ins["--seg-ckpt"] = (seg_ckpt, "the twin's own segmentation")
        if line := stand_in_line(stand_ins):
            typer.echo(line)
        _say_align(rehearse_align(_start_rig(rig), out, window=window, say=typer.echo, world=world,
                                  seg_ckpt=seg_ckpt if world else None))
        return
    missing = [name for name, value in (("--calibration", calibration), ("--camera", camera),
                                        ("--seg-ckpt", None if interactive else seg_ckpt)) if value is None]
    if interactive:
        seg_ckpt = seg_ckpt or Path("-")  # not used: the person judges the overlay
    if missing:
        raise So101Error(f"--port {port}: a real rig needs {', '.join(missing)}")
    arm = describe(robot="so101", port=port, calibration=calibration, camera=camera, seg_ckpt=seg_ckpt)
    _say_align(align_on_arm(arm, _start_rig(rig), out, window=window, say=typer.echo, wait_for_operator=_enter))


def _start_rig(path: Path | None) -> RigGeometry:
    from so101_sim2real.calibrate.rig_session import load_guess
    from so101_sim2real.geometry.rig_file import default_rig

    return default_rig() if path is None else load_guess(path)


def _window() -> LiveWindow:
    from so101_sim2real.control.window import LiveWindow, check_display

    check_display("interactive")
    return LiveWindow(option="interactive")


def _say_align(result: AlignResult) -> None:
    """By eye: kept or not; fitted: each class's IoU, the mount, the file; on the twin, the truth."""
    if result.fit is None:
        typer.echo("left without saving" if result.rig is None else f"wrote {result.out}")
        return
    fit, guess = result.fit, result.guess
    for cls in fit.iou_before:
        typer.echo(f"{cls:<14} IoU {fit.iou_before[cls]:.3f} -> {fit.iou_after[cls]:.3f}")
    moved = np.subtract(fit.rig.mount_pos, guess.mount_pos) * 1000
    typer.echo(f"mount moved {np.linalg.norm(moved):.1f} mm from the guess: "
               f"{', '.join(f'{v * 1000:.1f}' for v in fit.rig.mount_pos)} mm; euler "
               f"{', '.join(f'{v:.4f}' for v in fit.rig.mount_euler)} rad ({fit.evaluations} renders of "
               f"{result.views} poses)")
    typer.echo(f"wrote {result.out}")
    if result.truth is not None:
        from so101_sim2real.calibrate.rig_rehearsal import mount_error

        mm, deg = mount_error(fit.rig, result.truth)
        typer.echo(f"against the truth: mount {mm:.2f} mm / {deg:.2f} deg off (the guess was "
                   f"{mount_error(guess, result.truth)[0]:.1f} mm / {mount_error(guess, result.truth)[1]:.1f} deg)")


def register(group: typer.Typer) -> None:
    """Add ``rig`` and ``align`` to the ``calibrate`` group."""
    group.command("rig")(calibrate_rig)
    group.command("align")(calibrate_align)
