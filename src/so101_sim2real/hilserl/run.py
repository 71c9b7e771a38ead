"""``so101 hilserl train``: a HIL-SERL session in an env, kept in a run folder (hilserl/run_folder.py)
so that any stop can be resumed."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch

from so101_sim2real.control.description import check_trained_period
from so101_sim2real.control.env import Env
from so101_sim2real.control.interveners import Intervener, NoIntervener, ScriptedIntervener
from so101_sim2real.control.keys import KeySource, OperatorKeys
from so101_sim2real.control.pause import PauseRecord, env_probes, wait_until_back
from so101_sim2real.control.runner import EpisodeResult, Judge
from so101_sim2real.control.window import KeySources, LiveWindow
from so101_sim2real.errors import DeviceFault, So101Error
from so101_sim2real.hilserl.demos import demo_episodes
from so101_sim2real.hilserl.episode_record import EpisodeRecord, SessionStart, session_seeds
from so101_sim2real.hilserl.learner import check_precision
from so101_sim2real.hilserl.options import (
    RunOptions,
    check_options,
    hand_grabs,
    thread_layout,
)
from so101_sim2real.hilserl.pace import resolve
from so101_sim2real.hilserl.replay import ReplayBuffer, Step
from so101_sim2real.hilserl.rewards import REWARDS, ClassifierReward, RewardSource, SuccessReward
from so101_sim2real.hilserl.run_folder import (
    POLICY_DIR,
    TENSORBOARD_DIR,
    RunFolder,
)
from so101_sim2real.hilserl.trainer import TrainConfig, Trainer, new_buffer
from so101_sim2real.interfaces import StepResult
from so101_sim2real.leader.arm import LeaderSession, open_leader
from so101_sim2real.perception.backends import thread_budget
from so101_sim2real.policy.checkpoint import Checkpoint, load_checkpoint, save_native
from so101_sim2real.policy.runtime import Policy, build_agent
from so101_sim2real.spec import Spec, flatten


def load_demos(folders: tuple[str, ...], buffer: ReplayBuffer, rewards: RewardSource, spec: Spec) -> int:
    """Recordings (``so101 infer ... --record DIR``) or LeRobot datasets into the demo store; returns the
    episodes loaded.

    The reward is the run's: the recorded task reward for ``dense``, 1 on the last row of a
    successful episode for ``success``.
    """
    count = 0
    for folder in folders:
        for demo in demo_episodes(folder, spec):
            n, steps = len(demo.action), []
            for t in range(n):
                last = t == n - 1
                result = StepResult(float(demo.reward[t]), last and demo.success, last and not demo.success)
                steps.append(Step(demo.obs[t], demo.state[t], demo.action[t], rewards.reward(result),
                                  result.terminated, result.truncated, is_intervention=True))
            buffer.add_demo_episode(steps)
            count += 1
    return count


# ---------------------------------------------------------------------------- a training session


@dataclass
class TrainReport:
    """What a session did, and where the run stands."""

    episodes: list[EpisodeResult]
    counters: dict[str, int]
    utd: float
    interventions: int
    env_steps_this_session: int
    interrupted: bool
    changed: list[str]
    discarded: int = 0  # episodes thrown away and run again (the re-record key, device faults)
    pauses: list = dataclasses.field(default_factory=list)  # PauseRecord per device fault waited out

    @property
    def success_rate(self) -> float | None:
        recent = [e for e in self.episodes if not e.interrupted][-20:]
        return float(np.mean([bool(e.success) for e in recent])) if recent else None

    @property
    def intervention_rate(self) -> float:
        return self.interventions / max(1, self.env_steps_this_session)


class Board:
    """TensorBoard event files in the run folder, one point per finished episode (x: episodes),
    flushed at once so a kill loses only the episode in progress; a resume adds a new file."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder), flush_secs=3600)
        self.recent: list[bool] = []

    def episode(self, record: EpisodeRecord) -> None:
        r = record
        self.recent = (self.recent + [bool(r.success)])[-20:]
        scalars = {"episode/success": float(bool(r.success)), "episode/steps": r.steps,
                   "episode/intervention_rate": r.intervention_rate,
                   "episode/return": r.ret, "rates/success_last_20": float(np.mean(self.recent)),
                   "rates/utd": r.utd, "buffer/transitions": r.buffer,
                   "counters/env_steps": r.env_steps, "counters/updates": r.updates}
        # none before the learner's first update, and no actor loss while the actor waits out the warm-up
        learner = {"learner/critic_loss": r.critic_loss, "learner/q_mean": r.q_mean, "learner/actor_loss": r.actor_loss}
        scalars.update({tag: value for tag, value in learner.items() if value is not None})
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, r.episode)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _changed(old: TrainConfig, new: TrainConfig) -> list[str]:
    flat_old, flat_new = flatten(dataclasses.asdict(old)), flatten(dataclasses.asdict(new))
    return [f"{k}: {flat_old[k]} -> {flat_new[k]}" for k in flat_new if flat_old.get(k) != flat_new[k]]


