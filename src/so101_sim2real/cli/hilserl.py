"""``so101 hilserl``: fine-tune a policy with HIL-SERL (train), draw its curves (plot), say where a run
stands (status)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from so101_sim2real.cli import PLAIN
from so101_sim2real.cli.emulate import HAND_HELP  # hilserl train --hand reads the same scripts
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
    StandinOpt,
    ThreadsOpt,
    _given,
    _operator_prompt,
    run_description,
)
from so101_sim2real.errors import So101Error
from so101_sim2real.perception import DEFAULT_DEPTH_MODEL

hilserl_app = typer.Typer(help="HIL-SERL fine-tuning: actor and learner in one process, one replay buffer.",
                          no_args_is_help=True, **PLAIN)


@hilserl_app.command("train")
def hilserl_train(
    ctx: typer.Context,
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
    demos: Annotated[Optional[list[Path]], typer.Option("--demos", help="Demonstrations for the demo store "
                                                                        "(repeatable): a recording ('so101 infer "
                                                                        "--ckpt scripted --record DIR') or a "
                                                                        "LeRobotDataset v3 folder with the policy's "
                                                                        "features ('so101 export lerobot').")
                     ] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="A YAML file of training settings "
                                                                    "(learner.*, utd, warmup_steps, ...).")] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="Override a setting, e.g. --set "
                                                                    "learner.actor_lr=1e-5 (repeatable). "
                                                                    "learner.batch_size, utd and min_utd are "
                                                                    "chosen at start for this machine unless "
                                                                    "set ('auto': chosen).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out: its buffer, weights and "
                                                          "counters; changed settings are used and listed.")
                      ] = False,
    device: Annotated[str, typer.Option("--device", help="Torch device of the learner, the policy and the "
                                                         "perception networks.")] = "cpu",
    realtime: Annotated[bool, typer.Option("--realtime", help="Hold the twin to the control period, as a real "
                                                              "arm would be.")] = False,
    perturb: PerturbOpt = None,
    standin: StandinOpt = None,
    robot: RobotOpt = "sim",
    port: FollowerPortOpt = None,
    calibration: CalibrationOpt = None,
    camera: CameraOpt = None,
    perception: PerceptionOpt = "sim",
    seg_ckpt: SegOpt = None,
    depth_model: DepthOpt = DEFAULT_DEPTH_MODEL,
    profile: ProfileOpt = "fast",
    backend: BackendOpt = "auto",
    overlap: OverlapOpt = None,
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
    from so101_sim2real.control.description import OPTIONS
    from so101_sim2real.hilserl.options import new_run_options, settings
    from so101_sim2real.hilserl.run import RunFolder, train
    from so101_sim2real.hilserl.trainer import TrainConfig

    where = run_description(ctx)
    session = ("intervene", "leader_port", "leader_calibration", "reward", "classifier", "demos", "hand")
    typed = _given(ctx, *(name for name in ctx.params if name in OPTIONS and name != "ckpt"), *session)
    options = new_run_options(where, resume, out, typed, intervene=intervene, leader_port=leader_port,
                              leader_calibration=leader_calibration, reward=reward, classifier=classifier,
                              demos=demos, hand=hand)
    cfg = settings(config, sets or [], lambda: RunFolder.open(out).cfg if resume else TrainConfig())

    from so101_sim2real.hilserl.live import TerminalView, report_lines

    window = None
    if view:  # refused now, not after the models have loaded
        from so101_sim2real.control.window import LiveWindow, check_display

        check_display()
        window = LiveWindow()
    keys = None
    if (options or RunFolder.open(out).options).intervene == "leader" and sys.stdin.isatty():
        from so101_sim2real.control.keys import KEYS_HELP, TerminalKeys

        keys = TerminalKeys()
        typer.echo(f"keys: {KEYS_HELP}")
    terminal = TerminalView(f"HIL-SERL: {out}", lambda text, err: typer.echo(text, err=err), sys.stdout.isatty())
    try:
        report = train(out, episodes, options, cfg, resume, realtime, on_episode=terminal.episode,
                       max_steps=max_steps, on_start=terminal.started, keys=keys,
                       wait_for_operator=_operator_prompt(), say=terminal.say, window=window)
    finally:
        terminal.close()
        if keys is not None:
            keys.close()  # the terminal as it was
        if window is not None:
            window.close()
    for line in report_lines(report, out):
        typer.echo(line)
    if report.interrupted:
        raise typer.Exit(code=130)


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
    """Where a run stands (running or not): counters, UTD, recent success, the policy, the learner's pace."""
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
    if (judge := info["classifier"]) is not None:
        typer.echo(f"the reward classifier against the task's rule: {judge['false_successes']} false success(es), "
                   f"{judge['missed']} missed, in {judge['episodes']} episodes")
    last = info["last"]
    if last and last.get("critic_loss") is not None:
        actor = "-" if last["actor_loss"] is None else f"{last['actor_loss']:.4f}"
        typer.echo(f"last episode: critic loss {last['critic_loss']:.4f}, actor loss {actor}, Q mean "
                   f"{last['q_mean']:.3f}, {last['updates_per_s']:.2f} updates/s, buffer {last['buffer']} "
                   f"({last['buffer_mb']:.1f} MB)")
    if info["pace"] is not None:
        from so101_sim2real.hilserl.pace import PaceChoice

        for line in PaceChoice.from_dict(info["pace"]).lines():
            typer.echo(line)
