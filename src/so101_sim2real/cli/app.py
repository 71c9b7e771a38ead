"""The ``so101`` command line: thin commands over the library."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml

from so101_sim2real.arm import SERVO_IDS
from so101_sim2real.cli import PLAIN
from so101_sim2real.errors import So101Error
from so101_sim2real.perception import DEFAULT_DEPTH_MODEL
from so101_sim2real.records import parse_yaml

app = typer.Typer(
    name="so101",
    help="Take a DrQ-v2 pixel policy trained in MuJoCo onto a real SO-101 arm, and fine-tune it there.",
    no_args_is_help=True,
    add_completion=False,
    **PLAIN,
)

CkptOpt = Annotated[Path, typer.Option("--ckpt", help="Checkpoint: a RoboBase snapshot (.pt), a folder written by "
                                                      "'so101 convert', or a drqv2 snapshot (with --trust-pickle).")]
TrustOpt = Annotated[bool, typer.Option("--trust-pickle", help="Allow a pickle to run code while loading: only for "
                                                               "files you made or trust (facebookresearch/drqv2).")]
SpecOpt = Annotated[Optional[Path], typer.Option("--spec", help="Spec YAML to start from instead of the packaged "
                                                                "lift-cube spec; the checkpoint's config and "
                                                                "weights still override it.")]
PerturbOpt = Annotated[Optional[Path], typer.Option("--perturb", help="Run in the perturbed twin described by this "
                                                                     "YAML (control period, camera moved, noisy seg "
                                                                     "edges and disparity; see "
                                                                     "configs/perturbed_twin.yaml): a stand-in for "
                                                                     "the real arm.")]
SegOpt = Annotated[Optional[Path], typer.Option("--seg-ckpt", help="Your EfficientViT-B0 segmentation checkpoint "
                                                                  "(PyTorch Lightning .ckpt).")]
DepthOpt = Annotated[str, typer.Option("--depth-model", help="Depth Anything V2: a folder (save_pretrained layout) "
                                                             "or a hub id already in the cache (so101 models "
                                                             "download).")]
ProfileOpt = Annotated[str, typer.Option("--profile", help="fast: seg on the crop at 192, depth at 140 on the "
                                                           "whole frame (the disparity is normalised over it, as "
                                                           "trained); exact: as trained, seg at the checkpoint's "
                                                           "size, depth at 518. --set observation.disparity."
                                                           "normalise_region=crop lets depth crop first too: "
                                                           "faster, but not the training observation.")]
BackendOpt = Annotated[str, typer.Option("--backend", help="Where the perception networks run: auto (the fastest "
                                                           "that keeps torch's frames: seg agreement and "
                                                           "disparity rank correlation >= 0.995 on twin renders), "
                                                           "torch, openvino (openvino:f32, openvino:bf16) or "
                                                           "onnxruntime.")]
OverlapOpt = Annotated[bool, typer.Option("--overlap/--no-overlap", help="On an arm on a serial port: "
                                                                        "perceive the next frame in its own "
                                                                        "thread while the loop acts on the last, "
                                                                        "so the period is perception's alone, "
                                                                        "not perception plus the rest.")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--perception-threads", help="CPU threads of the perception "
                                                                            "networks, whichever backend runs "
                                                                            "them (default: torch's count, every "
                                                                            "core; hilserl train: the cores its "
                                                                            "learner leaves).")]
RobotOpt = Annotated[str, typer.Option("--robot", help="Where to run: 'sim' (the MuJoCo twin) or 'so101' (the "
                                                       "Feetech driver; with --port emulator it drives the twin).")
                     ]
FollowerPortOpt = Annotated[Optional[str], typer.Option("--port", help="Serial port of the follower for --robot "
                                                                       "so101 (or the pty of 'so101 emulate "
                                                                       "--twin'), or 'emulator' for the driver on "
                                                                       "an in-process twin.")]
CalibrationOpt = Annotated[Optional[str], typer.Option("--calibration", help="A serial port's arm: its id from "
                                                                             "'so101 calibrate joints', a "
                                                                             "calibration .json, or 'twin' for "
                                                                             "'so101 emulate --twin'.")]
CameraOpt = Annotated[Optional[str], typer.Option("--camera", help="A serial port's eyes: a camera index (0), a "
                                                                   "device (/dev/video2), a video or an image "
                                                                   "folder (looped).")]
RigOpt = Annotated[Optional[Path], typer.Option("--rig", help="The rig's measured geometry: a rig.yaml, or a "
                                                               "camera.yaml from 'so101 calibrate camera'. The "
                                                               "twin sees through its camera; an arm's frames are "
                                                               "undistorted and its joint offsets added.")]
PerceptionOpt = Annotated[str, typer.Option("--perception", help="sim: the twin's rendered classes and depth; "
                                                                 "real: the segmentation and depth networks on the "
                                                                 "camera's RGB (needs --seg-ckpt).")]


class _Progress:
    """In a terminal, a bar with the ETA under the result lines; in a log or a pipe, the lines only."""

    def __init__(self, total: int | None, unit: str):
        self.total, self.unit, self._bar = total, unit, None

    @property
    def bar(self):
        if self._bar is None:  # made at the first unit, under whatever the command printed first
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, unit=self.unit, file=sys.stderr, disable=not sys.stderr.isatty(),
                             leave=False, dynamic_ncols=True)
        return self._bar

    def advance(self, line: str) -> None:
        """One unit done, reported by ``line``."""
        self.bar.update(1)
        if self.bar.disable:
            typer.echo(line)
        else:
            self.bar.write(line, file=sys.stdout)

    def note(self, text: str) -> None:
        """Where the current unit is (redrawn at most a few times a second)."""
        if not self.bar.disable:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(0)  # redraws only when tqdm's minimum interval has passed

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@app.command()
def inspect(
    ckpt: CkptOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    trust_pickle: TrustOpt = False,
    spec: SpecOpt = None,
    rig: RigOpt = None,
) -> None:
    """Say what a checkpoint is: format, architecture, parameters, spec with sources, warnings,
    and the camera the twin sees through (--rig, or the sim's uncalibrated guess)."""
    from so101_sim2real.policy.checkpoint import load_checkpoint
    from so101_sim2real.policy.report import describe, render_text

    geometry = _rig_geometry(rig)
    report = describe(load_checkpoint(ckpt, trust_pickle=trust_pickle, spec_path=spec))
    report["camera"] = {"rig": str(rig) if rig else None, "calibrated": geometry.calibrated,
                        "describe": geometry.describe()}
    typer.echo(json.dumps(report, default=str) if as_json
               else render_text(report) + f"\n\ncamera: {geometry.describe()}")


def _rig_geometry(rig: Path | None) -> object:
    """``--rig FILE`` read now (a typo fails before anything loads), or the sim's uncalibrated guess."""
    from so101_sim2real.control.env import load_rig_file
    from so101_sim2real.geometry.rig_file import default_rig

    return load_rig_file(rig) or default_rig()


@app.command()
def convert(
    ckpt: CkptOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder to write (weights.safetensors + spec.yaml).")],
    trust_pickle: TrustOpt = False,
    spec: SpecOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Write a checkpoint as safetensors + spec YAML: loading it needs no pickle at all."""
    from so101_sim2real.policy.checkpoint import load_checkpoint, save_native
    from so101_sim2real.policy.runtime import verify_same_actions

    source = load_checkpoint(ckpt, trust_pickle=trust_pickle, spec_path=spec)
    folder = save_native(source, out, overwrite=force)
    checked = verify_same_actions(source, load_checkpoint(folder))
    typer.echo(f"wrote {folder}/ (weights.safetensors, spec.yaml) from a {source.format} checkpoint")
    typer.echo(f"verified: identical actions on {checked} random observations")
    for w in source.warnings:
        typer.echo(f"  ! {w}")


def _given(ctx: typer.Context, *names: str) -> list[str]:
    """The flags among ``names`` (parameter names) that the user typed, as they typed them."""
    params = {p.name: p for p in ctx.command.params}
    return ["/".join(params[n].opts + params[n].secondary_opts) for n in names
            if ctx.get_parameter_source(n).name != "DEFAULT"]


@app.command()
def infer(
    ctx: typer.Context,
    ckpt: Annotated[str, typer.Option("--ckpt", help="A checkpoint (RoboBase snapshot, 'so101 convert' folder, "
                                                     "drqv2 snapshot with --trust-pickle), or 'scripted' for the "
                                                     "built-in expert (sim only, no rendering needed).")],
    robot: RobotOpt = "sim",
    port: FollowerPortOpt = None,
    calibration: CalibrationOpt = None,
    camera: CameraOpt = None,
    episodes: Annotated[int, typer.Option("--episodes", "-n", help="Number of episodes.")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first episode; episode i uses seed + i.")] = 0,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Cut episodes shorter than the "
                                                                         "spec's limit.")] = None,
    record: Annotated[Optional[Path], typer.Option("--record", help="Folder to record frames, joint states and "
                                                                    "actions to (read by compare-sim).")] = None,
    video: Annotated[Optional[Path], typer.Option("--video", help="Write camera RGB beside the policy's two "
                                                                  "channels to this .mp4/.avi.")] = None,
    realtime: Annotated[bool, typer.Option("--realtime", help="Hold the twin to the control period instead of "
                                                              "running as fast as it can.")] = False,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="Override a spec field for this run, "
                                                                         "e.g. --set action.ik.pose_from="
                                                                         "measured_joints (repeatable); the run "
                                                                         "says it is not what the policy was "
                                                                         "trained with.")] = None,
    device: Annotated[str, typer.Option("--device", help="Torch device for the policy and the perception "
                                                         "networks.")] = "cpu",
    perception: PerceptionOpt = "sim",
    seg_ckpt: SegOpt = None,
    depth_model: DepthOpt = DEFAULT_DEPTH_MODEL,
    profile: ProfileOpt = "fast",
    backend: BackendOpt = "auto",
    overlap: OverlapOpt = True,
    perception_threads: ThreadsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line: success_rate, episodes, "
                                                         "mean_return, mean_length, latency_ms, per_episode.")] = False,
    trust_pickle: TrustOpt = False,
    spec: SpecOpt = None,
    perturb: PerturbOpt = None,
    rig: RigOpt = None,
    record_rgb: Annotated[bool, typer.Option("--record-rgb/--no-record-rgb", help="Keep the camera's RGB in "
                                                                                 "--record (the twin renders it "
                                                                                 "at ~0.5 s a frame on a CPU; "
                                                                                 "demos for --demos need only "
                                                                                 "the policy frames).")] = True,
    period: Annotated[Optional[float], typer.Option("--period", help="With --robot so101: the control period in "
                                                                     "seconds (default: measured at start, a whole "
                                                                     "tick's p95 x 1.2, as hilserl train does); "
                                                                     "the recording keeps the period that ran.")
                      ] = None,
) -> None:
    """Run a policy (or the scripted expert) for seeded episodes and report success, return, length, latency.

    Each tick: wrist camera -> observation (the twin's segmentation and depth through the same
    finish_frame the real perception uses) -> policy -> EE target, IK, joint limits and max step ->
    robot. Ctrl-C stops at once, keeps what was recorded, and turns torque off.
    """
    from so101_sim2real.control.infer import InferOptions, episode_line, render_summary, run_infer, run_notes
    from so101_sim2real.perception.real import RealModels
    from so101_sim2real.sim.perturb import load_perturbation

    # Options that would do nothing in the chosen mode are refused, not silently ignored.
    if perception != "real" and (idle := _given(ctx, "seg_ckpt", "depth_model", "profile", "backend", "overlap",
                                                  "perception_threads")):
        raise So101Error(f"{', '.join(idle)}: only with --perception real (the default, sim, renders the twin's own "
                         f"segmentation and depth)")
    if record is None and (idle := _given(ctx, "record_rgb")):
        raise So101Error(f"{idle[0]}: only with --record DIR")
    if (robot == "sim" or port == "emulator") and (idle := _given(ctx, "overlap")):
        raise So101Error(f"{idle[0]}: only for an arm on a serial port (the twin's camera renders in the loop's "
                         f"own thread, so it cannot run ahead)")
    if ckpt == "scripted" and (idle := _given(ctx, "trust_pickle")):
        raise So101Error("--trust-pickle: only for a --ckpt file (the scripted expert loads none)")
    geometry = _rig_geometry(rig)
    models = RealModels(str(seg_ckpt) if seg_ckpt else None, depth_model, profile, device, trust_pickle, backend,
                        overlap, perception_threads)
    opts = InferOptions(ckpt=ckpt, robot=robot, port=port, episodes=episodes, seed=seed, max_steps=max_steps,
                        record=record, record_rgb=record_rgb, video=video, realtime=realtime,
                        trust_pickle=trust_pickle, spec_path=spec,
                        overrides=overrides or [], device=device, perception=perception, models=models,
                        calibration=calibration, camera=camera,
                        wait_for_operator=(lambda text: input(text + " ")) if sys.stdin.isatty() else None,
                        perturbation=load_perturbation(perturb) if perturb else None,
                        rig=str(rig) if rig else None, period_s=period)

    def started(run_rig, pilot) -> None:
        eyes = "no rendering" if run_rig.perception is None else "wrist camera rendered, privileged seg + depth"
        if perception == "real":
            eyes = f"real perception, {profile} profile, on " + (f"camera {camera}" if camera else "the rendered RGB")
        where = "the sim twin" if run_rig.robot.name == "sim" else f"{run_rig.robot.name} on {port}"
        if opts.perturbation is not None:
            where = f"the {opts.perturbation.describe()}"
        typer.echo(f"running {episodes} episode(s) of {pilot.name} on {where} ({eyes})")
        undistorts = camera and rig and geometry.camera.D.any()
        typer.echo(f"camera: {geometry.describe()}" + ("; frames undistorted before perception" if undistorts else ""))
        notes, warnings = run_notes(run_rig)
        typer.echo("; ".join(notes))
        if overrides:
            typer.echo(f"spec overrides for this run (not what the policy was trained with): {', '.join(overrides)}")
        for w in warnings:
            typer.echo(f"warning: {w}", err=True)

    progress = _Progress(episodes, "episode")  # a video costs ~0.35 s a frame: the ETA matters

    def episode_done(e) -> None:
        progress.advance(episode_line(e, episodes))

    try:
        summary = run_infer(opts, on_episode=episode_done, on_start=started,
                            on_step=lambda step: progress.note(f"step {step}"))
    finally:
        progress.close()
    typer.echo(render_summary(summary))
    if record:
        typer.echo(f"recorded {len(summary.episodes)} episode(s) to {record}/")
    if video:
        typer.echo(f"video: {video}")
    if as_json:
        typer.echo(json.dumps(summary.to_dict()))
    if summary.interrupted:
        raise typer.Exit(code=130)


motors_app = typer.Typer(help="Find the arm's serial port and the servos on it.", no_args_is_help=True, **PLAIN)
app.add_typer(motors_app, name="motors")
PortOpt = Annotated[str, typer.Option("--port", help="Serial port of the arm, e.g. /dev/ttyACM0 (see "
                                                     "'so101 motors find-port').")]


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

    def ask(message: str) -> None:
        typer.prompt(message, default="", show_default=False)

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


calibrate_app = typer.Typer(help="Calibrate joints (LeRobot-compatible) and the mapping to the sim.",
                            no_args_is_help=True, **PLAIN)
app.add_typer(calibrate_app, name="calibrate")


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
    from so101_sim2real.hardware.bus import MotorBus
    from so101_sim2real.hardware.joint_calibration import new_lerobot_path
    from so101_sim2real.hardware.setup import calibrate

    if arm not in ("follower", "leader"):
        raise So101Error(f"--arm {arm}: use follower or leader")
    sign_map = {}
    for item in signs or []:
        joint, _, value = item.partition("=")
        if joint not in SERVO_IDS or value not in ("1", "-1"):
            raise So101Error(f"--sign {item!r}: use JOINT=1 or JOINT=-1 with a joint of {', '.join(SERVO_IDS)}")
        sign_map[joint] = int(value)
    def wait(message: str) -> None:
        typer.prompt(message, default="", show_default=False)

    def sweep(message: str):
        typer.echo(message)
        pressed = threading.Event()  # the arm is sampled while they move; Enter, read in a thread, ends it
        threading.Thread(target=lambda: (input(), pressed.set()), daemon=True).start()
        return pressed.is_set

    path = new_lerobot_path(arm, robot_id, root)
    if problem := writable_folder(path.parent):  # found out now, not after the person has calibrated
        raise So101Error(f"cannot write the calibration to {path.parent}: {problem}")
    if port == EMULATOR_PORT:
        from so101_sim2real.control.rehearsal import calibration_rehearsal

        if path.exists():  # a rehearsal must not replace a real arm's calibration
            raise So101Error(f"{path} exists; a rehearsal on the emulator writes a new file: choose another --id")
        with calibration_rehearsal(say=typer.echo) as (emulated, hand), MotorBus(emulated, SERVO_IDS) as bus:
            bus.handshake()
            cal = calibrate(bus, hand.wait, hand.sweep, sign_map)
    else:
        with MotorBus(port, SERVO_IDS) as bus:
            bus.handshake()
            cal = calibrate(bus, wait, sweep, sign_map)
    cal.save(path)
    typer.echo(f"wrote {path} (LeRobot format) and {path.stem}.so101_sim.json (sim mapping)"
               + (" of the emulated arm" if port == EMULATOR_PORT else ""))


@app.command()
def perceive(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="An image, a folder of images, a video, or a live camera: an index "
                                               "such as 0, or a device such as /dev/video2.")],
    seg_ckpt: SegOpt = None,
    depth_model: DepthOpt = DEFAULT_DEPTH_MODEL,
    profile: ProfileOpt = "fast",
    backend: BackendOpt = "auto",
    perception_threads: ThreadsOpt = None,
    check: Annotated[bool, typer.Option("--check", help="Time every installed backend against torch fp32 on "
                                                        "three frames of SOURCE, print its fidelity numbers, and "
                                                        "stop.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for one side-by-side picture per frame: "
                                                              "camera | segmentation | disparity | the policy's "
                                                              "channels.")] = Path("perceive_out"),
    frames: Annotated[Optional[int], typer.Option("--frames", help="Stop after this many frames (default: all of "
                                                                   "a file or folder, 100 of a camera).")] = None,
    device: Annotated[str, typer.Option("--device", help="Torch device for the networks.")] = "cpu",
    trust_pickle: TrustOpt = False,
    spec: Annotated[Optional[Path], typer.Option("--spec", help="Spec YAML (default: the packaged lift-cube "
                                                               "spec: crop, class table, normalisation).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of timings.")] = False,
    rig: Annotated[Optional[Path], typer.Option("--rig", help="A rig.yaml or camera.yaml: frames are undistorted "
                                                              "with its lens before perception.")] = None,
) -> None:
    """Show what the policy will see: run the real perception on images, a video or a camera.

    Writes one picture per frame to --out and prints per-stage timings (segmentation,
    depth, finish_frame) and the share of each class in the 84x84 observation.
    """
    from so101_sim2real.cameras import OpenCVCamera, check_frame_size, open_camera, undistorted
    from so101_sim2real.control.frames import check_backends, source_frames
    from so101_sim2real.control.preview import check_out, run_preview, summarise
    from so101_sim2real.geometry.rig_file import check_size
    from so101_sim2real.interfaces import Camera
    from so101_sim2real.perception.backends import check_threads
    from so101_sim2real.perception.examples import example_sources
    from so101_sim2real.perception.fidelity import CHECK_FRAMES
    from so101_sim2real.perception.real import RealModels, real_perception_factory
    from so101_sim2real.spec import default_spec, load_spec

    if check and (idle := _given(ctx, "out", "backend", "frames", "as_json")):
        raise So101Error(f"{', '.join(idle)}: not with --check (it times every installed backend on "
                         f"{CHECK_FRAMES} frames of SOURCE, prints one line each and writes nothing)")
    check_threads(perception_threads)
    full_spec = load_spec(spec) if spec else default_spec()
    obs_spec = full_spec.observation
    if frames is not None and frames < 1:
        raise So101Error("--frames must be at least 1")
    geometry = _rig_geometry(rig) if rig else None
    if geometry is not None and geometry.calibrated:
        check_size(geometry, obs_spec.source_size)
    models = RealModels(str(seg_ckpt) if seg_ckpt else None, depth_model, profile, device, trust_pickle, backend,
                        threads=perception_threads)

    check_out(out if not check else None)  # cheap, so before the camera and the networks

    def opened() -> Camera:
        camera = open_camera(source, obs_spec.source_size)
        return undistorted(camera, geometry.camera) if geometry is not None else camera

    camera = opened()
    try:  # a camera of the wrong size is refused before any network loads
        check_frame_size(camera, obs_spec.source_size, source)
    except BaseException:
        camera.close()
        raise
    limit = frames if frames is not None else (100 if isinstance(getattr(camera, "camera", camera), OpenCVCamera)
                                               else None)
    try:  # backends are checked on the source's own frames
        if check:
            if examples := example_sources(seg_ckpt, depth_model):
                typer.echo(f"warning: {' and '.join(examples)}: example weights (random): the timings are those "
                           f"of real weights of these sizes, the fidelity numbers say little about real ones",
                           err=True)
            own = lambda: source_frames(camera, CHECK_FRAMES, opened)  # noqa: E731 - read once the models load
            for line in check_backends(full_spec, models, own, f"frames of {source}"):
                typer.echo(line)
            camera.close()
            return
        make = real_perception_factory(obs_spec, models,
                                       frames=lambda: source_frames(camera, CHECK_FRAMES, opened))
    except BaseException:
        camera.close()
        raise
    perception = make(camera)
    typer.echo(f"perceiving {source} ({profile} profile, {perception.workers} worker(s), {device})")
    typer.echo(perception.backend_line)
    if geometry is not None:
        typer.echo(f"camera: {geometry.describe()}; " + ("frames undistorted before perception"
                                                         if geometry.camera.D.any() else "no lens distortion"))
    if perception.example_models:
        typer.echo(f"warning: {' and '.join(perception.example_models)}: example weights (random): the pictures "
                   f"show the workflow, not a segmentation or a depth", err=True)

    known = getattr(camera, "frame_count", None)
    progress = _Progress(min(filter(None, (limit, known)), default=None), "frame")

    def show(r) -> None:
        t = r.timing
        shares = ", ".join(f"{k} {v:.1%}" for k, v in r.class_fractions.items() if k != "background")
        progress.advance(f"frame {r.index}: seg {t.seg_ms:.1f} ms, depth {t.depth_ms:.1f} ms, total "
                         f"{t.total_ms:.1f} ms; {shares}")

    try:
        results = run_preview(perception, camera, out, limit, on_frame=show)
    finally:
        progress.close()
        perception.close()
    summary = summarise(results)
    typer.echo(f"{len(results)} frame(s): end to end p50 {summary['total_ms']['p50']:.1f} ms "
               f"({1e3 / summary['total_ms']['p50']:.1f} Hz), p95 {summary['total_ms']['p95']:.1f} ms"
               + (f"; pictures in {out}/" if out else ""))
    if as_json:
        typer.echo(json.dumps({"frames": len(results), "profile": profile, **summary}))


models_app = typer.Typer(help="The model cache: download once where there is internet, run offline after.",
                         no_args_is_help=True, **PLAIN)
app.add_typer(models_app, name="models")
CacheOpt = Annotated[Optional[Path], typer.Option("--cache-dir", help="Model cache (default: the Hugging Face "
                                                                      "cache, HF_HUB_CACHE or HF_HOME).")]


@models_app.command("download")
def models_download(
    name: Annotated[str, typer.Argument(help="A hub repo id.")] = DEFAULT_DEPTH_MODEL,
    cache_dir: CacheOpt = None,
) -> None:
    """Fetch a model into the cache (default: Depth Anything V2 Small, the disparity model)."""
    from so101_sim2real.perception.hub import download

    typer.echo(f"downloading {name} ...")
    typer.echo(f"cached {name} at {download(name, cache_dir)}")


@models_app.command("add")
def models_add(
    folder: Annotated[Path, typer.Argument(help="A model folder (config.json + weights), e.g. copied from a "
                                                "machine with internet.")],
    name: Annotated[str, typer.Option("--name", help="The hub id to file it under.")] = DEFAULT_DEPTH_MODEL,
    cache_dir: CacheOpt = None,
) -> None:
    """Put a model folder into the cache under a hub id, for machines without internet."""
    from so101_sim2real.perception.hub import add_folder

    typer.echo(f"cached {name} at {add_folder(folder, name, cache_dir)}")


@models_app.command("example")
def models_example(
    out: Annotated[Path, typer.Option("--out", help="Folder to write.")] = Path("example-models"),
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Write example perception weights (random, clearly marked) to try perceive and infer --perception real.

    The real architectures (EfficientViT-B0 segmentation, Depth Anything V2 Small)
    with random weights, loaded exactly as your own are; the observation they give is
    noise. They are never filed under a hub id, and a real arm refuses them.
    """
    from so101_sim2real.perception.examples import write_example_models

    written = write_example_models(out, force=force)
    typer.echo(f"wrote example perception weights (random) to {written.folder}; try:")
    typer.echo(f"  so101 perceive IMAGE --seg-ckpt {written.seg_ckpt} --depth-model {written.depth_model}")
    typer.echo(f"  so101 infer --ckpt scripted -n 1 --perception real --seg-ckpt {written.seg_ckpt} "
               f"--depth-model {written.depth_model}")


@models_app.command("list")
def models_list(
    cache_dir: CacheOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list.")] = False,
) -> None:
    """Show the models in the cache, and whether the default depth model is among them."""
    from so101_sim2real.perception.hub import cache_dir as resolve_cache
    from so101_sim2real.perception.hub import cached_models

    models = cached_models(cache_dir)
    if as_json:
        typer.echo(json.dumps([{"repo_id": m.repo_id, "size_bytes": m.size_bytes, "files": m.files,
                                "path": str(m.path), "role": m.role} for m in models]))
        return
    typer.echo(f"cache: {resolve_cache(cache_dir)}")
    for m in models:
        typer.echo(f"  {m.repo_id:<48}{m.size_bytes / 1e6:>9.1f} MB {m.files:>4} files  {m.role}")
    if not any(m.repo_id == DEFAULT_DEPTH_MODEL for m in models):
        typer.echo(f"the default depth model is not cached: so101 models download {DEFAULT_DEPTH_MODEL}")


from so101_sim2real.cli.compare_sim import register as register_compare_sim  # noqa: E402
from so101_sim2real.cli.emulate import HAND_HELP  # noqa: E402 - hilserl train --hand reads the same scripts
from so101_sim2real.cli.emulate import register as register_emulate  # noqa: E402

register_emulate(app)
register_compare_sim(app)


from so101_sim2real.cli.calibrate_camera import register as register_camera_calibration  # noqa: E402
from so101_sim2real.cli.calibrate_rig import register as register_rig_calibration  # noqa: E402
from so101_sim2real.cli.reward import reward_app  # noqa: E402 - registered with the other groups

app.add_typer(reward_app, name="reward")
register_camera_calibration(calibrate_app)
register_rig_calibration(calibrate_app)

hilserl_app = typer.Typer(help="HIL-SERL fine-tuning: actor and learner in one process, one replay buffer.",
                          no_args_is_help=True, **PLAIN)
app.add_typer(hilserl_app, name="hilserl")


@hilserl_app.command("train")
def hilserl_train(
    out: Annotated[Path, typer.Option("--out", help="The run folder: config, counters, policy, episodes.")],
    ckpt: Annotated[Optional[str], typer.Option("--ckpt", help="The starting DrQ-v2 snapshot (RoboBase or a "
                                                               "'so101 convert' folder) with its critics. Not "
                                                               "with --resume.")] = None,
    episodes: Annotated[int, typer.Option("--episodes", "-n", help="Episodes to run in this session.")] = 20,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Cut episodes shorter than the spec's "
                                                                         "limit (the cut is terminal, like the "
                                                                         "limit).")] = None,
    intervene: Annotated[Optional[str], typer.Option("--intervene", help="scripted (default): the scripted expert "
                                                                         "takes over when the policy stalls (the "
                                                                         "twin's stand-in for a person); leader: "
                                                                         "a person takes over by grabbing the "
                                                                         "leader arm (--leader-port), or space; "
                                                                         "none.")
                         ] = None,
    leader_port: Annotated[Optional[str], typer.Option("--leader-port", help="The leader arm's serial port for "
                                                                             "--intervene leader, or 'emulator': an "
                                                                             "emulated leader that a scripted hand "
                                                                             "grabs and guides.")] = None,
    leader_calibration: Annotated[Optional[str], typer.Option("--leader-calibration", help="The leader's "
                                                                                           "calibration: its id "
                                                                                           "('so101 calibrate "
                                                                                           "joints --arm leader'), "
                                                                                           "a .json, or 'twin' for "
                                                                                           "'so101 emulate "
                                                                                           "--leader'.")] = None,
    reward: Annotated[Optional[str], typer.Option("--reward", help="success (default): 1 on the successful tick; "
                                                                   "dense: the task's v19 reward; classifier: "
                                                                   "success as the reward classifier sees it "
                                                                   "(--classifier).")] = None,
    classifier: Annotated[Optional[Path], typer.Option("--classifier", help="For --reward classifier: the folder "
                                                                            "'so101 reward train' wrote.")] = None,
    demos: Annotated[Optional[list[Path]], typer.Option("--demos", help="Recordings of demonstrations for the "
                                                                        "demo store (repeatable), e.g. from 'so101 "
                                                                        "infer --ckpt scripted --record DIR'.")
                     ] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="A YAML file of training settings "
                                                                    "(learner.*, utd, warmup_steps, ...).")] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="Override a setting, e.g. --set "
                                                                    "learner.actor_lr=1e-5 (repeatable).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out: its buffer, weights and "
                                                          "counters; changed settings are used and listed.")
                      ] = False,
    device: Annotated[Optional[str], typer.Option("--device", help="Torch device of the learner (default "
                                                                   "cpu).")] = None,
    realtime: Annotated[bool, typer.Option("--realtime", help="Hold the twin to the control period, as a real "
                                                              "arm would be.")] = False,
    perturb: PerturbOpt = None,
    robot: RobotOpt = "sim",
    port: FollowerPortOpt = None,
    calibration: CalibrationOpt = None,
    camera: CameraOpt = None,
    perception: PerceptionOpt = "sim",
    seg_ckpt: SegOpt = None,
    depth_model: DepthOpt = DEFAULT_DEPTH_MODEL,
    profile: ProfileOpt = "fast",
    backend: BackendOpt = "auto",
    overlap: OverlapOpt = True,
    perception_threads: ThreadsOpt = None,
    rig: RigOpt = None,
    period: Annotated[Optional[float], typer.Option("--period", help="Control period on --robot so101, in "
                                                                     "seconds (default: measured at start, what "
                                                                     "this machine sustains for a whole tick).")
                      ] = None,
    view: Annotated[bool, typer.Option("--view", help="A window with the camera and the observation, live; "
                                                      "its keys work like the terminal's (space, s, f, r). "
                                                      "Needs OpenCV with windows (pip install "
                                                      "opencv-python).")] = False,
    hand: Annotated[Optional[Path], typer.Option("--hand", help="With --leader-port emulator: a hand script "
                                                                "instead of the grab at step 10 (as 'so101 "
                                                                "emulate --hand'; at_s and stall_s count the "
                                                                "control ticks times the period). "
                                                                + HAND_HELP)] = None,
) -> None:
    """Fine-tune a policy with HIL-SERL: on the twin, the emulated arm, or an arm on a serial port.

    The actor is the usual control loop; a learner thread runs DrQ-v2 updates on the shared
    replay buffer and hands the actor the new encoder and actor together. Each finished
    episode is saved at once, so a crash or kill loses at most the one in progress.
    """
    from so101_sim2real.hilserl.options import RunOptions, apply_sets, config_from_dict
    from so101_sim2real.hilserl.run import RunFolder, train
    from so101_sim2real.hilserl.trainer import TrainConfig
    from so101_sim2real.sim.perturb import load_perturbation
    from so101_sim2real.spec import yaml_problem

    if resume and ckpt:
        raise So101Error("--resume continues the run's own policy; drop --ckpt")
    where = [name for name, value in (("--robot", robot != "sim"), ("--port", port), ("--calibration", calibration),
                                      ("--camera", camera), ("--perception", perception != "sim"),
                                      ("--seg-ckpt", seg_ckpt), ("--depth-model", depth_model != DEFAULT_DEPTH_MODEL),
                                      ("--profile", profile != "fast"), ("--backend", backend != "auto"),
                                      ("--no-overlap", not overlap),
                                      ("--perception-threads", perception_threads is not None),
                                      ("--period", period), ("--rig", rig))
             if value]
    given = where + [name for name, value in (("--intervene", intervene), ("--leader-port", leader_port),
                                      ("--leader-calibration", leader_calibration),
                                      ("--reward", reward), ("--classifier", classifier), ("--device", device),
                                      ("--demos", demos), ("--perturb", perturb), ("--hand", hand)) if value]
    if resume and given:
        raise So101Error(f"{', '.join(given)}: a resumed run keeps its own (see {out}/run.yaml; edit it to "
                         f"change them)")
    if not resume and not ckpt:
        raise So101Error("a new run needs --ckpt (or --resume to continue the run in --out)")
    cfg = None
    if config is not None:
        try:
            data = parse_yaml(config.read_text()) or {}
        except OSError as exc:
            raise So101Error(f"--config {config}: cannot read it ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise So101Error(f"--config {config}: {yaml_problem(exc)}") from None
        cfg = config_from_dict(data, str(config))
    if sets:
        base = cfg or (RunFolder.open(out).cfg if resume else TrainConfig())
        cfg = apply_sets(base, sets)
    options = None if resume else RunOptions(ckpt=ckpt, intervene=intervene or "scripted",
                                             leader_port=leader_port, leader_calibration=leader_calibration,
                                             classifier=str(classifier) if classifier else None,
                                             robot=robot, port=port, calibration=calibration, camera=camera,
                                             perception=perception, seg_ckpt=str(seg_ckpt) if seg_ckpt else None,
                                             depth_model=depth_model, profile=profile, backend=backend,
                                             overlap=overlap, perception_threads=perception_threads,
                                             period_s=period,
                                             rig=str(rig) if rig else None,
                                             reward=reward or "success", device=device or "cpu",
                                             demos=tuple(str(d) for d in demos or ()),
                                             perturbation=load_perturbation(perturb) if perturb else None,
                                             hand=_hand_grabs(hand))

    from so101_sim2real.hilserl.live import LiveMonitor, render

    shown: dict = {}  # the terminal's live table and its monitor

    def started(trainer) -> None:
        if trainer.period_note:
            typer.echo(trainer.period_note)
        for note in trainer.notes:  # as infer says them: the camera, the twin, the backend, the kinematics
            typer.echo(note)
        for warning in trainer.warnings:
            typer.echo(f"warning: {warning}", err=True)
        shown["monitor"] = LiveMonitor(trainer, trainer.pilot.episode + 1)
        if sys.stdout.isatty():  # a live table for a person; plain lines for logs and pipes
            from rich.live import Live

            shown["live"] = Live(get_renderable=lambda: render(shown["monitor"].stats(), f"HIL-SERL: {out}"),
                                refresh_per_second=2, transient=False)
            shown["live"].start()

    def episode_line(result, trainer) -> None:
        shown["monitor"].episode(result)
        takeovers = getattr(trainer.pilot.intervener, "takeovers", None)
        line = (f"episode {trainer.pilot.episode + 1}  seed {result.seed}: "
                f"{'success' if result.success else 'no success'} after {result.steps} steps; "
                f"interventions {trainer.sink.interventions}"
                + ("" if takeovers is None else f" ({takeovers} leader takeovers)")
                + f", env steps {trainer.sink.env_steps}, updates {trainer.learner.updates} (UTD {trainer.utd:.2f})"
                + (f"; {trainer.rate.overruns} ticks over the period so far" if trainer.rate.overruns else ""))
        if "live" in shown:
            shown["live"].console.print(line)
        else:
            typer.echo(line)

    window = None
    if view:  # refused now, not after the models have loaded
        from so101_sim2real.control.window import LiveWindow, check_display

        check_display()
        window = LiveWindow()
    keys = None
    if (intervene == "leader" or (resume and RunFolder.open(out).options.intervene == "leader")) \
            and sys.stdin.isatty():
        from so101_sim2real.control.keys import KEYS_HELP, TerminalKeys

        keys = TerminalKeys()
        typer.echo(f"keys: {KEYS_HELP}")
    def say(text: str) -> None:  # a pause and its end, above the live table when there is one
        if "live" in shown:
            shown["live"].console.print(text)
        else:
            typer.echo(text, err=True)

    try:
        report = train(out, episodes, options, cfg, resume, realtime, on_episode=episode_line, max_steps=max_steps,
                       on_start=started, keys=keys,
                       wait_for_operator=(lambda text: input(text + " ")) if sys.stdin.isatty() else None, say=say,
                       window=window)
    finally:
        if "live" in shown:
            shown["live"].stop()
        if keys is not None:
            keys.close()  # the terminal as it was
        if window is not None:
            window.close()
    for change in report.changed:
        typer.echo(f"setting changed on resume: {change}")
    rate = "n/a" if report.success_rate is None else f"{report.success_rate:.0%}"
    typer.echo(f"{len(report.episodes)} episode(s): success {rate}, interventions {report.intervention_rate:.0%} "
               f"of steps, UTD {report.utd:.2f}; run: {out} (policy: {out}/policy)")
    if report.discarded or report.pauses:
        waited = sum(p.waited_s for p in report.pauses)
        typer.echo(f"re-recorded {report.discarded} episode(s); paused {len(report.pauses)} time(s) for device "
                   f"faults ({waited:.0f} s in all); what those episodes did is not in the buffer")
    if report.interrupted:
        raise typer.Exit(code=130)


def _hand_grabs(hand: Path | None) -> list | None:
    """--hand's grabs as the run keeps them (in run.yaml), checked now."""
    if hand is None:
        return None
    from so101_sim2real.leader.hand_script import load_hand_script

    return [grab.to_dict() for grab in load_hand_script(hand, twin=True)]


@hilserl_app.command("plot")
def hilserl_plot(
    run: Annotated[Path, typer.Argument(help="A run folder.")],
    out: Annotated[Path, typer.Option("--out", help="The PNG to write.")] = Path("curve.png"),
    window: Annotated[int, typer.Option("--window", help="Episodes each point averages over.")] = 10,
) -> None:
    """Draw success rate and intervention rate against episodes."""
    from so101_sim2real.hilserl.curves import plot

    if window < 1:
        raise So101Error("--window must be at least 1")
    typer.echo(f"wrote {plot(run, out, window)}")


@hilserl_app.command("status")
def hilserl_status(
    run: Annotated[Path, typer.Argument(help="A run folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Where a run stands (running or not): counters, UTD, recent success, the policy."""
    from so101_sim2real.hilserl.curves import status

    info = status(run)
    if as_json:
        typer.echo(json.dumps(info))
        return
    c = info["counters"]
    rate = "n/a" if info["success_rate_last_20"] is None else f"{info['success_rate_last_20']:.0%}"
    typer.echo(f"{run}: {c['episodes']} episodes, {c['env_steps']} env steps, {c['updates']} updates "
               f"(UTD {info['utd']:.2f}); success over the last 20: {rate}; policy: {info['policy']}")
    if info["intervention_rate_last_20"] is not None:
        takeovers = "" if info["takeovers"] is None else f"; leader takeovers: {info['takeovers']}"
        typer.echo(f"interventions over the last 20: {info['intervention_rate_last_20']:.0%} of steps{takeovers}")
    last = info["last"]
    if last and last.get("critic_loss") is not None:
        actor = "-" if last["actor_loss"] is None else f"{last['actor_loss']:.4f}"
        typer.echo(f"last episode: critic loss {last['critic_loss']:.4f}, actor loss {actor}, Q mean "
                   f"{last['q_mean']:.3f}, {last['updates_per_s']:.2f} updates/s, buffer {last['buffer']} "
                   f"({last['buffer_mb']:.1f} MB)")


RAISE_ENV = "SO101_RAISE"  # set (the test suite does): unexpected exceptions propagate with their traceback


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors are one line on stderr and exit code 2; anything unexpected
    is one line too, exit code 3, with the traceback saved to a file for the bug report."""
    from typer import _click as click  # typer's bundled click: its exceptions, not the click package's

    progress = _ProgressLines()
    try:
        code = typer.main.get_command(app).main(args=argv, prog_name="so101", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # `so101`, `so101 motors`: the help is the answer
        typer.echo(exc.format_message())
        sys.exit(0)
    except click.exceptions.UsageError as exc:  # a mistyped command line: one line, like every other error
        where = exc.ctx.command_path if exc.ctx else "so101"
        typer.echo(f"error: {exc.format_message()} (see '{where} --help')", err=True)
        sys.exit(2)
    except typer.Abort:  # Ctrl-C (click turns KeyboardInterrupt into Abort)
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except So101Error as exc:
        typer.echo(f"error: {exc.cli_text()}", err=True)  # the library's @options as flags
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the boundary: no wall of stack for a user
        if os.environ.get(RAISE_ENV):
            raise
        path = _save_traceback()
        typer.echo(f"error: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                   f"(a bug: please report it with the traceback saved in {path})", err=True)
        sys.exit(3)
    finally:
        progress.close()
    if code:  # typer.Exit(code) from a command
        sys.exit(code)


class _ProgressLines(logging.Handler):
    """The library's INFO lines (what a long first load is doing) on stderr while a command runs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.logger = logging.getLogger("so101_sim2real")
        self.level_before = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(record.getMessage(), err=True)  # sys.stderr as it is now (a test's capture, a pipe)

    def close(self) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level_before)
        super().close()


def _save_traceback() -> str:
    import tempfile
    import time
    import traceback

    path = Path(tempfile.gettempdir()) / f"so101-traceback-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    try:
        path.write_text(f"so101 {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    except OSError:
        return "(nowhere: the temporary folder is not writable)"
    return str(path)