def _save_policy(run: RunFolder, ckpt: Checkpoint, trainer: Trainer) -> None:
    keep = ("encoder.", "actor.", "critic.") + (("critic_target.",) if ckpt.arch.has_critic_target else ())
    tuned = dataclasses.replace(ckpt, weights=trainer.learner.weights(keep),
                                counters={**ckpt.counters, **run.counters})
    save_native(tuned, run.policy_dir, overwrite=True)
    run.save_optimisers(trainer.learner)


def train(out: str | Path, episodes: int, options: RunOptions | None = None, cfg: TrainConfig | None = None,
          resume: bool = False, realtime: bool = False,
          on_episode: Callable[[EpisodeRecord], None] | None = None,
          max_steps: int | None = None, on_start: Callable[[Trainer], None] | None = None,
          keys: KeySource | None = None, wait_for_operator: Callable[[str], None] | None = None,
          say: Callable[[str], None] = print, window: LiveWindow | None = None) -> TrainReport:
    """Start (``options``, ``cfg``) or resume a run folder and train ``episodes`` more episodes on the twin.

    ``on_start`` gets the :class:`Trainer` before the first episode (its ``start``: what the
    session says first; its ``progress()``: where it stands); ``on_episode`` gets each episode's
    :class:`~so101_sim2real.hilserl.episode_record.EpisodeRecord`, once the run folder has it.
    ``keys`` (a :class:`~so101_sim2real.control.keys.TerminalKeys`) lets a person toggle the
    leader's control with space, judge with s / f and re-record with r. A device fault pauses
    the session (``say`` tells the person) until the device is back. ``window`` (a
    :class:`~so101_sim2real.control.window.LiveWindow`) shows the camera and the observation
    live, and its keys work like the terminal's."""
    from so101_sim2real.control.env import build_env

    if episodes < 1:
        raise So101Error("@episodes must be at least 1")
    if max_steps is not None and max_steps < 1:
        raise So101Error("@max_steps must be at least 1")
    made = False  # this start made the run folder (so a refused start removes it)
    if resume:
        run = RunFolder.open(out)
        interrupted_swap = run.path / f".{POLICY_DIR}.old"
        if not run.policy_dir.is_dir() and interrupted_swap.is_dir():  # killed while saving: the previous save
            interrupted_swap.rename(run.policy_dir)
        source = run.policy_dir if run.policy_dir.is_dir() else run.options.ckpt
        if source is None:  # a hand-edited run.yaml (the run's own writes always name it)
            raise So101Error(f"{run.path}: run.yaml names no checkpoint the run started from (where.policy.ckpt)")
        ckpt = _load_with_critics(source)
        changed = _changed(run.cfg, cfg) if cfg is not None else []
        if source != run.policy_dir and run.counters["updates"]:
            changed.append(f"no policy saved yet: the learner restarts from {source} (updates "
                           f"{run.counters['updates']} -> 0)")
        check_precision((cfg or run.cfg).learner.precision, torch.device(run.options.device))  # before the arm
        if cfg is not None:
            run.cfg = cfg
            run.write_config()
    else:
        if options is None or options.ckpt is None:
            raise So101Error("a new run needs @ckpt")
        check_options(options)
        check_precision((cfg or TrainConfig()).learner.precision, torch.device(options.device))
        ckpt = _load_with_critics(options.ckpt)  # every check before the folder exists: a failure leaves nothing
        check_trained_period(options.where, ckpt.spec.control.period_s)
        source = options.ckpt
        made = not Path(out).exists()
        run, changed = RunFolder.create(out, options, cfg or TrainConfig()), []
    try:
        env = build_env(ckpt.spec, run.options.where, wait_for_operator=wait_for_operator,
                        threads=run.options.actor_threads(run.cfg.learner_threads))
    except BaseException:
        if made:  # a start refused by the env (its camera, its weights) leaves no folder
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    realtime = realtime or run.options.where.robot.kind != "sim"  # an arm's time passes by itself
    board = leader = None
    started = False  # the first episode began: from then on the folder holds the run
    try:
        opts = run.options
        # each random stream its own seed, and a resumed session new ones: no noise is replayed
        help_seed, explore_seed, sample_seed = session_seeds(run.cfg.seed, run.counters["episodes"])
        # space for the leader, s / f / r for the judge: typed in the terminal or the window
        operator = OperatorKeys(KeySources(keys, window)) if keys is not None or window is not None else None
        intervener: Intervener
        if opts.intervene == "leader":
            assert opts.leader_port is not None  # check_options: @intervene leader needs @leader_port
            leader = open_leader(opts.leader_port, opts.leader_calibration, env, ckpt.spec, help_seed, operator,
                                 grabs=hand_grabs(opts))
            intervener = leader.intervener
        elif opts.intervene == "scripted":
            assert env.twin is not None  # check_options: the scripted expert only where the twin is the world
            intervener = ScriptedIntervener(env.twin, seed=help_seed)
        else:
            intervener = NoIntervener()
        cfg_now = run.cfg
        if source == run.policy_dir:  # resuming: the critics are the run's own, not the sim's to replace
            cfg_now = dataclasses.replace(cfg_now, learner=dataclasses.replace(cfg_now.learner, reinit_critics=False))
        rewards = make_rewards(opts, cfg_now)
        notes, warnings = session_notes(env, opts, rewards)
        layout, oversubscribed = thread_layout(opts, run.cfg.learner_threads)
        notes.append(layout)
        warnings += [oversubscribed] if oversubscribed else []
        if operator is not None and hasattr(rewards, "judge"):
            operator.inner = cast(Judge, rewards)  # a ClassifierReward: the person's s / f over its verdict
        recorder = run.recorder(ckpt.spec, env.period_s)
        policy, period_note = Policy(ckpt, "cpu"), None  # the actor's copy, the one the period is measured with
        if opts.where.robot.kind != "sim":  # measured on the thread budget the actor will run on
            with thread_budget(opts.actor_threads(run.cfg.learner_threads)):
                from so101_sim2real.control.infer import hold_period
                from so101_sim2real.control.pilots import PolicyPilot

                period_note = hold_period(env, PolicyPilot(policy), opts.where.period_s)
            recorder.set_period(env.period_s)  # the episodes keep the period that ran
        # what the config leaves auto is chosen for this machine, against the period that runs
        cfg_now, run.pace = resolve(cfg_now, build_agent(ckpt), opts.device, env.period_s, run.cfg.learner_threads)
        run.write_config()  # run.yaml's pace: this start's choice (its config keeps auto)
        notes += run.pace.lines() if run.pace is not None else []
        buffer = new_buffer(ckpt.spec, cfg_now, sample_seed)
        # demos carry their own success (a classifier judges live frames only)
        load_demos(opts.demos, buffer, SuccessReward() if opts.reward == "classifier" else rewards, ckpt.spec)
        run.load_episodes(buffer)
        c = run.counters
        saved_updates = ckpt.counters.get("updates", c["updates"]) if source == run.policy_dir else 0
        c["updates"] = int(saved_updates)  # the weights' own count: updates after the last save are lost with them
        start = SessionStart(env_steps=c["env_steps"], updates=c["updates"], episodes=c["episodes"],
                             next_seed=c["next_seed"], explore_seed=explore_seed, sample_seed=sample_seed,
                             period_note=period_note, notes=tuple(notes), warnings=tuple(warnings))
        trainer = Trainer(env, ckpt, cfg_now, intervener, rewards, opts.device, recorder=recorder, start=start,
                          buffer=buffer, policy=policy, restore=run.load_optimisers)
        board = Board(run.path / TENSORBOARD_DIR)
        if window is not None:
            window.status = lambda: _status_line(trainer)
        if on_start:
            on_start(trainer)

        def episode_done(record: EpisodeRecord) -> None:
            c.update(env_steps=record.env_steps, updates=record.updates, episodes=record.episode,
                     next_seed=record.next_seed)
            run.write_counters()
            run.append_metrics(record.metrics())
            board.episode(record)
            if record.episode % opts.save_every == 0:
                _save_policy(run, ckpt, trainer)
            if on_episode:
                on_episode(record)

        # the actor's thread (policy, and perception when it is not ahead) on the cores the learner leaves
        started = True
        with thread_budget(opts.actor_threads(run.cfg.learner_threads)):
            summary = trainer.run(episodes, realtime=realtime, on_episode=episode_done, max_steps=max_steps,
                                  judge=operator, on_fault=_pauser(env, leader, say), video=window)
        end = trainer.progress()
        c.update(env_steps=end.env_steps, updates=end.updates)
        run.write_counters()
        _save_policy(run, ckpt, trainer)
        return TrainReport(summary.episodes, dict(c), end.utd, end.interventions, end.env_steps - start.env_steps,
                           summary.interrupted, changed, summary.discarded, summary.pauses)
    finally:
        if board is not None:
            board.close()
        try:
            if leader is not None:
                leader.close()  # torque off on the leader too, whatever ended the session
        finally:
            env.close()
            if made and not started:  # refused before its first episode (its demos, its leader): no folder
                shutil.rmtree(run.path, ignore_errors=True)


