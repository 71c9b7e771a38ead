"""A stateful STS3215 bus on a pseudo-terminal: the driver's stand-in for a real arm.

Each emulated servo has a register file (EEPROM and SRAM, with the lock and torque
rules: EEPROM writes only take with torque off and lock 0), model 777 and a firmware
version, moves toward its goal at a bounded speed when torque is on, and reports load
and temperature. A servo answers only at its own baud rate (read from the line's
termios, so ``motors setup`` changing a baud rate behaves as on hardware). Faults can
be injected: dropped replies (and dropped parts of sync writes), corrupted checksums,
late replies, missing IDs and error bits.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import select
import termios
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field

from so101_sim2real.arm import CENTRE_TICK
from so101_sim2real.errors import So101Error
from so101_sim2real.hardware import protocol as P
from so101_sim2real.hardware.registers import BAUD_RATES, EEPROM_END, MODEL_STS3215, REGISTERS

FIRMWARE = (3, 10)
MAX_SPEED_TICKS_S = 2900.0  # about 255 deg/s, an STS3215 at 7.4 V without load
# A first-order thermal model: at full load a servo heats 0.5 C/s and settles 60 C above the
# room with a 2-minute time constant (a stalled STS3215 reaches its 70 C cut-off in minutes).
AMBIENT_C, HEAT_C_PER_S, COOL_TAU_S = 28.0, 0.5, 120.0
_READ_ONLY = {r.address + i for r in REGISTERS.values() if not r.writable for i in range(r.size)}
_TERMIOS_BAUD = {getattr(termios, f"B{b}"): b for b in BAUD_RATES.values() if hasattr(termios, f"B{b}")}


@dataclass(frozen=True)
class Faults:
    """Injected faults; probabilities are per reply (and per servo part of a sync write)."""

    drop: float = 0.0
    corrupt: float = 0.0
    late: float = 0.0
    late_s: float = 0.05
    missing: frozenset[int] = frozenset()
    error_bits: dict[int, int] = field(default_factory=dict)  # servo id -> error byte in every reply

    @classmethod
    def parse(cls, text: str) -> Faults:
        """``"drop=0.01,corrupt=0.01,late=0.001,missing=5,error=3:4"`` (missing/error repeatable)."""
        kwargs: dict = {"missing": set(), "error_bits": {}}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise So101Error(f"@faults: {item!r} needs a value (KEY=VALUE)")
            try:
                if key in ("drop", "corrupt", "late", "late_s"):
                    kwargs[key] = float(value)
                    if key != "late_s" and not 0 <= kwargs[key] <= 1:
                        raise ValueError
                elif key == "missing":
                    kwargs["missing"].add(int(value))
                elif key == "error":
                    sid, _, bits = value.partition(":")
                    kwargs["error_bits"][int(sid)] = int(bits)
                else:
                    raise KeyError
            except (KeyError, ValueError):
                raise So101Error(f"@faults: cannot read {item!r}; use drop=P, corrupt=P, late=P (probabilities "
                                 f"from 0 to 1), late_s=S, "
                                 f"missing=ID, error=ID:BITS, comma separated") from None
        kwargs["missing"] = frozenset(kwargs["missing"])
        return cls(**kwargs)


class Servo:
    """One STS3215: a register file and a shaft that moves toward the goal."""

    def __init__(self, servo_id: int, position: int = CENTRE_TICK, clock: Callable[[], float] = time.monotonic):
        self.regs = bytearray(128)
        self.clock = clock
        self.actual = float(position)  # encoder ticks before the homing offset
        self.temperature = AMBIENT_C
        self.stop_at: float | None = None  # an object in the way: the shaft cannot pass this tick count
        self.held: float | None = None  # a hand holding the shaft here, stronger than the motor
        self._side = 1
        self.pending: tuple[int, bytes] | None = None  # a REG_WRITE waiting for ACTION
        self._t = clock()
        defaults = {"firmware_major": FIRMWARE[0], "firmware_minor": FIRMWARE[1], "model_number": MODEL_STS3215,
                    "id": servo_id, "baud_rate": 0, "return_delay": 250, "min_position_limit": 0,
                    "max_position_limit": 4095, "max_torque": 1000, "p_coefficient": 32, "d_coefficient": 32,
                    "protection_current": 500, "overload_torque": 80, "torque_enable": 0, "lock": 1,
                    "present_voltage": 120, "present_temperature": 28, "max_acceleration": 254}
        for name, value in defaults.items():
            self._set(name, value)
        self._set("goal_position", self._present())

    # register file ---------------------------------------------------------------------------

    def _get(self, name: str) -> int:
        r = REGISTERS[name]
        return r.decode(bytes(self.regs[r.address:r.address + r.size]))

    def _set(self, name: str, value: int) -> None:
        r = REGISTERS[name]
        self.regs[r.address:r.address + r.size] = r.encode(value)

    @property
    def servo_id(self) -> int:
        return self._get("id")

    @property
    def baud(self) -> int:
        return BAUD_RATES.get(self._get("baud_rate"), -1)

    @property
    def torque(self) -> bool:
        return bool(self._get("torque_enable"))

    @property
    def homing_offset(self) -> int:
        return self._get("homing_offset")

    def _present(self) -> int:
        return round(self.actual) - self._get("homing_offset")

    # physics --------------------------------------------------------------------------------

    def update(self) -> None:
        now = self.clock()
        dt, self._t = now - self._t, now
        goal = None
        if self.torque:
            lo, hi = self._get("min_position_limit"), self._get("max_position_limit")
            goal = min(max(self._get("goal_position"), lo), hi) + self._get("homing_offset")
        velocity, error = self._move(dt, goal)
        if goal is None:
            self._set("goal_position", self._present())  # limp: the goal follows the shaft
        cap = min(1000, self._get("max_torque"))  # the torque limit caps the drive's duty (0.1 %)
        load = int(max(-cap, min(cap, error * 2)))
        self._heat(dt, abs(load))
        self._set("present_position", self._present())
        self._set("present_velocity", int(max(-32767, min(32767, velocity))))
        self._set("present_load", load)
        self._set("present_current", abs(load) // 2)
        self._set("present_temperature", int(round(self.temperature)))

    def _heat(self, dt: float, load: int) -> None:
        settle = AMBIENT_C + HEAT_C_PER_S * COOL_TAU_S * load / 1000
        self.temperature = settle + (self.temperature - settle) * math.exp(-max(dt, 0.0) / COOL_TAU_S)

    def _move(self, dt: float, goal: float | None) -> tuple[float, float]:
        """Turn the shaft toward ``goal`` (encoder ticks; None: torque off) for ``dt`` s; (velocity, error)."""
        if self.held is not None:  # the hand wins; the motor only pushes against it
            step, self.actual = self.held - self.actual, self.held
            return (step / dt if dt > 0 else 0.0), (0.0 if goal is None else goal - self.actual)
        if goal is None:
            return 0.0, 0.0
        speed = abs(self._get("goal_velocity")) or MAX_SPEED_TICKS_S
        error = goal - self.actual
        step = max(-speed * dt, min(speed * dt, error))
        moved = self.actual + step
        if self.stop_at is not None:  # held by what it presses on, from the side it came from
            if self.actual != self.stop_at:
                self._side = 1 if self.actual > self.stop_at else -1
            moved = max(moved, self.stop_at) if self._side > 0 else min(moved, self.stop_at)
        step, self.actual = moved - self.actual, min(max(moved, 0.0), 4095.0)
        return (step / dt if dt > 0 else 0.0), error

    def move_to(self, actual: float) -> None:
        """A hand moving the shaft (a leader arm, a test): only while torque is off."""
        if not self.torque:
            self.actual = float(min(max(actual, 0.0), 4095.0))
            self.update()

    def grab(self, actual: float) -> None:
        """A hand holding the shaft at ``actual`` ticks, torque on or off (a person overpowering a
        low-gain leader); it stays there until moved again or let go."""
        self.update()
        self.held = float(min(max(actual, 0.0), 4095.0))
        self.update()

    def let_go(self) -> None:
        self.update()
        self.held = None

    # protocol-level access -------------------------------------------------------------------

    def read(self, address: int, size: int) -> bytes:
        self.update()
        return bytes(self.regs[address:address + size])

    def write(self, address: int, data: bytes) -> None:
        self.update()
        eeprom_locked = self._get("lock") != 0 or self.torque
        for offset, value in enumerate(data):
            addr = address + offset
            if addr in _READ_ONLY or addr >= len(self.regs) or (addr < EEPROM_END and eeprom_locked):
                continue  # the servo ignores it; only a read-back shows that
            self.regs[addr] = value
        self.update()


class BusEmulator:
    """Servos on a pseudo-terminal; ``start()`` returns the path a driver opens."""

    def __init__(self, ids: list[int], faults: Faults | None = None, seed: int = 0,
                 positions: dict[int, int] | None = None, clock: Callable[[], float] = time.monotonic):
        self.faults = faults or Faults()
        start = positions or {}
        self.servos = [Servo(i, start.get(i, CENTRE_TICK), clock) for i in ids if i not in self.faults.missing]
        self.rng = random.Random(seed)
        self.stats = {"requests": 0, "replies": 0, "dropped": 0, "corrupted": 0, "late": 0, "bad_requests": 0,
                      "lost_writes": 0}
        self.lock = threading.RLock()
        self._master = self._slave = -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.path = ""
        self.on_start: list[Callable[[], None]] = []  # e.g. the twin's physics thread
        self.on_stop: list[Callable[[], None]] = []

    # lifecycle --------------------------------------------------------------------------------

    def start(self) -> str:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing: bytes are bytes
        attrs = termios.tcgetattr(self._slave)
        attrs[4] = attrs[5] = termios.B1000000
        termios.tcsetattr(self._slave, termios.TCSANOW, attrs)
        self.path = os.ttyname(self._slave)
        P.emulator_marker(self.path).write_text(str(os.getpid()))  # this pty is an emulator's (P.is_emulated)
        self._thread = threading.Thread(target=self._serve, name="sts3215-emulator", daemon=True)
        self._thread.start()
        for hook in self.on_start:
            hook()
        return self.path

    def stop(self) -> None:
        for hook in self.on_stop:
            hook()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        if self._master >= 0 and self.path:
            P.emulator_marker(self.path).unlink(missing_ok=True)
        self._master = self._slave = -1

    def __enter__(self) -> BusEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # access for tests and the twin ------------------------------------------------------------

    def servo(self, servo_id: int) -> Servo:
        with self.lock:
            for s in self.servos:
                if s.servo_id == servo_id:
                    return s
        raise KeyError(f"no emulated servo with id {servo_id}")

    def register(self, servo_id: int, name: str) -> int:
        with self.lock:
            s = self.servo(servo_id)
            s.update()
            return s._get(name)

    def line_baud(self) -> int:
        try:
            return _TERMIOS_BAUD.get(termios.tcgetattr(self._slave)[4], -1)
        except termios.error:
            return -1

    # serving ----------------------------------------------------------------------------------

    def _serve(self) -> None:
        buffer = bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self._master, 4096)
            except OSError:  # the client side closed; keep serving for the next one
                time.sleep(0.01)
                continue
            buffer.extend(chunk)
            while True:
                pkt, bad = P.parse(buffer)
                if bad:
                    self.stats["bad_requests"] += 1
                    continue
                if pkt is None:
                    break
                self.stats["requests"] += 1
                for reply in self.handle(pkt):
                    self._send(reply)

    def _send(self, reply: bytes) -> None:
        r = self.rng.random()
        f = self.faults
        if r < f.drop:
            self.stats["dropped"] += 1
            return
        if r < f.drop + f.corrupt:
            self.stats["corrupted"] += 1
            reply = reply[:-1] + bytes([reply[-1] ^ 0x5A])
        elif r < f.drop + f.corrupt + f.late:
            self.stats["late"] += 1
            time.sleep(f.late_s)
        self.stats["replies"] += 1
        with contextlib.suppress(OSError):  # the client closed the port mid-reply
            os.write(self._master, reply)

    def _status(self, servo: Servo, params: bytes = b"") -> bytes:
        error = self.faults.error_bits.get(servo.servo_id, 0)
        body = bytes([servo.servo_id, len(params) + 2, error]) + params
        return P.HEADER + body + bytes([P.checksum(body)])

    def handle(self, pkt: P.Packet) -> list[bytes]:
        """Apply one instruction; the status packets to send back, in order."""
        with self.lock:
            baud = self.line_baud()
            on_line = [s for s in self.servos if s.baud == baud]
            by_id = {s.servo_id: s for s in on_line}
            inst, params = pkt.code, pkt.params
            if inst == P.SYNC_READ and len(params) >= 2:
                address, size = params[0], params[1]
                return [self._status(by_id[i], by_id[i].read(address, size)) for i in params[2:] if i in by_id]
            if inst == P.SYNC_WRITE and len(params) >= 2:
                address, size = params[0], params[1]
                for k in range(2, len(params) - size, size + 1):
                    target = by_id.get(params[k])
                    if target is None:
                        continue
                    if self.rng.random() < self.faults.drop:
                        self.stats["lost_writes"] += 1
                    else:
                        target.write(address, params[k + 1:k + 1 + size])
                return []
            if inst == P.ACTION:
                for s in on_line:
                    if s.pending:
                        s.write(*s.pending)
                        s.pending = None
                return []
            targets = on_line if pkt.servo_id == P.BROADCAST_ID else [by_id[pkt.servo_id]] \
                if pkt.servo_id in by_id else []
            replies = []
            for s in targets:
                data = self._apply(s, inst, params)
                # a broadcast gets no reply, except a ping: that is how a servo of unknown ID is found
                if data is not None and (pkt.servo_id != P.BROADCAST_ID or inst == P.PING):
                    replies.append(self._status(s, data))
            return replies

    @staticmethod
    def _apply(servo: Servo, inst: int, params: bytes) -> bytes | None:
        if inst == P.PING:
            return b""
        if inst == P.READ and len(params) == 2:
            return servo.read(params[0], params[1])
        if inst == P.WRITE and len(params) >= 2:
            servo.write(params[0], params[1:])
            return b""
        if inst == P.REG_WRITE and len(params) >= 2:
            servo.pending = (params[0], bytes(params[1:]))
            return b""
        return None  # unknown instruction: a real servo stays silent
