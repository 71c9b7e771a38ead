"""The emulated twin arm on a busy machine: does the driver's watchdog ever stop it?

    python scripts/bench_emulator_load.py [--minutes 30] [--busy 6] [--period 0.02] [--json]

Starts ``so101 emulate --twin`` as a subprocess and ``--busy`` busy-loop processes (the
default makes a load of about 6 on the 2-core build machine), then drives the follower
through the real driver (``MotorBus`` + ``SO101Follower``, built as ``infer`` builds them)
at ``--period``: every tick a read (sync read of 6 positions + one servo's load and
temperature) and a sync write of goals that sweep every joint. Reported: reads, failed
reads (absorbed by the follower), retries, the longest run of consecutive failed reads,
reply latency (request written -> that reply parsed) p50/p95/p99/max, replies that came
after their timeout, and whether the watchdog stopped the arm (and at which tick).
The measured load (runnable tasks sampled every 0.5 s, and the 1-minute loadavg) is
printed with the table: on a shared machine it is not only ours.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from so101_sim2real.hardware import protocol as P

BUSY_LOOP = "while True: pass"


@dataclass
class Record:
    """What one run saw; ``summary()`` is the table's row."""

    ticks: int = 0
    failed_reads: int = 0
    health_misses: int = 0  # a servo's load and temperature not read this tick (it waits for its turn)
    max_consecutive_failures: int = 0
    stopped_at_tick: int | None = None
    stop_reason: str = ""
    latencies_s: list[float] = field(default_factory=list)
    late_replies: int = 0  # requests that found a previous reply in the buffer: it came after its timeout
    overruns: int = 0  # ticks that took longer than the period
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # the bus's failed tries by kind (NoStatus, ...)
    torque_off_at_end: bool | None = None
    load_samples: list[int] = field(default_factory=list)
    loadavg_1min: float = 0.0
    timeout_ms: float = 0.0
    frames: int = 0  # camera frames read while driving (--camera)
    port_errors: list[str] = field(default_factory=list)  # the port itself failed (PortLost), while reading
    misses: list[tuple[float, int]] = field(default_factory=list)  # (ms waited, bytes there) per reply given up
    emulator_stats: dict = field(default_factory=dict)

    def summary(self) -> dict:
        ms = np.array(self.latencies_s or [0.0]) * 1e3
        out = {k: v for k, v in asdict(self).items() if k not in ("latencies_s", "load_samples")}
        out.update(replies=len(self.latencies_s), stopped=self.stopped_at_tick is not None,
                   latency_p50_ms=float(np.percentile(ms, 50)), latency_p95_ms=float(np.percentile(ms, 95)),
                   latency_p99_ms=float(np.percentile(ms, 99)), latency_max_ms=float(ms.max()),
                   runnable_mean=float(np.mean(self.load_samples)) if self.load_samples else 0.0)
        return out


class TimedTransport(P.Transport):
    """The driver's transport, timing each reply from its request and counting late ones."""

    def __init__(self, port: P.Port, timeout_s: float, record: Record):
        super().__init__(port, timeout_s)
        self.record, self._sent = record, 0.0

    def send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            if self.port.in_waiting:  # bytes nobody waited for: a reply that missed its timeout
                self.record.late_replies += 1
        super().send(data)
        self._sent = time.monotonic()

    def next_packet(self, deadline: float) -> tuple[P.Packet | None, bool]:
        try:
            pkt, corrupt = super().next_packet(deadline)
        except P.PortLost as exc:
            self.record.port_errors.append(str(exc)[:200])
            raise
        now = time.monotonic()
        if pkt is not None:
            self.record.latencies_s.append(now - self._sent)
        elif len(self.record.misses) < 50:  # given up: how long it waited, and whether bytes were there
            waiting = 0
            with contextlib.suppress(OSError):
                waiting = self.port.in_waiting
            self.record.misses.append((round((now - self._sent) * 1e3, 1), len(self._rx) + waiting))
        return pkt, corrupt


