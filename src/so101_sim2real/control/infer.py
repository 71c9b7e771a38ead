"""``so101 infer``: evaluate a pilot over seeded episodes in an env.

Builds the pilot (a checkpoint or the scripted expert), the env (the sim twin; the
real arm on its Feetech bus), optional recorder and video, runs the
episodes through the :class:`Runner` and renders the results.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from so101_sim2real.control.description import SCRIPTED, RunDescription, check_description, check_trained_period
from so101_sim2real.control.env import Env, build_env
from so101_sim2real.control.pilots import Pilot, PolicyPilot, ScriptedPilot
from so101_sim2real.control.recording import Recorder
from so101_sim2real.control.runner import OUTCOMES, EpisodeResult, Runner, RunSummary, wants_frames
from so101_sim2real.control.video import VideoWriter
from so101_sim2real.errors import So101Error
from so101_sim2real.policy.checkpoint import load_checkpoint
from so101_sim2real.policy.runtime import Policy
from so101_sim2real.records import parse_sets
from so101_sim2real.spec import Spec, default_spec, load_spec


@dataclass
class InferOptions:
    """One ``infer`` run: where it happens (:class:`RunDescription`) and what it does there."""

    where: RunDescription = field(default_factory=RunDescription)
    episodes: int = 20
    seed: int = 0
    max_steps: int | None = None
    record: Path | None = None
    record_rgb: bool = True  # camera RGB in the recording (the twin renders it at ~0.5 s a frame on a CPU)
    video: Path | None = None
    realtime: bool = False
    wait_for_operator: Callable[[str], None] | None = None  # a real port: called before each episode


def apply_overrides(spec: Spec, overrides: Sequence[str]) -> Spec:
    """``["observation.disparity.normalise_region=full_frame", ...]`` applied in order."""
    for key, value in parse_sets(overrides, "@set_spec", "observation.disparity.normalise_region=crop"):
        spec = spec.replace(key, value, source=f"@set_spec {key}")
    return spec


def _pilot_and_spec(d: RunDescription) -> tuple[Policy | None, Spec, Spec]:
    """The pilot, the spec of this run, and the spec as trained (before ``--set-spec``)."""
    policy = d.policy
    if d.scripted:
        spec = load_spec(policy.spec) if policy.spec else default_spec()
        return None, apply_overrides(spec, policy.spec_sets), spec
    assert policy.ckpt is not None  # build refused a run without @ckpt
    ckpt = load_checkpoint(policy.ckpt, trust_pickle=policy.trust_pickle, spec_path=policy.spec)
    trained = ckpt.spec
    ckpt = dataclasses.replace(ckpt, spec=apply_overrides(ckpt.spec, policy.spec_sets))
    return Policy(ckpt, device=policy.device), ckpt.spec, trained


def build(opts: InferOptions) -> tuple[Env, Pilot, Recorder | None, VideoWriter | None]:
    """Everything a run needs, validated before anything moves."""
    d = opts.where
    if d.policy.ckpt is None:
        raise So101Error("@ckpt: a checkpoint, or 'scripted' for the built-in expert")
    check_description(d)  # before any checkpoint or model loads
    if opts.episodes < 1:
        raise So101Error("@episodes must be at least 1")
    if opts.seed < 0:
        raise So101Error(f"@seed {opts.seed}: seeds are whole numbers from 0")
    if opts.max_steps is not None and opts.max_steps < 1:
        raise So101Error("@max_steps must be at least 1")
    if opts.record is None and not opts.record_rgb:
        raise So101Error("@no_record_rgb: only with @record DIR")
    policy, spec, trained = _pilot_and_spec(d)
    check_trained_period(d, spec.control.period_s)
    if not spec.is_seg_depth:
        raise So101Error(f"this policy sees {'+'.join(spec.observation.channels)} frames; the twin (and the real "
                         f"perception) produce seg + disparity, the observation of the user's training setup")
    period = (d.world and d.world.period_s) or (d.standin and d.standin.period_s) or spec.control.period_s
    name = Path(d.policy.ckpt).name if policy else SCRIPTED
    needs_camera = wants_frames(policy is not None, opts.video is not None, opts.record is not None,
                                d.perception.kind == "real")
    video = VideoWriter(opts.video, fps=1.0 / period) if opts.video else None  # bad paths fail before the arm
    recorder = Recorder(opts.record, spec, d.robot.kind, name, period, with_rgb=opts.record_rgb,
                        description=d.to_dict()) if opts.record else None
    env = build_env(spec, d, with_camera=needs_camera, wait_for_operator=opts.wait_for_operator)
    env.trained_spec = trained
    pilot: Pilot = PolicyPilot(policy, name=name) if policy else ScriptedPilot(env.twin)
    return env, pilot, recorder, video


def hold_period(env: Env, pilot: Pilot, period_s: float | None) -> str:
    """An arm runs at a period its machine sustains: ``period_s`` if given, else measured (a whole
    tick's p95 x 1.2, never shorter than the spec's). Sets it on the env; says what and why."""
    from so101_sim2real.control.runner import sustainable_period

    trained = env.spec.control.period_s
    if period_s is not None:
        env.period_s = period_s
        return f"control period {period_s * 1e3:.0f} ms, as asked; the policy trained at {trained * 1e3:.0f} ms"
    env.period_s, p95 = sustainable_period(env, pilot)
    return (f"control period {env.period_s * 1e3:.0f} ms: a tick takes {p95 * 1e3:.0f} ms (p95) here; the policy "
            f"trained at {trained * 1e3:.0f} ms")


def run_infer(opts: InferOptions, on_episode: Callable[[EpisodeResult], None] | None = None,
              on_start: Callable[[Env, Pilot], None] | None = None,
              on_step: Callable[[int], None] | None = None) -> RunSummary:
    env, pilot, recorder, video = build(opts)
    try:
        if opts.where.robot.kind == "so101":  # a real arm's time passes by itself: it keeps a period it can hold
            env.period_note = hold_period(env, pilot, opts.where.period_s)
            if recorder is not None:
                recorder.set_period(env.period_s)
        if on_start:
            on_start(env, pilot)
        realtime = opts.realtime or opts.where.robot.kind != "sim"  # a real arm's time passes by itself
        runner = Runner(env, pilot, recorder, video, realtime=realtime, max_steps=opts.max_steps,
                        on_episode=on_episode, perceive=opts.where.perception.kind == "real", on_step=on_step)
        return runner.run([opts.seed + i for i in range(opts.episodes)])
    finally:
        env.close()


def start_lines(env: Env, pilot: Pilot, opts: InferOptions) -> tuple[list[str], list[str]]:
    """What ``infer`` says as it starts: what runs where, through which camera, the run's notes;
    and its warnings."""
    from so101_sim2real.geometry.rig_file import default_rig

    d = opts.where
    eyes = "no rendering" if env.perception is None else "wrist camera rendered, privileged seg + depth"
    if d.perception.kind == "real":
        eyes = (f"real perception, {d.perception.profile} profile, on "
                + (f"camera {d.camera.source}" if d.camera.source else "the rendered RGB"))
    where = "the sim twin" if env.robot.name == "sim" else f"{env.robot.name} on {d.robot.port}"
    if d.world is not None:
        where = f"the {d.world.describe()}"
    if d.standin is not None:
        where = f"the {d.standin.summary()}"
    geometry = env.geometry or default_rig()
    undistorts = d.camera.source and d.camera.rig and geometry.camera.D.any()
    notes, warnings = run_notes(env)
    lines = [f"running {opts.episodes} episode(s) of {pilot.name} on {where} ({eyes})",
             f"camera: {geometry.describe()}" + ("; frames undistorted before perception" if undistorts else ""),
             "; ".join(notes)]
    if d.policy.spec_sets:
        lines.append(f"spec overrides for this run (not what the policy was trained with): "
                     f"{', '.join(d.policy.spec_sets)}")
    return lines, warnings


_POSE_FROM = {"live_physics": "live physics", "measured_joints": "FK of the measured joints"}


def run_notes(env: Env) -> tuple[list[str], list[str]]:
    """What a run should say before it starts: the simulator and kinematics it uses
    against what the policy was trained with; and warnings where they differ."""
    from so101_sim2real.simulator import mujoco_line, mujoco_warning

    spec, notes, warnings = env.trained_spec or env.spec, [], []
    if line := getattr(env, "period_note", None):
        notes.append(line)
    if env.twin is not None:
        notes.append(f"twin: {mujoco_line(spec)}")
        if warning := mujoco_warning(spec):
            warnings.append(warning)
    if line := getattr(env.perception, "backend_line", None):
        notes.append(line)
    if examples := getattr(env.perception, "example_models", None):
        warnings.append(f"{' and '.join(examples)}: example weights (random): the policy sees noise; this run "
                        f"shows the workflow, not the policy")
    used, trained = env.kinematics.source, spec.action.ik.pose_from
    if used == trained:
        notes.append(f"kinematics: {_POSE_FROM[used]} (as trained)")
    else:
        why = "" if env.robot.name == "sim" else (" (this arm has no simulator state; the trained TCP lagged the "
                                                   "joints by one 2 ms physics substep)")
        notes.append(f"kinematics: {_POSE_FROM[used]}; trained with {_POSE_FROM[trained]}{why}")
    return notes, warnings




def episode_line(e: EpisodeResult, total: int) -> str:
    outcome = "interrupted" if e.interrupted else OUTCOMES[e.success]
    return f"episode {e.index + 1}/{total}  seed {e.seed}: {outcome} after {e.steps} steps, return {e.ret:.1f}"


def render_summary(summary: RunSummary) -> str:
    d = summary.to_dict()
    n = d["episodes"]
    if n == 0 and summary.interrupted:
        return "interrupted before the first episode finished: nothing to report"
    if summary.scored:
        success = f"success {sum(bool(e.success) for e in summary.complete)}/{n} ({d['success_rate']:.0%})"
    else:
        success = f"{n} episode(s), success not scored (a real arm has no judge yet)"
    lines = [f"{success}   mean return {d['mean_return']:.1f}   "
             f"mean length {d['mean_length']:.1f} steps" + ("   (interrupted)" if summary.interrupted else "")]
    if summary.timing:
        lines.append(f"{'latency per tick':<18}{'p50 ms':>9}{'p95 ms':>9}")
        for stage, t in summary.timing.items():
            lines.append(f"  {stage:<16}{t['p50_ms']:>9.2f}{t['p95_ms']:>9.2f}")
        if summary.tick:
            lines.append(f"  {'whole tick':<16}{summary.tick['p50_ms']:>9.2f}{summary.tick['p95_ms']:>9.2f}")
    if summary.overruns:
        lines.append(f"{summary.overruns} of {summary.ticks} ticks took longer than the {summary.period_s * 1e3:.0f} "
                     f"ms period (each such tick ran late; none was skipped)")
    return "\n".join(lines)
