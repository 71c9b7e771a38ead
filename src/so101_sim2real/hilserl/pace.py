"""The learner's pace, chosen at start for the machine the session runs on.

A DrQ-v2 update at the recipe's batch 256 takes ~1.3 s on one CPU thread; with no wait
between episodes a twin session then makes ~0.01 updates per env step: it collects data
and barely learns. So whichever of ``learner.batch_size``, ``utd`` and ``min_utd`` the
person left unset (None, "auto") is chosen here from what this machine measures:

- the target UTD: 1.0 on a GPU or with a frozen encoder, 0.5 for the full update on a CPU;
- the batch: the largest candidate whose learning per env step (target x seconds per
  update) fits in one control period, else the smallest measured (the learner falls
  behind while an episode runs, and the smallest batch loses the least time);
- ``min_utd`` = the target: between episodes the actor waits until the learner has made
  that many updates per env step, which is what guarantees the realised UTD;
- the ``utd`` cap = max(1, 2 x target): the learner may use idle time beyond the target.

The choice (:class:`PaceChoice`) is printed among the session's start notes and kept in the
run folder's run.yaml (``pace:``); the config there keeps "auto", so a resume on another
machine measures again. The measurement is remembered beside the model cache, keyed by all
that decides an update's time (:func:`remembered_measure`): the next start on the same
machine with the same network and settings skips the few seconds it takes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from so101_sim2real.errors import So101Error
from so101_sim2real.files import write_file
from so101_sim2real.hilserl.learner import LearnerConfig, seconds_per_update
from so101_sim2real.hilserl.trainer import TrainConfig
from so101_sim2real.machine import describe_cpu
from so101_sim2real.perception.backends import thread_budget
from so101_sim2real.policy.networks import DrQV2Agent

# batch sizes tried; 256 is the recipe's (and the anchors') batch. Not 32: in the transfer benchmark the
# full update at batch 32 (UTD 0.5) gained 5 points where batch 64 gained 65 (README).
CANDIDATES = (256, 128, 64)
CPU_TARGET, FAST_TARGET = 0.5, 1.0  # updates per env step: the full update on a CPU; a GPU or a frozen encoder
MEASURE_BUDGET_S = 3.0  # start-up time for measuring beyond the smallest candidate
SETTINGS = ("batch_size", "utd", "min_utd")  # the three the pace may choose (learner.batch_size, utd, min_utd)


@dataclass(frozen=True)
class PaceChoice:
    """What a session's start chose for the learner's pace, and why."""

    batch_size: int
    utd: float  # the cap: at most this many updates per stored env step
    min_utd: float  # between episodes the actor waits until the learner has made this many per env step
    seconds_per_update: dict[int, float]  # measured at start, per batch size
    reason: str  # one sentence
    chosen: tuple[str, ...]  # which of SETTINGS were chosen (the others were set by the person)
    device: str = "cpu"
    threads: int | None = None  # the learner's torch threads on a CPU (None: a GPU)
    period_s: float | None = None  # the env's control period the choice was measured against
    remembered: bool = False  # the measurement came from an earlier start on this machine (same key)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for run.yaml."""
        data = dataclasses.asdict(self)
        data["seconds_per_update"] = {int(b): float(s) for b, s in self.seconds_per_update.items()}
        data["chosen"] = list(self.chosen)
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "pace") -> PaceChoice:
        """A choice as :meth:`to_dict` wrote it; a one-line error for anything else."""
        try:
            fields = {f.name for f in dataclasses.fields(cls)}
            if not isinstance(data, dict) or not set(data) <= fields:
                raise TypeError(f"expected a mapping of {', '.join(sorted(fields))}")
            timed = {int(b): float(s) for b, s in (data.get("seconds_per_update") or {}).items()}
            threads, period = data.get("threads"), data.get("period_s")
            return cls(batch_size=int(data["batch_size"]), utd=float(data["utd"]), min_utd=float(data["min_utd"]),
                       seconds_per_update=timed, reason=str(data.get("reason", "")),
                       chosen=tuple(str(c) for c in data.get("chosen") or ()), device=str(data.get("device", "cpu")),
                       threads=None if threads is None else int(threads),
                       period_s=None if period is None else float(period),
                       remembered=bool(data.get("remembered", False)))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise So101Error(f"{source}: not a pace choice ({exc})") from None

    def lines(self) -> list[str]:
        """What the session prints at start: the three settings and the measurements, then why."""
        def mark(name: str) -> str:
            return "" if name in self.chosen else " (set)"

        timed = ", ".join(f"{_seconds(s)} at batch {b}" for b, s in sorted(self.seconds_per_update.items()))
        plural = "s" if self.threads != 1 else ""
        where = f"on {self.threads} CPU thread{plural}" if self.threads else f"on {self.device}"
        if self.remembered:
            where += " (measured at an earlier start on this machine)"
        return [f"learner pace: batch {self.batch_size}{mark('batch_size')}, min_utd {self.min_utd:g}"
                f"{mark('min_utd')}, utd cap {self.utd:g}{mark('utd')}; an update takes {timed or 'not measured'} "
                f"{where}",
                f"learner pace: {self.reason}"]


def _seconds(s: float) -> str:
    return f"{s * 1e3:.0f} ms" if s < 0.1 else f"{s:.2f} s"


def _is_cpu(device: str) -> bool:
    return device.split(":")[0] == "cpu"