def sweep(start: np.ndarray, t: float, amplitude: float = 0.3, period_s: float = 4.0) -> np.ndarray:
    """Goals that move every joint about ``start``, each joint in its own phase."""
    phases = np.arange(len(start)) * (2 * np.pi / len(start))
    return start + amplitude * np.sin(2 * np.pi * t / period_s + phases)


def drive(robot: object, seconds: float, period_s: float, record: Record) -> None:
    """``infer``'s read/write cycle at its period, sweeping the arm, until ``seconds`` pass or the
    watchdog stops the arm (``record.stopped_at_tick``)."""
    from so101_sim2real.errors import DeviceFault

    start = None
    t0 = next_tick = time.monotonic()
    while time.monotonic() - t0 < seconds:
        record.ticks += 1
        try:
            state = robot.read()
            start = state.position.copy() if start is None else start
            robot.write(sweep(start, time.monotonic() - t0))
        except DeviceFault as exc:
            record.failed_reads += 1
            record.stopped_at_tick, record.stop_reason = record.ticks, str(exc)
            record.max_consecutive_failures = max(record.max_consecutive_failures, robot.failures)
            return
        record.failed_reads += robot.failures > 0  # it kept the last reading and counts on
        record.health_misses = robot.tolerated - record.failed_reads
        record.max_consecutive_failures = max(record.max_consecutive_failures, robot.failures)
        next_tick += period_s
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            record.overruns += 1
            next_tick = time.monotonic()


def connect(robot: object, record: Record) -> None:
    """The follower's connect and torque on; a failure is the run's stop (at tick 0), as for ``infer``."""
    from so101_sim2real.errors import So101Error

    try:
        robot.connect()
        robot.torque(True)
    except So101Error as exc:
        record.stopped_at_tick, record.stop_reason = 0, f"connect failed: {exc}"


def start_load(busy: int) -> list[subprocess.Popen]:
    """``busy`` processes that spin forever at normal priority."""
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]


