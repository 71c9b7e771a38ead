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
