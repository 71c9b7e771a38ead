"""HIL-SERL in one process: the actor loop in this thread, the learner in another, one buffer.

The actor thread is the ordinary :class:`Runner` (the env, perception, controller, safety
and torque handling every command uses) with a :class:`LearningPilot` and a
:class:`BufferSink`. The learner thread samples the shared :class:`ReplayBuffer`, runs
DrQ-v2 updates, and every ``publish_every`` updates publishes the encoder and the
actor together to the :class:`PolicySlot` the pilot reads between ticks. No sockets,
no serialisation.

Pacing: the learner runs at most ``utd`` updates per stored env step and, on a CPU,
with its own small thread budget at the lowest OS priority, so the actor's control
period holds; on a GPU it runs free up to ``utd``. Between episodes the actor may wait
for the learner to reach ``min_utd`` (a real arm's reset gap is that time). The
realised ratio is reported (the user's configured UTD 20 really ran at 3.9).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from so101_sim2real.control.env import Env
from so101_sim2real.control.interveners import Intervener
from so101_sim2real.control.recording import Recorder
from so101_sim2real.control.runner import EpisodeResult, Runner, RunSummary
from so101_sim2real.errors import DeviceFault, So101Error
from so101_sim2real.hilserl.actor import BufferSink, LearningPilot, PolicySlot
from so101_sim2real.hilserl.learner import Learner, LearnerConfig, UpdateMetrics
from so101_sim2real.hilserl.replay import ReplayBuffer
from so101_sim2real.hilserl.rewards import RewardSource
from so101_sim2real.policy.checkpoint import Checkpoint
from so101_sim2real.policy.runtime import Policy, build_agent
from so101_sim2real.policy.state import StateBuilder


@dataclass(frozen=True)
class TrainConfig:
    """The run's knobs beside the learner's."""

    learner: LearnerConfig = field(default_factory=LearnerConfig)
    capacity: int = 100_000  # transitions in the online store (the demo store gets the same)
    n_step: int = 3
    gamma: float = 0.99
    utd: float = 1.0  # at most this many updates per stored env step
    min_utd: float = 0.0  # between episodes, the actor waits until the learner has made this many (0: never)
    warmup_steps: int = 1000  # env steps of critic-only updates before the actor moves
    publish_every: int = 10  # updates between publishing the encoder + actor to the actor thread
    learner_threads: int = 1  # torch threads of the learner on a CPU (the actor keeps the rest)
    seed: int = 0
    # --reward classifier: success is this probability or more, for this many frames in a row,
    # no earlier than this step of an episode (docs/reference.md section 8)
    success_threshold: float = 0.7
    success_frames: int = 3
    success_min_steps: int = 10


@dataclass
class LearnerStats:
    """What the learner thread has done, read by the actor thread for reports."""

    updates: int = 0
    published: int = 0
    last: UpdateMetrics | None = None
    error: BaseException | None = None


def _lower_priority() -> None:
    """Make the calling thread the one the OS scheduler serves last (Linux: nice per thread), so
    the actor's control loop keeps its period when both want the same cores."""
    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class Trainer:
    """One HIL-SERL run on a env: build once, ``run`` episodes, ``close``."""

    def __init__(self, env: Env, ckpt: Checkpoint, cfg: TrainConfig, intervener: Intervener, rewards: RewardSource,
                 device: str = "cpu", recorder: Recorder | None = None):
        self.env, self.cfg = env, cfg
        spec = ckpt.spec
        obs = spec.observation
        self.learner = Learner(build_agent(ckpt), cfg.learner, device, seed=cfg.seed)
        self.buffer = ReplayBuffer(cfg.capacity, (len(obs.channels), *obs.image_size), spec.state.size,
                                   spec.action.dim, obs.frame_stack, cfg.n_step, cfg.gamma, seed=cfg.seed)
        self.slot = PolicySlot()
        self.slot.publish(self.learner.policy_weights())  # the actor has the starting weights before step one
        self.pilot = LearningPilot(Policy(ckpt, "cpu"), self.slot, intervener, cfg.learner.std,
                                   cfg.learner.std_clip, seed=cfg.seed)
        self.sink = BufferSink(self.buffer, self.pilot, rewards, StateBuilder(spec.state), recorder)
        self.stats = LearnerStats()
        self.rate = None
        self.period_note: str | None = None  # how the control period was chosen, when it was measured
        self.notes: list[str] = []  # what the session says before it starts, and its warnings
        self.warnings: list[str] = []
        self._stop = threading.Event()

    # ------------------------------------------------------------------ the learner thread

    def _ready(self) -> bool:
        env = self.sink.env_steps
        return env >= self.cfg.learner.batch_size and self.stats.updates < self.cfg.utd * env

    def _learn(self) -> None:
        cfg = self.cfg
        if self.learner.device.type == "cpu":
            torch.set_num_threads(cfg.learner_threads)  # this thread's budget; the actor keeps its own
            _lower_priority()
        try:
            while not self._stop.is_set():
                if not self._ready():
                    time.sleep(0.002)
                    continue
                try:
                    batch = self.buffer.sample(cfg.learner.batch_size)
                except RuntimeError:  # no complete window yet (the first episode is still short)
                    time.sleep(0.002)
                    continue
                metrics = self.learner.update(batch, train_actor=self.sink.env_steps >= cfg.warmup_steps)
                self.stats.updates, self.stats.last = self.learner.updates, metrics
                if self.learner.updates % cfg.publish_every == 0:
                    self.slot.publish(self.learner.policy_weights())
                    self.stats.published += 1
                time.sleep(0)  # let the actor thread in
        except BaseException as exc:  # noqa: BLE001 - reported by the actor thread, which stops the run
            self.stats.error = exc

    # ------------------------------------------------------------------ a run

    def run(self, episodes: int, first_seed: int = 0, realtime: bool = False,
            on_episode: Callable[[EpisodeResult], None] | None = None, max_steps: int | None = None,
            judge: object | None = None, on_fault: Callable[[DeviceFault], object] | None = None,
            video: object | None = None) -> RunSummary:
        """Episodes on the env while the learner learns; Ctrl-C ends both, torque off. ``judge``
        (the person's keys) decides success over the task; by default a reward classifier does.
        ``on_fault`` waits out a device fault (:mod:`~so101_sim2real.control.pause`); the learner
        goes on meanwhile, and the episode the fault cut is thrown away and run again. ``video``
        takes each tick's composed frame (a :class:`~so101_sim2real.control.window.LiveWindow`)."""
        learner = threading.Thread(target=self._learn, name="hilserl-learner", daemon=True)
        self._stop.clear()

        def episode_done(result: EpisodeResult) -> None:
            # the episode's return is the learner's, as the sink summed it for the episode's file
            result = dataclasses.replace(result, ret=self.sink.episode_return)
            self._catch_up()
            if self.stats.error is not None:
                raise So101Error(f"the learner stopped: {self.stats.error}") from self.stats.error
            if on_episode:
                on_episode(result)

        if judge is None and hasattr(self.sink.rewards, "judge"):  # a reward classifier
            judge = self.sink.rewards
        runner = Runner(self.env, self.pilot, realtime=realtime, on_episode=episode_done, transitions=self.sink,
                        max_steps=max_steps, judge=judge, on_fault=on_fault, video=video)
        self.rate = runner.rate  # its overrun count, read per episode
        learner.start()
        try:
            return runner.run([first_seed + i for i in range(episodes)])
        finally:
            self._stop.set()
            learner.join()

    def _catch_up(self, stall_s: float = 30.0) -> None:
        """Between episodes (the reset gap a real arm has anyway) hold the actor until the learner
        reaches ``min_utd``: on a CPU the renderer leaves it little during an episode. Gives up
        when the learner makes no progress for ``stall_s``."""
        target = self.cfg.min_utd * self.sink.env_steps
        last, since = self.stats.updates, time.perf_counter()
        while self.stats.updates < target and self.stats.error is None:
            time.sleep(0.01)
            if self.stats.updates != last:
                last, since = self.stats.updates, time.perf_counter()
            elif time.perf_counter() - since > stall_s:
                return

    @property
    def utd(self) -> float:
        """Realised updates per stored env step."""
        return self.stats.updates / max(1, self.sink.env_steps)