def start_emulator(extra: list[str]) -> tuple[subprocess.Popen, str]:
    """``so101 emulate --twin`` and the pty path it prints first."""
    proc = subprocess.Popen([sys.executable, "-m", "so101_sim2real", "emulate", "--twin", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    path = proc.stdout.readline().strip()
    if not path:
        proc.kill()
        raise RuntimeError(f"so101 emulate --twin printed no port: {proc.stderr.read()[-2000:]}")
    return proc, path


def stop_emulator(proc: subprocess.Popen) -> dict:
    """SIGTERM (it then prints its stats on stderr), and those stats."""
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    for line in err.splitlines():
        if line.startswith("stopped; "):
            return json.loads(line[len("stopped; "):])
    return {}


def read_frames(port: str, record: Record, stop: threading.Event) -> None:
    """The twin's wrist camera read back to back, as a perceive-ahead loop does (``--camera twin``):
    the emulator renders each in its own thread while its servos keep answering."""
    from so101_sim2real.cameras import open_camera

    camera = open_camera("twin", port=port)
    try:
        while not stop.is_set():
            camera.read()
            record.frames += 1
    finally:
        camera.close()


def sample_load(record: Record, stop: threading.Event) -> None:
    """Runnable tasks on the machine (``procs_running``, this sampler included), every 0.5 s."""
    while not stop.wait(0.5):
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("procs_running"):
                    record.load_samples.append(int(line.split()[1]) - 1)


def run(minutes: float, busy: int, period_s: float, timeout_ms: float | None, extra: list[str],
        camera: bool = False) -> Record:
    from so101_sim2real.control.twin_bus import twin_arm_calibration
    from so101_sim2real.hardware.bus import MotorBus
    from so101_sim2real.hardware.so101 import SO101Follower

    record, stop = Record(), threading.Event()
    load, emulator = start_load(busy), None
    sampler = threading.Thread(target=sample_load, args=(record, stop), daemon=True)
    sampler.start()
    try:
        emulator, path = start_emulator(extra)
        cal = twin_arm_calibration()
        kwargs = {} if timeout_ms is None else {"timeout_s": timeout_ms / 1e3}
        bus = MotorBus(path, cal.ids, **kwargs)  # as the rig builds it: the driver picks the pty's timeout
        robot = SO101Follower(bus, cal)
        bus.open()
        bus.protocol.t = TimedTransport(bus.protocol.t.port, bus.protocol.t.timeout_s, record)
        record.timeout_ms = bus.protocol.t.timeout_s * 1e3
        try:
            connect(robot, record)
            if camera:
                threading.Thread(target=read_frames, args=(path, record, stop), daemon=True).start()
            if record.stopped_at_tick is None:
                drive(robot, minutes * 60, period_s, record)
        finally:
            with contextlib.suppress(Exception):
                robot.close()
            record.retries, record.errors = bus.stats.retries, dict(bus.stats.by_kind)
        record.torque_off_at_end = _torque_off(path, cal)
    finally:
        stop.set()
        record.loadavg_1min = os.getloadavg()[0]
        for proc in load:
            proc.kill()
            proc.wait()
        if emulator is not None:
            record.emulator_stats = stop_emulator(emulator)
    return record


def _torque_off(path: str, cal: object) -> bool | None:
    """Read back by a fresh connection: every servo's torque is off."""
    from so101_sim2real.hardware.bus import MotorBus

    try:
        with MotorBus(path, cal.ids) as bus:
            return all(v == 0 for v in bus.sync_read("torque_enable").values())
    except Exception:
        return None


COLUMNS = [("ticks", "ticks", "d"), ("failed reads", "failed_reads", "d"), ("max consec", "max_consecutive_failures",
           "d"), ("retries", "retries", "d"), ("late", "late_replies", "d"), ("p50 ms", "latency_p50_ms", ".2f"),
           ("p95 ms", "latency_p95_ms", ".2f"), ("p99 ms", "latency_p99_ms", ".2f"),
           ("max ms", "latency_max_ms", ".1f"), ("overruns", "overruns", "d"), ("stopped", "stopped", ""),
           ("torque off", "torque_off_at_end", "")]


def table(row: dict) -> str:
    head = "".join(f"{name:>12}" for name, _, _ in COLUMNS)
    body = "".join(f"{format(row[key], fmt):>12}" for _, key, fmt in COLUMNS)
    return f"{head}\n{body}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--busy", type=int, default=6, help="busy-loop processes for the background load")
    parser.add_argument("--period", type=float, default=0.02, help="control period, s (infer's default)")
    parser.add_argument("--timeout-ms", type=float, default=None, help="status timeout (default: the driver's)")
    parser.add_argument("--emulate-args", default="", help="more arguments for 'so101 emulate --twin'")
    parser.add_argument("--camera", action="store_true", help="also read the twin's camera back to back")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    record = run(args.minutes, args.busy, args.period, args.timeout_ms, args.emulate_args.split(), args.camera)
    row = {"minutes": args.minutes, "busy": args.busy, "period_s": args.period, **record.summary()}
    if args.json:
        print(json.dumps(row))
        return
    print(f"so101 emulate --twin {args.emulate_args}under {args.busy} busy loops: runnable tasks "
          f"{row['runnable_mean']:.1f} (mean), loadavg {row['loadavg_1min']:.1f}; {args.minutes:g} min at "
          f"{1e3 * args.period:g} ms, status timeout {row['timeout_ms']:g} ms"
          + (f", {row['frames']} camera frames" if args.camera else ""))
    print(table(row))
    if row["stopped"]:
        print(f"stopped at tick {row['stopped_at_tick']}: {row['stop_reason']}")
    print(f"replies given up (ms waited, bytes there): {row['misses'][:20]}")
    print(f"port errors: {row['port_errors'][:5]}")
    print(f"failed tries by kind: {row['errors']}; health reads missed: {row['health_misses']}; emulator: "
          f"{row['emulator_stats']}")


if __name__ == "__main__":
    main()
