"""HIL-SERL in one process: the actor loop in this thread, the learner in another, one buffer.

The actor thread is the ordinary :class:`Runner` (the env, perception, controller, safety
and torque handling every command uses) with a :class:`LearningPilot` and a
:class:`BufferSink`. The learner thread samples the shared :class:`ReplayBuffer`, runs
DrQ-v2 updates, and every ``publish_every`` updates publishes the encoder and the
actor together to the :class:`PolicySlot` the pilot reads between ticks. No sockets,
no serialisation.

Pacing: the learner runs at most ``utd`` updates per stored env step and, on a CPU,
with its own small thread budget in the OS's idle class (:mod:`so101_sim2real.scheduling`:
served only when the actor wants no core), so the actor's control period holds and the
learner, not the actor, slows down when the machine cannot do both; on a GPU it runs
free up to ``utd`` (its thread in the idle class as well). Between episodes the actor may wait
for the learner to reach ``min_utd`` (a real arm's reset gap is that time). The
realised ratio is reported (the user's configured UTD 20 really ran at 3.9). The trainer
takes a resolved config: what the person left to the machine (the batch size, ``utd``,
``min_utd``) is chosen before it is built (:func:`so101_sim2real.hilserl.pace.resolve`).

The trainer owns its state: it is built with where the session starts
(:class:`~so101_sim2real.hilserl.episode_record.SessionStart`), and it says where it
stands through :meth:`Trainer.progress` and one
:class:`~so101_sim2real.hilserl.episode_record.EpisodeRecord` per episode.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import torch

from so101_sim2real.control.env import Env
from so101_sim2real.control.interveners import Intervener
from so101_sim2real.control.recording import Recorder
from so101_sim2real.control.runner import EpisodeResult, Judge, Runner, RunSummary, VideoSink
from so101_sim2real.control.timing import RateKeeper
from so101_sim2real.errors import DeviceFault, So101Error
from so101_sim2real.hilserl.actor import BufferSink, LearningPilot, PolicySlot
from so101_sim2real.hilserl.episode_record import EpisodeRecord, Progress, SessionStart
from so101_sim2real.hilserl.learner import Learner, LearnerConfig, UpdateMetrics
from so101_sim2real.hilserl.replay import ReplayBuffer
from so101_sim2real.hilserl.rewards import RewardSource
from so101_sim2real.perception.backends import usable_cores
from so101_sim2real.policy.checkpoint import Checkpoint
from so101_sim2real.policy.runtime import Policy, build_agent
from so101_sim2real.scheduling import background_thread
from so101_sim2real.spec import Spec


@dataclass(frozen=True)
class TrainConfig:
    """The run's knobs beside the learner's."""

    learner: LearnerConfig = field(default_factory=LearnerConfig)
    capacity: int = 100_000  # transitions in the online store (the demo store gets the same)
    n_step: int = 3
    gamma: float = 0.99
    # None (auto): chosen at start for this machine, as learner.batch_size (hilserl/pace.py)
    utd: float | None = None  # at most this many updates per stored env step
    min_utd: float | None = None  # between episodes, the actor waits until the learner has made this many (0: never)
    warmup_steps: int = 500  # env steps of critic-only updates before the actor moves (the benchmark's)
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
    priority: str = ""  # the learner thread's place in the OS scheduler (e.g. SCHED_IDLE), once it runs


def new_buffer(spec: Spec, cfg: TrainConfig, seed: int | None = None) -> ReplayBuffer:
    """An empty replay buffer for a policy of ``spec`` (``seed``: its draws; None: the config's seed)."""
    obs = spec.observation
    return ReplayBuffer(cfg.capacity, (len(obs.channels), *obs.image_size), spec.state.size, spec.action.dim,
                        obs.frame_stack, cfg.n_step, cfg.gamma, seed=cfg.seed if seed is None else seed)


def _pace_of(cfg: TrainConfig) -> tuple[int, float, float]:
    """The batch size, UTD cap and ``min_utd`` of a resolved config; refuses an unresolved one."""
    batch, utd, min_utd = cfg.learner.batch_size, cfg.utd, cfg.min_utd
    if batch is None or utd is None or min_utd is None:
        auto = [name for name, value in (("learner.batch_size", batch), ("utd", utd), ("min_utd", min_utd))
                if value is None]
        raise ValueError(f"the config leaves {', '.join(auto)} to be chosen: resolve it first "
                         f"(so101_sim2real.hilserl.pace.resolve) or set them")
    return batch, utd, min_utd


class Trainer:
    """One HIL-SERL run in an env: build once, ``run`` episodes.

    ``start``: where the session starts (the run's counters, its random streams, what it
    says first; a new run's zeros by default). ``buffer``: the replay buffer it starts with
    (:func:`new_buffer` with ``start.sample_seed``, demos and the run's episodes in it; by
    default an empty one). ``policy``: the acting copy of the checkpoint (the one the control
    period was measured with; by default a new one). ``restore``: brings the learner's
    optimiser states back (a run folder's ``load_optimisers``). ``lower``: what the learner's
    thread calls first to give the actor way (the OS's idle class; a benchmark compares nice 19)."""

    def __init__(self, env: Env, ckpt: Checkpoint, cfg: TrainConfig, intervener: Intervener, rewards: RewardSource,
                 device: str = "cpu", recorder: Recorder | None = None, start: SessionStart | None = None,
                 buffer: ReplayBuffer | None = None, policy: Policy | None = None,
                 restore: Callable[[Learner], object] | None = None,
                 lower: Callable[[], str] = background_thread):
        self.env, self.cfg = env, cfg
        self._lower = lower
        self.batch_size, self.utd_cap, self.min_utd = _pace_of(cfg)
        self.start = start = start or SessionStart()
        self.learner = Learner(build_agent(ckpt), cfg.learner, device, seed=cfg.seed)
        self.learner.updates = start.updates  # the count the weights carry (a Learner counts from 0)
        if restore is not None:
            restore(self.learner)
        self.buffer = buffer if buffer is not None else new_buffer(ckpt.spec, cfg, start.sample_seed)
        self.slot = PolicySlot()
        self.slot.publish(self.learner.policy_weights())  # the actor has the starting weights before step one
        explore_seed = cfg.seed if start.explore_seed is None else start.explore_seed
        self.pilot = LearningPilot(policy or Policy(ckpt, "cpu"), self.slot, intervener, cfg.learner.std,
                                   cfg.learner.std_clip, seed=explore_seed, first_episode=start.episodes)
        self.sink = BufferSink(self.buffer, self.pilot, rewards, recorder, env_steps=start.env_steps, twin=env.twin)
        self.stats = LearnerStats(updates=start.updates)
        self.rate: RateKeeper | None = None  # the actor loop's, while a run goes on
        self._stop = threading.Event()
        self._catching_up = threading.Event()  # the actor waits for the learner (between episodes)
        self._episodes, self._next_seed = start.episodes, start.next_seed
        # at the previous record (or the run's start): time, updates, overruns, takeovers
        self._mark: tuple[float, int, int, int | None] = (time.perf_counter(), start.updates, 0, None)

    # ------------------------------------------------------------------ the learner thread

    def _ready(self) -> bool:
        env = self.sink.env_steps
        return env >= self.batch_size and self.stats.updates < self.utd_cap * env

    def _learner_threads(self) -> int:
        """The learner's CPU threads now: its own budget while the actor runs, every core this
        process may use while the actor waits for it between episodes (nothing else runs then)."""
        return usable_cores() if self._catching_up.is_set() else self.cfg.learner_threads

    def _learn(self) -> None:
        cfg = self.cfg
        cpu = self.learner.device.type == "cpu"
        threads = cfg.learner_threads
        # first, so that every thread it starts (torch's pool when it catches up) inherits the class;
        # on a GPU too, where the thread launches kernels from Python (unmeasured: no GPU was lent)
        self.stats.priority = self._lower()
        if cpu:
            torch.set_num_threads(threads)  # this thread's budget; the actor keeps its own
        try:
            while not self._stop.is_set():
                wanted = self._learner_threads() if cpu else threads
                if wanted != threads:
                    threads = wanted
                    torch.set_num_threads(threads)
                if not self._ready():
                    time.sleep(0.002)
                    continue
                try:
                    batch = self.buffer.sample(self.batch_size)
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

    def run(self, episodes: int, first_seed: int | None = None, realtime: bool = False,
            on_episode: Callable[[EpisodeRecord], None] | None = None, max_steps: int | None = None,
            judge: Judge | None = None, on_fault: Callable[[DeviceFault], object] | None = None,
            video: VideoSink | None = None) -> RunSummary:
        """Episodes on the env while the learner learns; Ctrl-C ends both, torque off. The seeds
        go on from ``first_seed`` (by default the start's next seed). ``on_episode`` gets each
        episode's :class:`EpisodeRecord`. ``judge`` (the person's keys) decides success over the
        task; by default a reward classifier does. ``on_fault`` waits out a device fault
        (:mod:`~so101_sim2real.control.pause`); the learner goes on meanwhile, and the episode
        the fault cut is thrown away and run again. ``video`` takes each tick's composed frame
        (a :class:`~so101_sim2real.control.window.LiveWindow`)."""
        learner = threading.Thread(target=self._learn, name="hilserl-learner", daemon=True)
        self._stop.clear()
        first_seed = self._next_seed if first_seed is None else first_seed

        def episode_done(result: EpisodeResult) -> None:
            self._catch_up()
            if self.stats.error is not None:
                raise So101Error(f"the learner stopped: {self.stats.error}") from self.stats.error
            record = self._record(result)
            if on_episode:
                on_episode(record)

        if judge is None and hasattr(self.sink.rewards, "judge"):  # a reward classifier
            judge = cast(Judge, self.sink.rewards)  # a ClassifierReward: a Judge
        runner = Runner(self.env, self.pilot, realtime=realtime, on_episode=episode_done, transitions=self.sink,
                        max_steps=max_steps, judge=judge, on_fault=on_fault, video=video)
        self.rate = runner.rate  # its overrun count, read per episode
        self._mark = (time.perf_counter(), self.learner.updates, 0, self._takeovers())
        learner.start()
        try:
            return runner.run([first_seed + i for i in range(episodes)])
        finally:
            self._stop.set()
            learner.join()

    # ------------------------------------------------------------------ what it says about itself

    def _takeovers(self) -> int | None:
        """A person's leader takeovers so far (None: the intervener is not a person's)."""
        return getattr(self.pilot.intervener, "takeovers", None)

    def progress(self) -> Progress:
        """Where the session stands now (safe to call from another thread)."""
        last, transitions = self.stats.last, len(self.buffer)
        return Progress(
            env_steps=self.sink.env_steps, updates=self.learner.updates, utd=self.utd,
            interventions=self.sink.interventions, takeovers=self._takeovers(),
            overruns=0 if self.rate is None else self.rate.overruns, buffer=transitions,
            buffer_mb=transitions * self.buffer.bytes_per_transition / 1e6,
            critic_loss=None if last is None else last.critic_loss,
            actor_loss=None if last is None else last.actor_loss, q_mean=None if last is None else last.q_mean,
            control=self.pilot.control, success_p=getattr(self.sink.rewards, "last_p", None))

    def _record(self, result: EpisodeResult) -> EpisodeRecord:
        """The episode that just ended, with the session's progress, counted into the run."""
        now, progress = time.perf_counter(), self.progress()
        then, updates, overruns, takeovers = self._mark
        self._mark = (now, progress.updates, progress.overruns, progress.takeovers)
        self._episodes, self._next_seed = self._episodes + 1, self._next_seed + 1
        return EpisodeRecord(
            **dataclasses.asdict(progress), episode=self._episodes, seed=result.seed, success=result.success,
            steps=result.steps,
            ret=self.sink.episode_return,  # the learner's return, as the sink summed it for the episode's file
            interrupted=result.interrupted, next_seed=self._next_seed,
            episode_interventions=self.sink.episode_interventions,
            episode_takeovers=None if takeovers is None or progress.takeovers is None
            else progress.takeovers - takeovers,
            episode_overruns=progress.overruns - overruns,
            updates_per_s=(progress.updates - updates) / max(now - then, 1e-9), period_s=self.env.period_s,
            task_success=self.sink.episode_task_success if self.env.scored else None)

    def _catch_up(self, stall_s: float = 30.0) -> None:
        """Between episodes (the reset gap a real arm has anyway) hold the actor until the learner
        has made ``min_utd`` updates per env step of this session: on a CPU the renderer leaves it
        little during an episode. Gives up when the learner makes no progress for ``stall_s``; no
        wait before the buffer holds a batch's worth of env steps (the learner cannot start before)."""
        if self.sink.env_steps < self.batch_size:
            return
        # this session's own steps: a resumed run that learned less before (another machine, another
        # min_utd) does not hold the arm for the difference
        target = self.start.updates + self.min_utd * (self.sink.env_steps - self.start.env_steps)
        if self.stats.updates >= target:
            return
        last, since = self.stats.updates, time.perf_counter()
        self._catching_up.set()
        try:
            while self.stats.updates < target and self.stats.error is None:
                time.sleep(0.01)
                if self.stats.updates != last:
                    last, since = self.stats.updates, time.perf_counter()
                elif time.perf_counter() - since > stall_s:
                    return
        finally:
            self._catching_up.clear()

    @property
    def utd(self) -> float:
        """Realised updates per stored env step."""
        return self.stats.updates / max(1, self.sink.env_steps)