def measure(agent: DrQV2Agent, cfg: LearnerConfig, device: str = "cpu", threads: int | None = None,
            candidates: tuple[int, ...] = CANDIDATES, budget_s: float = MEASURE_BUDGET_S) -> dict[int, float]:
    """Seconds per update of ``agent`` under ``cfg`` at each candidate batch size, smallest first,
    on ``threads`` torch threads (the learner thread's budget on a CPU). The smallest is always
    measured; a larger one only while the time spent beyond the smallest (its first update
    pays torch's warm-up) and the next one's estimate stay within ``budget_s``."""
    measured: dict[int, float] = {}
    spent, last = 0.0, None
    with thread_budget(threads if _is_cpu(device) else None):
        for batch in sorted(set(candidates)):
            if last is not None:
                estimate = 3 * measured[last] * batch / last  # an untimed update and two timed ones
                if spent + estimate > budget_s:
                    break
            started = time.perf_counter()
            measured[batch] = seconds_per_update(agent, cfg, device, batch_size=batch)
            if last is not None:
                spent += time.perf_counter() - started
            last = batch
    return measured


def target_utd(frozen: bool, device: str) -> float:
    """The updates per env step a session aims at: 1 on a GPU or with a frozen encoder, 0.5 for
    the full update on a CPU."""
    return FAST_TARGET if frozen or not _is_cpu(device) else CPU_TARGET


def choose(measured: dict[int, float], period_s: float, frozen: bool, device: str
           ) -> tuple[int, float, float, str]:
    """Batch size, UTD cap, ``min_utd`` and the reason (one sentence) from the measured seconds
    per update per batch size and the env's control period. See the module docstring for the rule."""
    if not measured:
        raise ValueError("choose needs at least one measured batch size")
    target = target_utd(frozen, device)
    why = "a GPU" if not _is_cpu(device) else ("a frozen encoder" if frozen else "the full update on a CPU")
    fits = [b for b, s in measured.items() if target * s <= period_s]
    batch = max(fits) if fits else min(measured)
    per_step = target * measured[batch]
    aim = f"UTD target {target:g} ({why})"
    if fits:
        which = "the largest measured batch that does" if len(measured) > 1 else "it keeps up"
        reason = (f"{aim}: batch {batch} needs {_seconds(per_step)} of learning per env step, within the "
                  f"{_seconds(period_s)} control period ({which})")
    else:
        which = "even the smallest measured batch" if len(measured) > 1 else "batch"
        reason = (f"{aim}: {which} {batch} needs {_seconds(per_step)} of learning per env step against the "
                  f"{_seconds(period_s)} control period, so the actor waits between episodes until UTD "
                  f"{target:g} (the session runs slower than the arm could)")
    return batch, max(1.0, 2 * target), target, reason


def unresolved(cfg: TrainConfig) -> tuple[str, ...]:
    """Which of the pace's settings ``cfg`` leaves to be chosen (None: auto)."""
    values = {"batch_size": cfg.learner.batch_size, "utd": cfg.utd, "min_utd": cfg.min_utd}
    return tuple(name for name in SETTINGS if values[name] is None)


def resolve(cfg: TrainConfig, agent: DrQV2Agent, device: str, period_s: float, threads: int | None
            ) -> tuple[TrainConfig, PaceChoice | None]:
    """``cfg`` with its auto batch size, UTD cap and ``min_utd`` chosen for this machine (each one
    the person set is kept), and the choice; ``cfg`` unchanged and None when all three are set.
    ``threads``: the learner's torch threads on a CPU. A set batch size is the only one measured."""
    chosen = unresolved(cfg)
    if not chosen:
        return cfg, None
    candidates = CANDIDATES if cfg.learner.batch_size is None else (cfg.learner.batch_size,)
    cpu_threads = threads if _is_cpu(device) else None
    measured, remembered = remembered_measure(agent, cfg.learner, device, cpu_threads, candidates)
    batch, utd, min_utd, reason = choose(measured, period_s, cfg.learner.freeze_encoder, device)
    utd = utd if cfg.utd is None else cfg.utd
    min_utd = min_utd if cfg.min_utd is None else cfg.min_utd
    if "min_utd" in chosen and min_utd > utd:  # never wait for updates the cap forbids
        min_utd = utd
        reason += f"; min_utd {min_utd:g}, the set utd cap"
    if "utd" in chosen:
        utd = max(utd, min_utd)  # a set min_utd above the usual cap: the cap makes room for it
    resolved = dataclasses.replace(cfg, utd=utd, min_utd=min_utd,
                                   learner=dataclasses.replace(cfg.learner, batch_size=batch))
    return resolved, PaceChoice(batch, utd, min_utd, measured, reason, chosen, device, cpu_threads, period_s,
                                remembered)


def remembered_measure(agent: DrQV2Agent, cfg: LearnerConfig, device: str, threads: int | None,
                       candidates: tuple[int, ...]) -> tuple[dict[int, float], bool]:
    """:func:`measure`, remembered per machine: keyed by all that decides an update's time (the
    network's shapes, every learner setting but the batch, the device, the threads, the CPU and
    its flags, torch's version, the candidates), in ``<model cache>/../pace``. True when remembered."""
    key = {"arch": repr(agent.arch), "learner": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "batch_size"},
           "device": device, "threads": threads, "cpu": describe_cpu(), "torch": torch.__version__,
           "candidates": sorted(set(candidates)), "budget_s": MEASURE_BUDGET_S}
    path = pace_dir() / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32] + ".json")
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        return {int(b): float(s) for b, s in json.loads(path.read_text()).items()}, True
    measured = measure(agent, cfg, device, threads, candidates)
    with contextlib.suppress(OSError):  # a read-only cache: measure again next time
        write_file(path, json.dumps({str(b): s for b, s in measured.items()}))
    return measured, False


def pace_dir() -> Path:
    """Remembered measurements live beside the model cache (as the exported graphs do)."""
    from so101_sim2real.perception.hub import cache_dir

    return cache_dir().parent / "pace"
