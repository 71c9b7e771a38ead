"""The OS scheduler's view of this process's threads: who runs first when both want a core.

HIL-SERL runs the actor (the arm's control loop, real time) and the learner (throughput)
in one process. When both want the same cores the actor must win at once, every time.
Nice 19 is not enough for that: Linux's scheduler (EEVDF) still lets a nice-19 thread
finish its slice before a woken nice-0 thread runs on that core, and an actor whose
policy waits at a thread-pool barrier for a worker queued behind the learner lost tens of
milliseconds a tick (p95 with/without the learner 1.35-2.02 on a 2-core Xeon; docs/actor_period.md).
``SCHED_IDLE`` threads get a core when no normal thread wants it, and a tiny weighted share
(~0.3% against each busy normal thread, of any process) when one does; a waking normal
thread preempts them at once. An unprivileged process may put its own threads there. Where
the OS has no such class the thread falls back to nice 19. The cost: other busy programs on
the machine starve the learner too, which then learns slowly (the session reports its
updates/s), while the arm keeps its period.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

POLICY_NAMES = {0: "normal", 1: "fifo", 2: "rr", 3: "batch", 5: "idle", 6: "deadline"}


def idle_class() -> bool:
    """Whether this OS has a per-thread idle class (Linux's ``SCHED_IDLE``)."""
    return hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE")


def background_thread(idle: bool = True) -> str:
    """Make the calling thread (and the threads it starts later: pools inherit it) the one the OS
    serves last; returns what it got, e.g. ``SCHED_IDLE`` or ``nice 19``. ``idle`` False: nice 19
    only (what the learner had before; benchmarks compare the two)."""
    tid = threading.get_native_id()
    if idle and idle_class():
        with contextlib.suppress(OSError):
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            return "SCHED_IDLE"
    if hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, 19)
            return "nice 19"
    return "normal (this OS lowers no thread)"


@dataclass(frozen=True)
class ThreadInfo:
    """One thread of this process as the OS sees it."""

    tid: int
    name: str
    policy: str  # normal, batch, idle, ...
    nice: int
    cpu_s: float  # user + system time so far


def process_threads() -> list[ThreadInfo]:
    """Every thread of this process with its scheduling class, nice value and CPU time (Linux's
    /proc; empty elsewhere). Threads that end while being read are left out."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out = []
    for task in sorted(Path("/proc/self/task").glob("*")) if Path("/proc/self/task").is_dir() else []:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()  # fields from the 3rd on (state first)
        utime, stime, nice, policy = int(fields[11]), int(fields[12]), int(fields[16]), int(fields[38])
        out.append(ThreadInfo(int(task.name), name, POLICY_NAMES.get(policy, str(policy)), nice,
                              (utime + stime) / tick))
    return out
