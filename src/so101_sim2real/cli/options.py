"""The options several commands share (one declaration, one help text), and small helpers of them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

if TYPE_CHECKING:
    from so101_sim2real.control.description import RunDescription
    from so101_sim2real.geometry.rig_file import RigGeometry

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
StandinOpt = Annotated[Optional[Path], typer.Option("--standin", help="Run in the stand-in world this YAML "
                                                                     "describes: the twin with a real arm's gaps "
                                                                     "named and measured (light, camera, lens, "
                                                                     "servos, latency, cube; see "
                                                                     "configs/standin.yaml).")]
SegOpt = Annotated[Optional[Path], typer.Option("--seg-ckpt", help="Your EfficientViT-B0 segmentation checkpoint "
                                                                  "(PyTorch Lightning .ckpt).")]
DepthOpt = Annotated[str, typer.Option("--depth-model", help="Depth Anything V2: a folder (save_pretrained layout) "
                                                             "or a hub id already in the cache (so101 models "
                                                             "download).")]
ProfileOpt = Annotated[str, typer.Option("--profile", help="fast: seg on the crop at 192, depth at 140 on the "
                                                           "whole frame (the disparity is normalised over it, as "
                                                           "trained); exact: as trained, seg at the checkpoint's "
                                                           "size, depth at 518. --set-spec observation.disparity."
                                                           "normalise_region=crop lets depth crop first too: "
                                                           "faster, but not the training observation.")]
BackendOpt = Annotated[str, typer.Option("--backend", help="Where the perception networks run: auto (the fastest "
                                                           "that keeps torch's frames: seg agreement and "
                                                           "disparity rank correlation >= 0.995 on twin renders), "
                                                           "torch, openvino (openvino:f32, openvino:bf16) or "
                                                           "onnxruntime.")]
OverlapOpt = Annotated[Optional[bool], typer.Option("--overlap/--no-overlap", help="On an arm on a serial port: "
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

PortOpt = Annotated[str, typer.Option("--port", help="Serial port of the arm, e.g. /dev/ttyACM0 (see "
                                                     "'so101 motors find-port').")]


def _given(ctx: typer.Context, *names: str) -> list[str]:
    """The flags among ``names`` (parameter names) that the user typed, as they typed them."""
    params = {p.name: p for p in ctx.command.params}
    return ["/".join(params[n].opts + params[n].secondary_opts) for n in names
            if (source := ctx.get_parameter_source(n)) is not None and source.name != "DEFAULT"]


def _operator_prompt() -> Callable[[str], None] | None:
    """``wait_for_operator`` of a command that may ask the person at the arm: the question on the
    terminal, answered with Enter; None when stdin is not a terminal (a log, a pipe, a test)."""
    def ask(text: str) -> None:
        input(text + " ")

    return ask if sys.stdin.isatty() else None


def _rig_geometry(rig: Path | None) -> RigGeometry:
    """``--rig FILE`` read now (a typo fails before anything loads), or the sim's uncalibrated guess."""
    from so101_sim2real.control.env import load_rig_file
    from so101_sim2real.geometry.rig_file import default_rig

    return load_rig_file(rig) or default_rig()


def run_description(ctx: typer.Context, **fixed: Any) -> RunDescription:
    """The run description from the options the command declares among the shared ones (named as
    in :data:`~so101_sim2real.control.description.OPTIONS`), and ``fixed`` ones the command
    implies (``perceive``: perception real); checked where it is used."""
    from so101_sim2real.control.description import OPTIONS, describe
    from so101_sim2real.sim.perturb import load_perturbation

    given = {name: value for name, value in ctx.params.items() if name in OPTIONS}
    if given.get("perturb") is not None:
        given["perturb"] = load_perturbation(given["perturb"])
    if given.get("standin") is not None:
        from so101_sim2real.sim.standin import load_standin

        given["standin"] = load_standin(given["standin"])
    return describe(**given, **fixed)