def session_notes(env: Env, options: RunOptions, rewards: RewardSource) -> tuple[list[str], list[str]]:
    """What a session says before it starts, as ``so101 infer`` says it (the twin's simulator, the
    backend, the kinematics; example weights), plus the camera and a classifier that judges noise."""
    from so101_sim2real.control.infer import run_notes
    from so101_sim2real.geometry.rig_file import default_rig

    notes, warnings = run_notes(env)
    notes.insert(0, f"camera: {(env.geometry or default_rig()).describe()}")
    examples = getattr(env.perception, "example_models", None)
    classifier = getattr(getattr(rewards, "success_judge", None), "classifier", None)
    if examples and getattr(getattr(classifier, "config", None), "input", None) == "obs":
        warnings.append(f"the reward classifier judges the policy's frame, which {' and '.join(examples)} (example "
                        f"weights) make noise: its successes are noise too")
    return notes, warnings


def _status_line(trainer: Trainer) -> str:
    """The window's bottom line: who moves the arm, and what the classifier thinks."""
    now = trainer.progress()
    return f"control: {now.control}" + ("" if now.success_p is None else f"   success p {now.success_p:.2f}")


def _pauser(env: Env, leader: LeaderSession | None, say: Callable[[str], None]) -> Callable[[DeviceFault], PauseRecord]:
    """What a session does on a device fault: both arms limp, wait until every device answers,
    the follower's torque back on (from where it is, nothing jumps)."""
    probes, stops = env_probes(env), [lambda: env.robot.torque(False)]
    arm = getattr(leader, "arm", None)
    if arm is not None:
        probes.append(arm.reconnect)
        stops.append(arm.limp)

    def wait(fault: DeviceFault) -> PauseRecord:
        while True:
            record = wait_until_back(fault, probes, stops, say)
            try:
                env.robot.torque(True)
                return record
            except So101Error as exc:  # gone again as it came back
                fault = DeviceFault(f"{env.robot.name}: torque could not come back on ({exc})")

    return wait


def make_rewards(options: RunOptions, cfg: TrainConfig) -> RewardSource:
    """The run's reward: the task's success or dense reward, or the reward classifier's judgement."""
    if options.reward != "classifier":
        return REWARDS[options.reward]()
    from so101_sim2real.reward.classifier import SuccessJudge, load_classifier

    assert options.classifier is not None  # check_options: @reward classifier needs @classifier
    judge = SuccessJudge(load_classifier(options.classifier), cfg.success_threshold, cfg.success_frames,
                         cfg.success_min_steps)
    return ClassifierReward(judge)


def _load_with_critics(source: str | Path) -> Checkpoint:
    ckpt = load_checkpoint(source)
    if ckpt.arch.critic is None:
        raise So101Error(f"{source}: this checkpoint has no critic weights; HIL-SERL fine-tunes a full DrQ-v2 "
                         f"snapshot (a RoboBase snapshot or its 'so101 convert' folder)")
    return ckpt
