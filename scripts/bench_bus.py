"""Feetech bus timing against the STS3215 emulator, and the fault soak.

    python scripts/bench_bus.py [--cycles 2000] [--soak 10000] [--json]

A control cycle is what the follower does every tick: a sync read of the 6 present
positions and a sync write of the 6 goals, through the real driver (pyserial on a
pseudo-terminal at 1 Mbaud, the emulator answering from a thread). The soak runs
``--soak`` cycles with 1% dropped and 1% corrupted replies and reports retries,
failures and the torque state at the end, read from the emulator's registers.
On real hardware add the wire time: about 0.2 ms per cycle at 1 Mbaud, plus the USB
adapter's latency.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from so101_sim2real.hardware.bus import MotorBus, MotorError
from so101_sim2real.hardware.emulator import BusEmulator, Faults
from so101_sim2real.hardware.joint_calibration import twin_calibration
from so101_sim2real.hardware.so101 import SO101Follower

RANGES = np.array([[-1.92, 1.92], [-1.75, 1.75], [-1.69, 1.69], [-1.66, 1.66], [-2.74, 2.84], [-0.17, 1.75]])


def cycles(n: int, faults: Faults, timeout_s: float) -> dict:
    cal = twin_calibration(RANGES)
    times, reported = [], 0
    with BusEmulator(list(range(1, 7)), faults, seed=7) as emu, MotorBus(emu.path, cal.ids, timeout_s=timeout_s) as bus:
        arm = SO101Follower(bus, cal)
        arm.connect()
        arm.torque(True)
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            try:
                state = arm.read()
                arm.write(state.position + rng.uniform(-0.02, 0.02, 6))
            except MotorError:
                reported += 1
            times.append(time.perf_counter() - t0)
        wall = time.perf_counter() - start
        arm.close()
        torque_off = all(emu.register(i, "torque_enable") == 0 for i in range(1, 7))
        ms = np.array(times) * 1e3
        return {"cycles": n, "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
                "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()), "hz": n / wall,
                "replies_lost": emu.stats["dropped"] + emu.stats["corrupted"], "writes_lost": emu.stats["lost_writes"],
                "retries": bus.stats.retries, "failures_reported": reported, "torque_off_at_end": torque_off}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--soak", type=int, default=10000)
    parser.add_argument("--timeout-ms", type=float, default=5.0, help="status packet timeout")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    rows = {"clean": cycles(args.cycles, Faults(), args.timeout_ms / 1e3),
            "soak (1% drop + 1% corrupt)": cycles(args.soak, Faults(drop=0.01, corrupt=0.01), args.timeout_ms / 1e3)}
    if args.json:
        print(json.dumps(rows))
        return
    print(f"control cycle = sync read 6 positions + one servo's load and temperature + sync write 6 goals, "
          f"emulator on a pty at 1 Mbaud, "
          f"timeout {args.timeout_ms:g} ms")
    print(f"{'run':<30}{'cycles':>8}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'Hz':>8}{'lost':>7}{'retries':>8}"
          f"{'failed':>7}  torque off")
    for name, r in rows.items():
        print(f"{name:<30}{r['cycles']:>8}{r['p50_ms']:>8.2f}{r['p95_ms']:>8.2f}{r['p99_ms']:>8.2f}{r['hz']:>8.0f}"
              f"{r['replies_lost']:>7}{r['retries']:>8}{r['failures_reported']:>7}  {r['torque_off_at_end']}")


if __name__ == "__main__":
    main()
