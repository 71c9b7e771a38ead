"""``so101 emulate``: STS3215 servos on a pseudo-terminal, the twin behind them, its camera served,
and an emulated leader arm a scripted hand grabs: an arm to rehearse on, in a terminal of its own."""

from __future__ import annotations

import json
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from so101_sim2real.errors import So101Error

if TYPE_CHECKING:
    from so101_sim2real.control.twin_bus import TwinBridge
    from so101_sim2real.control.twin_camera import TwinCameraServer
    from so101_sim2real.leader.emulator import EmulatedLeader, SessionClock
    from so101_sim2real.leader.hand_script import Grab


def _id_list(text: str) -> list[int]:
    ids: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise So101Error(f"--ids {text!r}: use a list like 1-6 or 1,2,5") from None
        if last < first:
            raise So101Error(f"--ids {text!r}: a range runs low to high, e.g. {last}-{first}")
        ids += list(range(first, last + 1))
    if not ids or min(ids) < 0 or max(ids) > 252:
        raise So101Error(f"--ids {text!r}: servo IDs are 0..252")
    return ids


HAND_HELP = ("A YAML list of grabs of the leader, in order, e.g. - {episode: 1, step: 10, hold_s: 8, guide: cube}. "
             "Each grab's trigger: episode N (and step K): in the session's episode N at its step K (needs --twin; "
             "waits for the session's first episode); when: stalled (and stall_s: 3): once the follower has come "
             "no closer to the twin's cube for that long (needs --twin); or at_s: seconds after the leader starts "
             "following (before the session's first episode, if small). hold_s: how long the hand holds it at "
             "most; guide: cube (the scripted expert toward the twin's cube; needs --twin), still (hold it), or "
             "{JOINT: DEGREES, ...} (move joints by that much).")


def emulate(
    ids: Annotated[str, typer.Option("--ids", help="Servo IDs, e.g. 1-6 or 1,2,5.")] = "1-6",
    faults: Annotated[str, typer.Option("--faults", help="Injected faults, e.g. drop=0.01,corrupt=0.01,late=0.001,"
                                                         "missing=5,error=3:4")] = "",
    twin: Annotated[bool, typer.Option("--twin", help="Servo positions come from the sim twin's joints: the real "
                                                      "driver moves the twin.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fault generator (and the twin's reset).")] = 0,
    leader: Annotated[bool, typer.Option("--leader", help="Also emulate a leader arm (IDs 1-6, no faults) on a "
                                                          "second pty for 'hilserl train --intervene leader': "
                                                          "prints its path and its calibration file after the "
                                                          "follower's.")] = False,
    hand: Annotated[Optional[Path], typer.Option("--hand", help=HAND_HELP)] = None,
    standin: Annotated[Optional[Path], typer.Option("--standin", help="With --twin: the twin is this stand-in "
                                                                      "world (configs/standin.yaml): its scene, "
                                                                      "its arm behind the servos, its picture on "
                                                                      "the camera.")] = None,
) -> None:
    """Emulate STS3215 servos on a pseudo-terminal; prints its path first, runs until Ctrl-C.

    With --leader, stdout has three lines: the follower's pty (--port), the
    leader's pty (--leader-port) and the leader's calibration file
    (--leader-calibration), e.g. so101 emulate --twin --leader --hand hand.yaml, then
    so101 hilserl train ... --robot so101 --port PTY1 --calibration twin --intervene
    leader --leader-port PTY2 --leader-calibration FILE (or twin: the same
    calibration). The file is removed on exit.
    """
    import signal
    import time

    from so101_sim2real.hardware.emulator import BusEmulator, Faults

    if standin is not None and not twin:
        raise So101Error("--standin: only with --twin (the stand-in is built on the sim twin)")
    world = None
    if standin is not None:
        from so101_sim2real.sim.standin import load_standin

        world = load_standin(standin)
    grabs = _hand_script(hand, leader, twin)
    emu = BusEmulator(_id_list(ids), Faults.parse(faults), seed=seed)
    bridge: TwinBridge | None = None
    if twin:
        from so101_sim2real.control.twin_bus import attach_twin

        bridge = attach_twin(emu, seed=seed, standin=world)
    lead: EmulatedLeader | None = None
    camera: TwinCameraServer | None = None
    before = signal.signal(signal.SIGTERM, _interrupt)  # a plain kill stops it as Ctrl-C does, files removed
    try:
        path = emu.start()
        typer.echo(path)
        typer.echo(f"emulating {len(emu.servos)} STS3215 servo(s) at 1 Mbaud"
                   + (" driving the sim twin" if twin else "") + (f" as the {world.summary()}" if world else "")
                   + "; Ctrl-C to stop", err=True)
        if bridge is not None:
            camera = _serve_camera(bridge, path)
        if leader:  # its hand counts the session's episodes and ticks on the camera's connection
            lead = _make_leader(grabs, bridge, camera)
            _start_leader(lead, path, grabs)
        told = 0
        while True:
            time.sleep(0.5)
            told = _tell_hand(lead, told)
    except KeyboardInterrupt:
        pass
    finally:
        if lead is not None:
            lead.stop()
        if camera is not None:
            camera.stop()
        emu.stop()
        signal.signal(signal.SIGTERM, before)
        typer.echo(f"stopped; {json.dumps(emu.stats)}", err=True)


def _serve_camera(bridge: TwinBridge, port: str) -> TwinCameraServer:
    """The twin's wrist camera for other processes: what --camera twin reads beside --port PORT."""
    from so101_sim2real.control.twin_camera import TwinCameraServer

    server = TwinCameraServer(bridge, bridge.task.spec.observation, port)
    server.start()
    h, w = server.size
    typer.echo(f"camera: the twin's wrist camera at {w}x{h}, rendered on request: --camera twin beside --port "
               f"{port} (or twin:{port} anywhere a camera is named)", err=True)
    return server


def _tell_hand(lead: EmulatedLeader | None, told: int) -> int:
    """What the hand did since the last call, on stderr; how many events are told."""
    events = lead.hand.events if lead is not None and lead.hand is not None else []
    for event in events[told:]:
        typer.echo(str(event), err=True)
    return len(events)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _hand_script(hand: Path | None, leader: bool, twin: bool) -> list[Grab]:
    """The grabs of --hand, checked before anything starts."""
    if hand is None:
        return []
    if not leader:
        raise So101Error("--hand moves the emulated leader arm: add --leader")
    from so101_sim2real.leader.hand_script import load_hand_script

    return load_hand_script(hand, twin)


def _make_leader(grabs: list[Grab], bridge: TwinBridge | None, clock: SessionClock | None) -> EmulatedLeader:
    """The emulated leader; ``clock`` (the twin camera's server) tells its hand the session's episode and tick."""
    from so101_sim2real.leader.emulator import EmulatedLeader

    return EmulatedLeader(grabs, bridge, clock=clock)


def _start_leader(lead: EmulatedLeader, follower: str, grabs: list[Grab]) -> None:
    path = lead.start()
    typer.echo(path)
    typer.echo(str(lead.calibration_file))
    hand = f"a scripted hand makes {len(grabs)} grab(s)" if grabs else "nobody grabs it"
    typer.echo(f"follower: {follower} (--port); leader: {path} (--leader-port), calibration "
               f"{lead.calibration_file} (--leader-calibration); {hand}", err=True)


def register(app: typer.Typer) -> None:
    """Add ``emulate`` to the main app."""
    app.command()(emulate)
