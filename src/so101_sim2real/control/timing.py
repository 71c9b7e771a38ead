"""Per-stage latency statistics and rate keeping for the control loop."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


def p50_p95(values) -> tuple[float, float]:
    """The median and 95th percentile of ``values``, in their own unit."""
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


class StageTimer:
    """Collects wall-clock durations per named stage; reports p50/p95/mean in ms."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.samples[name].append(time.perf_counter() - start)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, values in self.samples.items():
            ms = np.asarray(values) * 1e3
            p50, p95 = p50_p95(ms)
            out[name] = {"p50_ms": p50, "p95_ms": p95, "mean_ms": float(ms.mean()), "count": int(ms.size)}
        return out


class TickTimer:
    """The loop's whole tick: wall time from one policy call to the next, less the rate keeper's
    sleep, and the loop thread's own CPU time within it. Wall minus CPU is the time the loop
    waited (for perception's next frame, a pool's worker, the GIL, a core): the part another
    thread's work can stretch."""

    def __init__(self) -> None:
        self.wall_s: list[float] = []
        self.cpu_s: list[float] = []
        self._at: tuple[float, float] | None = None

    def start(self) -> None:
        """A new episode: the next :meth:`lap` only marks where its first tick begins."""
        self._at = None

    def lap(self, idle_s: float = 0.0) -> None:
        """A tick ends and the next begins; ``idle_s`` of it the loop slept on purpose."""
        now = (time.perf_counter(), time.thread_time())
        if self._at is not None:
            self.wall_s.append(now[0] - self._at[0] - idle_s)
            self.cpu_s.append(now[1] - self._at[1])
        self._at = now

    def summary(self) -> dict[str, float]:
        """p50/p95 of the tick, of the loop thread's own CPU time in it, and of its waits (wall -
        CPU), in ms; empty before two ticks."""
        if not self.wall_s:
            return {}
        wall, cpu = np.asarray(self.wall_s) * 1e3, np.asarray(self.cpu_s) * 1e3
        (p50, p95), (w50, w95) = p50_p95(wall), p50_p95(np.maximum(wall - cpu, 0.0))
        return {"p50_ms": p50, "p95_ms": p95, "max_ms": float(wall.max()), "cpu_p50_ms": float(np.median(cpu)),
                "wait_p50_ms": w50, "wait_p95_ms": w95, "count": int(wall.size)}


class RateKeeper:
    """Holds a loop to a period when ``realtime``; otherwise runs as fast as it can.

    Deadlines advance by whole periods from the start, so one slow tick does not shift
    every later one; a tick that misses its deadline is counted, not made up for.
    """

    def __init__(self, period_s: float, realtime: bool):
        self.period, self.realtime = period_s, realtime
        self.overruns = 0
        self.ticks = 0  # deadlines held to (with ``overruns`` of them missed)
        self._next: float | None = None

    def start(self) -> None:
        self._next = time.perf_counter() + self.period

    def wait(self) -> None:
        if not self.realtime:
            return
        if self._next is None:
            self.start()
        assert self._next is not None  # start() set it
        self.ticks += 1
        now = time.perf_counter()
        if now < self._next:
            time.sleep(self._next - now)
            self._next += self.period
        else:
            self.overruns += 1
            self._next = now + self.period
