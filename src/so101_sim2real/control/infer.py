"""``so101 infer``: evaluate a pilot over seeded episodes on a env.

Builds the pilot (a checkpoint or the scripted expert), the env (the sim twin; the
real arm on its Feetech bus), optional recorder and video, runs the
episodes through the :class:`Runner` and renders the results.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from so101_sim2real.control.env import Env, RigRequest, build_env, check_request
from so101_sim2real.control.pilots import Pilot, PolicyPilot, ScriptedPilot
from so101_sim2real.control.recording import Recorder
from so101_sim2real.control.runner import OUTCOMES, EpisodeResult, Runner, RunSummary, wants_frames
from so101_sim2real.control.video import VideoWriter
from so101_sim2real.devices import check_device
from so101_sim2real.errors import So101Error, SpecError
from so101_sim2real.perception.real import RealModels
from so101_sim2real.policy.checkpoint import load_checkpoint
from so101_sim2real.policy.runtime import Policy
from so101_sim2real.records import parse_yaml
from so101_sim2real.sim.perturb import Perturbation
from so101_sim2real.spec import Spec, default_spec, load_spec

SCRIPTED = "scripted"


@dataclass
class InferOptions:
    ckpt: str
    robot: str = "sim"
    port: str | None = None
    episodes: int = 20
    seed: int = 0
    max_steps: int | None = None
    record: Path | None = None
    record_rgb: bool = True  # camera RGB in the recording (the twin renders it at ~0.5 s a frame on a CPU)
    video: Path | None = None
    realtime: bool = False
    trust_pickle: bool = False
    spec_path: Path | None = None
    overrides: list[str] = field(default_factory=list)
    device: str = "cpu"
    perception: str = "sim"  # sim: the twin's rendered classes and depth; real: the networks on its RGB
    models: RealModels | None = None
    calibration: str | None = None  # a real port: an arm id, a calibration .json, or "twin"
    camera: str | None = None  # a real port: a camera index or device, a video, an image folder
    wait_for_operator: Callable[[str], None] | None = None  # a real port: called before each episode
    perturbation: Perturbation | None = None  # the twin only: the perturbed twin, a stand-in for the real arm
    rig: str | None = None  # a env.yaml or camera.yaml: the twin's camera, or the arm's lens and joint offsets
    period_s: float | None = None  # an arm: the control period (default: measured, what this machine sustains)


def apply_overrides(spec: Spec, overrides: list[str]) -> Spec:
    """``["observation.disparity.normalise_region=full_frame", ...]`` applied in order."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SpecError(f"@set {item!r}: expected KEY=VALUE, e.g. observation.disparity.normalise_region=crop")
        spec = spec.replace(key.strip(), parse_yaml(raw), source=f"@set {key.strip()}")
    return spec


def _pilot_and_spec(opts: InferOptions) -> tuple[Policy | None, Spec, Spec]:
    """The pilot, the spec of this run, and the spec as trained (before ``--set``)."""
    if opts.ckpt == SCRIPTED:
        spec = load_spec(opts.spec_path) if opts.spec_path else default_spec()
        return None, apply_overrides(spec, opts.overrides), spec
    ckpt = load_checkpoint(opts.ckpt, trust_pickle=opts.trust_pickle, spec_path=opts.spec_path)
    trained = ckpt.spec
    ckpt = dataclasses.replace(ckpt, spec=apply_overrides(ckpt.spec, opts.overrides))
    return Policy(ckpt, device=opts.device), ckpt.spec, trained


def rig_request(opts: InferOptions, with_camera: bool = True) -> RigRequest:
    return RigRequest(opts.robot, opts.port, opts.calibration, opts.camera, opts.perception,
                      opts.models or RealModels(), opts.perturbation, with_camera, opts.wait_for_operator,
                      rig=opts.rig)


def build(opts: InferOptions) -> tuple[Env, Pilot, Recorder | None, VideoWriter | None]:
    """Everything a run needs, validated before anything moves."""
    if opts.ckpt == SCRIPTED and opts.port and rig_request(opts).real_port:
        raise So101Error("@ckpt scripted: the scripted expert reads the cube's position from the twin; a real arm "
                         "runs a policy (@ckpt PATH)")
    check_request(rig_request(opts))  # before any checkpoint or model loads
    if opts.episodes < 1:
        raise So101Error("@episodes must be at least 1")
    if opts.seed < 0:
        raise So101Error(f"@seed {opts.seed}: seeds are whole numbers from 0")
    check_device(opts.device)
    if opts.max_steps is not None and opts.max_steps < 1:
        raise So101Error("@max_steps must be at least 1")
    if opts.period_s is not None:
        if opts.robot != "so101":
            raise So101Error("@period: only for @robot so101 (the twin runs at the spec's period, or @perturb's)")
        if not 0.005 <= opts.period_s <= 2.0:  # NaN fails this too
            raise So101Error(f"@period {opts.period_s}: seconds per tick, between 0.005 and 2")
    policy, spec, trained = _pilot_and_spec(opts)
    if opts.period_s is not None and opts.period_s < spec.control.period_s:
        raise So101Error(f"@period {opts.period_s}: shorter than the {spec.control.period_s * 1e3:.0f} ms the policy "
                         f"trained at; the arm's step limit is per tick, so it would move faster than trained")
    if not spec.is_seg_depth:
        raise So101Error(f"this policy sees {'+'.join(spec.observation.channels)} frames; the twin (and the real "
                         f"perception) produce seg + disparity, the observation of the user's training setup")
    period = (opts.perturbation.period_s if opts.perturbation else None) or spec.control.period_s
    name = Path(opts.ckpt).name if policy else SCRIPTED
    needs_camera = wants_frames(policy is not None, opts.video is not None, opts.record is not None,
                                opts.perception == "real")
    video = VideoWriter(opts.video, fps=1.0 / period) if opts.video else None  # bad paths fail before the arm
    recorder = Recorder(opts.record, spec, opts.robot, name, period, with_rgb=opts.record_rgb) if opts.record \
        else None
    env = build_env(spec, rig_request(opts, needs_camera))
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
        if opts.robot == "so101":  # a real arm's time passes by itself: the loop keeps a period it can hold
            env.period_note = hold_period(env, pilot, opts.period_s)
            if recorder is not None:
                recorder.set_period(env.period_s)
        if on_start:
            on_start(env, pilot)
        realtime = opts.realtime or opts.robot != "sim"  # a real arm's time passes by itself
        runner = Runner(env, pilot, recorder, video, realtime=realtime, max_steps=opts.max_steps,
                        on_episode=on_episode, perceive=opts.perception == "real", on_step=on_step)
        return runner.run([opts.seed + i for i in range(opts.episodes)])
    finally:
        env.close()


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
        success = f"success {sum(e.success for e in summary.complete)}/{n} ({d['success_rate']:.0%})"
    else:
        success = f"{n} episode(s), success not scored (a real arm has no judge yet)"
    lines = [f"{success}   mean return {d['mean_return']:.1f}   "
             f"mean length {d['mean_length']:.1f} steps" + ("   (interrupted)" if summary.interrupted else "")]
    if summary.timing:
        lines.append(f"{'latency per tick':<18}{'p50 ms':>9}{'p95 ms':>9}")
        for stage, t in summary.timing.items():
            lines.append(f"  {stage:<16}{t['p50_ms']:>9.2f}{t['p95_ms']:>9.2f}")
    if summary.overruns:
        lines.append(f"{summary.overruns} of {summary.ticks} ticks took longer than the {summary.period_s * 1e3:.0f} "
                     f"ms period (each such tick ran late; none was skipped)")
    return "\n".join(lines)
