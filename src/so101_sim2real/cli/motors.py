"""``so101 motors``: the arm's serial port, the servos on it, and their IDs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from so101_sim2real.arm import SERVO_IDS
from so101_sim2real.cli import PLAIN
from so101_sim2real.cli.options import PortOpt
from so101_sim2real.errors import So101Error

motors_app = typer.Typer(help="Find the arm's serial port and the servos on it.", no_args_is_help=True, **PLAIN)


@motors_app.command("find-port")
def motors_find_port(
    unplug: Annotated[bool, typer.Option("--unplug", help="Ask you to unplug the arm's USB cable and report the "
                                                          "port that went away.")] = False,
) -> None:
    """List serial ports; with --unplug, tell which one is the arm."""
    from so101_sim2real.hardware.scan import list_ports, new_ports

    before = list_ports()
    if before:
        width = max(len("port"), *(len(p.device) for p in before))
        typer.echo(f"{'port':<{width}}  description / hardware id")
    for p in before:
        typer.echo(f"{p.device:<{width}}  {p.description}  {p.hwid}")
    if not before:
        typer.echo("no serial ports found: is the arm's USB adapter plugged in?")
    if unplug:
        typer.prompt("unplug the arm's USB cable, then press Enter", default="", show_default=False)
        changed = new_ports(before, list_ports())
        if len(changed) != 1:
            raise So101Error(f"{len(changed)} ports changed while unplugging; try again with only the arm's cable")
        typer.echo(f"the arm is on {changed[0].device}; plug it back in")


@motors_app.command("scan")
def motors_scan(
    port: PortOpt,
    baud: Annotated[int, typer.Option("--baud", help="Baud rate to scan at.")] = 1_000_000,
    all_bauds: Annotated[bool, typer.Option("--all-bauds", help="Scan every baud rate the STS3215 supports.")] = False,
    every_id: Annotated[bool, typer.Option("--every-id", help="Ping IDs 0-252 one by one instead of one broadcast "
                                                              "ping (slower; for servos that ignore broadcasts).")
                        ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Find the servos on a port: ID, baud, model, firmware, voltage, temperature, position."""
    from so101_sim2real.hardware.scan import scan_bauds

    found = scan_bauds(port, None if all_bauds else [baud], every_id,
                       on_skip=lambda b, _: typer.echo(f"(skipped {b} baud: the port cannot run at it)", err=True))
    if as_json:
        typer.echo(json.dumps({"port": port, "servos": [s.to_dict() for s in found]}))
        return
    typer.echo(f"{'id':>3} {'baud':>8} {'model':>6} {'fw':>6} {'volt':>6} {'temp':>5} {'pos':>5}")
    for s in found:
        typer.echo(f"{s.id:>3} {s.baud:>8} {s.model:>6} {s.firmware:>6} {s.voltage_v:>5.1f}V {s.temperature_c:>4}C "
                   f"{s.position:>5}")
    typer.echo(f"{len(found)} servo(s) on {port}")


@motors_app.command("setup")
def motors_setup(
    port: PortOpt,
    baud: Annotated[int, typer.Option("--baud", help="Baud rate to give every servo.")] = 1_000_000,
) -> None:
    """Give each servo its ID (gripper 6 ... shoulder_pan 1) and baud, one servo connected at a time.

    With --port emulator it is a rehearsal: a factory-fresh emulated servo at each prompt.
    """
    import contextlib

    from so101_sim2real.control.env import EMULATOR_PORT
    from so101_sim2real.control.rehearsal import setup_rehearsal
    from so101_sim2real.hardware.setup import assign

    def prompt_enter(message: str) -> None:
        typer.prompt(message, default="", show_default=False)

    ask: Callable[[str], None] = prompt_enter  # with --port emulator, the rehearsal's (it connects a servo)

    if port != EMULATOR_PORT and port.startswith("/") and not Path(port).exists():  # before the first prompt
        raise So101Error(f"--port {port}: no such serial port; plug in the USB adapter, or find it with "
                         f"'so101 motors find-port'")
    with contextlib.ExitStack() as stack:
        if port == EMULATOR_PORT:
            port, ask = stack.enter_context(setup_rehearsal(say=typer.echo))
        for motor, servo_id in reversed(list(SERVO_IDS.items())):
            ask(f"connect ONLY the {motor} servo to the adapter, then press Enter")
            info = assign(port, motor, servo_id, baud)
            typer.echo(f"{motor}: id {info.id}, {info.baud} baud, model {info.model}, firmware {info.firmware}")
    typer.echo("all six servos set up; daisy-chain them and run 'so101 calibrate joints'")
