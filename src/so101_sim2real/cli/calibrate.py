"""``so101 calibrate``: the joints (here), the board and the camera (:mod:`.calibrate_camera`), the rig
and its alignment (:mod:`.calibrate_rig`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from so101_sim2real.cli import PLAIN
from so101_sim2real.cli.calibrate_camera import register as register_camera_calibration
from so101_sim2real.cli.calibrate_rig import register as register_rig_calibration
from so101_sim2real.cli.options import PortOpt
from so101_sim2real.errors import So101Error

calibrate_app = typer.Typer(help="Calibrate joints (LeRobot-compatible) and the mapping to the sim.",
                            no_args_is_help=True, **PLAIN)


@calibrate_app.command("joints")
def calibrate_joints(
    port: PortOpt,
    robot_id: Annotated[str, typer.Option("--id", help="Name of this arm; the calibration file is ID.json.")],
    arm: Annotated[str, typer.Option("--arm", help="follower or leader.")] = "follower",
    signs: Annotated[Optional[list[str]], typer.Option("--sign", help="JOINT=-1 where the servo turns against the "
                                                                      "MJCF joint axis (repeatable).")] = None,
    root: Annotated[Optional[Path], typer.Option("--root", help="LeRobot calibration folder (default: "
                                                                "~/.cache/huggingface/lerobot/calibration).")] = None,
) -> None:
    """Record homing offsets, ranges and the pose matching the sim's zero; writes LeRobot's JSON + the sim map.

    With --port emulator it is a rehearsal: an emulated arm (horns mounted off centre)
    and a scripted hand that does each step, through the same calibration code.
    """
    import threading

    from so101_sim2real.control.env import EMULATOR_PORT
    from so101_sim2real.files import writable_folder
    from so101_sim2real.hardware.joint_calibration import new_lerobot_path
    from so101_sim2real.hardware.setup import calibrate_on_port, parse_signs

    if arm not in ("follower", "leader"):
        raise So101Error(f"--arm {arm}: use follower or leader")
    sign_map = parse_signs(signs or [])

    def wait(message: str) -> None:
        typer.prompt(message, default="", show_default=False)

    def sweep(message: str) -> Callable[[], bool]:
        typer.echo(message)
        pressed = threading.Event()  # the arm is sampled while they move; Enter, read in a thread, ends it

        def read_enter() -> None:
            input()
            pressed.set()

        threading.Thread(target=read_enter, daemon=True).start()
        return pressed.is_set

    path = new_lerobot_path(arm, robot_id, root)
    if problem := writable_folder(path.parent):  # found out now, not after the person has calibrated
        raise So101Error(f"cannot write the calibration to {path.parent}: {problem}")
    if port == EMULATOR_PORT:
        from so101_sim2real.control.rehearsal import calibration_rehearsal

        if path.exists():  # a rehearsal must not replace a real arm's calibration
            raise So101Error(f"{path} exists; a rehearsal on the emulator writes a new file: choose another --id")
        with calibration_rehearsal(say=typer.echo) as (emulated, hand):
            cal = calibrate_on_port(emulated, hand.wait, hand.sweep, sign_map)
    else:
        cal = calibrate_on_port(port, wait, sweep, sign_map)
    cal.save(path)
    typer.echo(f"wrote {path} (LeRobot format) and {path.stem}.so101_sim.json (sim mapping)"
               + (" of the emulated arm" if port == EMULATOR_PORT else ""))


register_camera_calibration(calibrate_app)
register_rig_calibration(calibrate_app)
