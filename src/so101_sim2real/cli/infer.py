"""``so101 infer``: a policy (or the scripted expert) for seeded episodes, on the twin or an arm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from so101_sim2real.cli.options import (
    BackendOpt,
    CalibrationOpt,
    CameraOpt,
    DepthOpt,
    FollowerPortOpt,
    OverlapOpt,
    PerceptionOpt,
    PerturbOpt,
    ProfileOpt,
    RigOpt,
    RobotOpt,
    SegOpt,
    SpecOpt,
    StandinOpt,
    ThreadsOpt,
    TrustOpt,
    _operator_prompt,
    run_description,
)
from so101_sim2real.cli.progress import _Progress
from so101_sim2real.perception import DEFAULT_DEPTH_MODEL

if TYPE_CHECKING:
    from so101_sim2real.control.env import Env
    from so101_sim2real.control.pilots import Pilot
    from so101_sim2real.control.runner import EpisodeResult


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
    set_spec: Annotated[Optional[list[str]], typer.Option("--set-spec", help="Override a spec field for this run, "
                                                                             "e.g. --set-spec action.ik.pose_from="
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
    overlap: OverlapOpt = None,
    perception_threads: ThreadsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line: success_rate, episodes, "
                                                         "mean_return, mean_length, latency_ms, tick_ms (the "
                                                         "whole tick and its waits), per_episode.")] = False,
    trust_pickle: TrustOpt = False,
    spec: SpecOpt = None,
    perturb: PerturbOpt = None,
    standin: StandinOpt = None,
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
    from so101_sim2real.control.infer import InferOptions, episode_line, render_summary, run_infer, start_lines

    opts = InferOptions(run_description(ctx), episodes=episodes, seed=seed, max_steps=max_steps, record=record,
                        record_rgb=record_rgb, video=video, realtime=realtime,
                        wait_for_operator=_operator_prompt())

    def started(env: Env, pilot: Pilot) -> None:
        lines, warnings = start_lines(env, pilot, opts)
        for line in lines:
            typer.echo(line)
        for w in warnings:
            typer.echo(f"warning: {w}", err=True)

    progress = _Progress(episodes, "episode")  # a video costs ~0.35 s a frame: the ETA matters

    def episode_done(e: EpisodeResult) -> None:
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
