"""The one control loop: perceive -> pilot -> controller -> robot, every command uses it.

Per tick: read the joints, perceive (when the pilot needs pixels, or a video or a
recording wants them), build the state vector once (when the pilot, a recording or a
transition sink reads it: all of them get that one), ask the pilot, turn the action into
clamped joint targets, write them, let the period pass, score. Each stage is timed
(``obs``, ``policy``, ``control``, ``robot``); the loop keeps the rate on a real arm, runs
as fast as it can on the twin unless asked for real time, and turns torque off on every
way out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

import numpy as np

from so101_sim2real.control.controller import Command
from so101_sim2real.control.env import Env
from so101_sim2real.control.pilots import Observation, Pilot
from so101_sim2real.control.recording import Recorder
from so101_sim2real.control.safety import Terminated, torque_guard
from so101_sim2real.control.timing import RateKeeper, StageTimer, TickTimer
from so101_sim2real.control.video import compose
from so101_sim2real.errors import DeviceFault
from so101_sim2real.interfaces import JointState, StepResult
from so101_sim2real.policy.state import StateBuilder


class TransitionSink(Protocol):
    """Takes every tick as it happens (HIL-SERL's replay buffer): what was seen, done and scored."""

    def begin(self, index: int, seed: int | None) -> None: ...

    def add(self, obs: Observation, action: np.ndarray, result: StepResult, ends: bool) -> None:
        """``ends``: the episode ends with this tick (success, time limit or step limit)."""

    def end(self) -> None:
        """The episode is over; also called after an interrupted one."""

    def discard(self) -> None:
        """Forget the episode in progress instead of ending it (re-recorded, or cut by a device fault)."""


@dataclass
class EpisodeResult:
    index: int
    seed: int | None
    success: bool | None  # None where nothing judges success (a real arm)
    steps: int
    ret: float
    interrupted: bool = False
    discarded: bool = False  # thrown away and run again (a re-record, or a device fault)


@dataclass
class RunSummary:
    episodes: list[EpisodeResult] = field(default_factory=list)
    timing: dict[str, dict[str, float]] = field(default_factory=dict)
    tick: dict[str, float] = field(default_factory=dict)  # the whole tick (control.timing.TickTimer.summary)
    interrupted: bool = False
    overruns: int = 0
    ticks: int = 0  # ticks held to the period (realtime only); ``overruns`` of them missed it
    period_s: float = 0.0  # the period the loop was held to
    discarded: int = 0  # episodes thrown away and run again
    pauses: list = field(default_factory=list)  # PauseRecord per device fault the run waited out

    @property
    def scored(self) -> bool:
        """Whether success was judged (not on a real arm): otherwise ``success_rate`` is None."""
        return all(e.success is not None for e in self.episodes)

    @property
    def complete(self) -> list[EpisodeResult]:
        return [e for e in self.episodes if not e.interrupted]

    def to_dict(self) -> dict:
        done = self.complete
        return {
            "episodes": len(done),
            "success_rate": (float(np.mean([e.success for e in done])) if done else 0.0) if self.scored else None,
            "mean_return": float(np.mean([e.ret for e in done])) if done else 0.0,
            "mean_length": float(np.mean([e.steps for e in done])) if done else 0.0,
            "interrupted": self.interrupted,
            "rate_overruns": self.overruns,
            "period_s": self.period_s,
            "latency_ms": self.timing,
            "tick_ms": self.tick,
            "per_episode": [_episode_dict(e) for e in self.episodes],
        }


def _episode_dict(e: EpisodeResult) -> dict:
    """One episode as JSON, with ``return`` spelled as in ``recording.json``."""
    d = asdict(e)
    d["return"] = d.pop("ret")
    d.pop("discarded")  # a summary lists the episodes that counted; thrown-away ones never reach it
    return d


# A judge's StepResult.info key: throw this episode away and run it again (the re-record key).
DISCARD = "discard"


class VideoSink(Protocol):
    """Where the composed frames go: a :class:`~so101_sim2real.control.video.VideoWriter`, or a
    :class:`~so101_sim2real.control.window.LiveWindow` that shows them."""

    def add(self, image: np.ndarray) -> None: ...

    def close(self) -> None: ...


class Judge(Protocol):
    """Decides success from what the camera saw, where the task cannot (a reward classifier)."""

    def reset(self) -> None: ...

    def judge(self, obs: Observation, result: StepResult, step: int) -> StepResult: ...


OUTCOME_HOLD_S = 0.5  # the video holds each episode's last frame this long, captioned with its outcome
OUTCOMES = {True: "success", False: "no success", None: "ended"}  # None: a real arm, not judged


def wants_frames(pilot_sees_pixels: bool, video: bool, recording: bool, asked: bool = False) -> bool:
    """Whether a run perceives every tick: its pilot looks at the frames, they are kept, or the
    user asked for it (to time a perception). The one place this is decided; an env is built
    with a camera exactly when it is true."""
    return pilot_sees_pixels or video or recording or asked


def tick(env: Env, action: np.ndarray, joints: JointState,
         timer: StageTimer | None = None) -> tuple[Command, StepResult]:
    """One control tick from a reading: command, write, let time pass, score.

    Timed as two stages: ``control`` (IK and the safety clamp) and one named for the
    robot (the write, the period passing and the task's scoring: ``sim`` for the
    twin, whose physics runs there).
    """
    timer = timer or StageTimer()
    with timer.stage("control"):
        cmd = env.controller.command(action, joints.position)
    with timer.stage(env.robot.name):
        env.robot.write(cmd.targets)
        env.robot.advance(env.period_s)
        result = env.task.evaluate(action)
    return cmd, result


class Runner:
    """Runs episodes of a pilot in an env, with optional recording and video."""

    def __init__(self, env: Env, pilot: Pilot, recorder: Recorder | None = None, video: VideoSink | None = None,
                 realtime: bool = False, max_steps: int | None = None,
                 on_episode: Callable[[EpisodeResult], None] | None = None, perceive: bool = False,
                 with_rgb: bool = False, transitions: TransitionSink | None = None,
                 on_step: Callable[[int], None] | None = None, judge: Judge | None = None,
                 on_fault: Callable[[DeviceFault], object] | None = None):
        self.env, self.pilot, self.recorder, self.video = env, pilot, recorder, video
        self.transitions = transitions
        # the tick's state vector, built once in _observe for whoever reads it
        wants_state = recorder is not None or transitions is not None or getattr(pilot, "needs_state", False)
        self._state = StateBuilder(env.spec.state) if wants_state and env.spec.state.size else None
        self.rate = RateKeeper(env.period_s, realtime)
        self.max_steps = max_steps
        self.on_episode = on_episode
        self.on_step = on_step  # called with the step count after every tick (a progress bar)
        self.judge = judge
        # A device fault: without a handler the run stops (torque off); with one (a HIL-SERL
        # session) it waits the fault out and the episode, thrown away, starts again.
        self.on_fault = on_fault
        self.timer = StageTimer()
        self.ticks = TickTimer()
        self._episodes, self._title = 1, ""
        self._last_view: tuple[np.ndarray | None, np.ndarray] | None = None  # (camera RGB, policy frame)
        self.perceive = wants_frames(pilot.needs_pixels, video is not None, recorder is not None, perceive)
        self.want_rgb = with_rgb or video is not None or (recorder is not None and recorder.with_rgb)
        if self.perceive and env.perception is None:
            raise ValueError("this run needs perception but the env has none")

    def run(self, seeds: list[int | None]) -> RunSummary:
        """All episodes; Ctrl-C or SIGTERM ends the run early, torque off either way."""
        summary = RunSummary()
        self._episodes = len(seeds)
        try:
            with torque_guard(self.env.robot):
                index = 0
                while index < len(seeds):
                    try:
                        result = self.episode(index, seeds[index])
                    except DeviceFault as fault:
                        if self.on_fault is None:
                            raise
                        summary.pauses.append(self.on_fault(fault))
                        continue
                    if result.discarded:  # the person asked for this episode again
                        summary.discarded += 1
                        continue
                    index += 1
                    summary.episodes.append(result)
                    if self.on_episode:
                        self.on_episode(result)
                    if result.interrupted:
                        summary.interrupted = True
                        break
        except (KeyboardInterrupt, Terminated):  # between episodes, e.g. during a reset
            summary.interrupted = True
        finally:
            if self.video is not None:
                self.video.close()
        summary.timing, summary.tick, summary.overruns = self.timer.summary(), self.ticks.summary(), self.rate.overruns
        summary.ticks, summary.period_s = self.rate.ticks, self.rate.period
        return summary

    def _observe(self, joints: JointState) -> Observation:
        perceived = None
        if self.perceive:
            perception = self.env.perception
            assert perception is not None  # __init__ refused a run that perceives without one
            with self.timer.stage("obs"):
                perceived = perception.observe(with_rgb=self.want_rgb)
        proprio = self.env.proprio(joints)
        state = None if self._state is None else self._state.build(proprio)
        return Observation(joints, proprio, self.env.controller.ee_target.copy(), perceived, state)

    def episode(self, index: int, seed: int | None) -> EpisodeResult:
        """One episode; a KeyboardInterrupt or SIGTERM inside it ends it as interrupted."""
        env = self.env
        joints, _ = env.reset(seed)
        limit = self.max_steps or env.spec.episode.max_steps
        success: bool | None
        steps, ret, success, interrupted, discard = 0, 0.0, False, False, False
        self._title = f"episode {index + 1}/{self._episodes}  seed {seed}"
        self._last_view = None
        if self.recorder:
            self.recorder.begin(index, seed)
        if self.transitions:
            self.transitions.begin(index, seed)
        try:
            obs = self._observe(joints)
            self.pilot.reset(obs)
            if self.judge:
                self.judge.reset()
            self.rate.start()
            self.ticks.start()
            slept = 0.0
            while True:
                self.ticks.lap(slept)
                with self.timer.stage("policy"):
                    action = np.asarray(self.pilot.act(obs), dtype=np.float32)
                self._commanded_at = time.monotonic()
                cmd, result = tick(env, action, joints, self.timer)
                if self.judge:  # success seen in this tick's frame (a real arm's only judge)
                    if env.scored:  # the task's own verdict kept beside the judge's (a twin's)
                        result = replace(result, info={**result.info, "task_success": result.terminated})
                    result = self.judge.judge(obs, result, steps + 1)
                    if result.info.get(DISCARD):
                        discard = True
                        break
                steps, ret = steps + 1, ret + result.reward
                if self.on_step:
                    self.on_step(steps)
                self._keep(obs, action, cmd, result.reward, ret, steps)
                ends = result.terminated or result.truncated or steps >= limit
                if self.transitions:
                    self.transitions.add(obs, action, result, ends)
                if ends:
                    success = result.terminated if env.scored or self.judge else None
                    break
                waited_from = time.perf_counter()
                self.rate.wait()
                slept = time.perf_counter() - waited_from
                joints = env.robot.read()
                obs = self._observe(joints)
        except (KeyboardInterrupt, Terminated):
            interrupted = True
        except DeviceFault:
            discard = self.on_fault is not None  # waited out and run again; otherwise the run stops here
            interrupted = not discard
            raise
        finally:
            self._finish(steps, success, ret, interrupted, discard)
        return EpisodeResult(index, seed, None if success is None else bool(success), steps, float(ret), interrupted,
                             discard)

    def _finish(self, steps: int, success: bool | None, ret: float, interrupted: bool, discard: bool) -> None:
        if discard:
            if self.recorder:
                self.recorder.discard()
            if self.transitions:
                self.transitions.discard()
            return
        if self.recorder:
            self.recorder.end(steps, success, ret, interrupted)
        if self.transitions:
            self.transitions.end()
        self._show_outcome(success, steps, interrupted)

    def _keep(self, obs: Observation, action: np.ndarray, cmd: Command, reward: float, ret: float, step: int) -> None:
        p = obs.perceived
        if self.recorder:
            twin = self.env.twin
            self.recorder.add(
                time=obs.joints.timestamp, joint_pos=obs.joints.position, joint_vel=obs.joints.velocity,
                tcp_pos=obs.proprio.tcp_pos, state=obs.state, action=action,
                ee_target=cmd.ee_target, requested=cmd.requested,
                target=cmd.targets, reward=reward, obs=None if p is None else p.frame,
                cube_pos=None if twin is None else twin.cube_pos(),  # after the row's step, as labels expect
                cube_quat=None if twin is None else twin.cube_quat(),
                rgb=None if p is None else p.rgb,
                photon_to_command_s=None if p is None or p.captured_at is None else self._commanded_at - p.captured_at,
            )
        if self.video and p is not None:
            self._last_view = (p.rgb, p.frame)
            self.video.add(compose(p.rgb, p.frame, self._channels, f"{self._title}\nstep {step}  return {ret:.1f}"))

    def _show_outcome(self, success: bool | None, steps: int, interrupted: bool) -> None:
        """Hold the episode's last frame for half a second with its outcome, so episodes are told apart."""
        if not self.video or self._last_view is None:
            return
        outcome = "interrupted" if interrupted else OUTCOMES[success]
        frame = compose(*self._last_view, self._channels, f"{self._title}\n{outcome} after {steps} steps")
        for _ in range(max(1, round(OUTCOME_HOLD_S / self.env.period_s))):
            self.video.add(frame)

    @property
    def _channels(self) -> list[str]:
        return list(self.env.spec.observation.channels)


def sustainable_period(env: Env, pilot: Pilot, ticks: int = 12, margin: float = 1.2,
                       grain_s: float = 0.01) -> tuple[float, float]:
    """``(period, p95 tick)`` in seconds: what this machine sustains for a whole tick (read, perceive,
    act, IK and clamp, and a write), timed over ``ticks`` ticks with the arm left where it is (the
    write asks each joint to stay where it was read). The period is the p95 with ``margin``,
    rounded up to ``grain_s``, and never shorter than the env's own."""
    import math

    runner = Runner(env, pilot)
    joints = env.robot.read()
    env.controller.reset(joints.position)
    pilot.reset(runner._observe(joints))
    took = []
    for _ in range(ticks):
        t0 = time.perf_counter()
        joints = env.robot.read()
        action = pilot.act(runner._observe(joints))
        env.controller.command(action, joints.position)
        env.robot.write(joints.position)  # a write costs a bus round trip (and a health read) on an arm
        took.append(time.perf_counter() - t0)
    p95 = float(np.percentile(took[2:] if len(took) > 4 else took, 95))  # the first ticks warm caches up
    return max(env.period_s, math.ceil(p95 * margin / grain_s) * grain_s), p95
