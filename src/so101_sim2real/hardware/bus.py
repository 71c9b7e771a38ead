"""A Feetech motor bus: named registers of named motors, with retries and clear errors.

Reads are retried (transient failures are normal on these buses); a failure that
persists is a :class:`MotorError` that names the motor and what to check. Sync writes
get no reply and can be lost silently, so anything that matters (torque, EEPROM) is
verified by reading it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from so101_sim2real.errors import So101Error
from so101_sim2real.hardware import protocol as P
from so101_sim2real.hardware.registers import BAUD_RATES, MODEL_STS3215, Register, register


class PortNotFound(So101Error):
    """The serial port does not exist."""


class MotorError(So101Error):
    """A motor did not answer, answered garbage, or reported an error: names it and what to check."""


def _hint(exc: P.ProtocolError) -> str:
    if isinstance(exc, P.NoStatus):
        return "no status packet: check its cable and connector, the power supply, and its ID and baud rate"
    if isinstance(exc, P.CorruptStatus):
        return "incorrect status packet: noise or low voltage on the bus; check the power supply and cables"
    if isinstance(exc, P.ServoError):
        return f"it reports {P.describe_error(exc.bits)}: let it cool down, reduce the load, check the supply voltage"
    return str(exc)


@dataclass
class BusStats:
    transactions: int = 0
    retries: int = 0
    failures: int = 0
    sync_writes: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def count(self, exc: Exception) -> None:
        kind = type(exc).__name__
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1


# A real STS3215 answers within a millisecond at 1 Mbaud (return delay 0), the USB adapter adds
# a few: 20 ms is ample, and a dead servo is noticed fast. An emulator on a pseudo-terminal is
# a process on a time-shared machine: at a load of 6 on 2 cores its threads wait 100s of ms for
# a core (issue 26.7), so a reply that late is not a lost one there.
SERIAL_TIMEOUT_S = 0.02
PTY_TIMEOUT_S = 0.25


def default_timeout_s(port: str) -> float:
    """The status timeout for ``port``: a real servo's, or an emulator's (``so101 emulate``'s pty;
    a real arm bridged onto a pty by socat keeps a real servo's)."""
    return PTY_TIMEOUT_S if P.is_emulated(port) else SERIAL_TIMEOUT_S


class SerialPort(P.Port, Protocol):
    """A port the bus opens and closes (pyserial's ``Serial``, or one handed in ready-made)."""

    def close(self) -> None: ...


def open_serial(port: str, baud: int, timeout_s: float) -> SerialPort:
    """pyserial's port, or a one-line error that says what to do."""
    import serial

    if Path(port).is_dir():
        raise So101Error(f"serial port {port}: that is a folder; give the arm's device, e.g. /dev/ttyACM0 ('so101 "
                         f"motors find-port' shows it)")
    try:
        return serial.Serial(port, baudrate=baud, timeout=timeout_s, write_timeout=1.0)
    except (serial.SerialException, OSError, ValueError) as exc:
        if "No such file" in str(exc) or "could not open port" in str(exc):
            raise PortNotFound(f"serial port {port} not found: plug in the arm's USB adapter, or run "
                             f"'so101 motors find-port'") from None
        raise So101Error(f"serial port {port}: cannot open it ({exc}); is another program using it?") from None


class MotorBus:
    """Motors by name on one serial port."""

    def __init__(self, port: str, motors: dict[str, int], baud: int = 1_000_000, timeout_s: float | None = None,
                 retries: int = 3, serial_port: SerialPort | None = None):
        """``timeout_s``: per status reply; by default :func:`default_timeout_s` of ``port``."""
        if baud not in BAUD_RATES.values():
            raise So101Error(f"baud rate {baud} is not one the STS3215 supports: {sorted(BAUD_RATES.values())}")
        self.port_name, self.motors, self.baud = port, dict(motors), baud
        self.timeout_s = default_timeout_s(port) if timeout_s is None else timeout_s
        self.retries = retries
        self._serial = serial_port
        self.protocol: P.PacketProtocol | None = None
        self.stats = BusStats()

    # lifecycle --------------------------------------------------------------------------------

    def open(self) -> MotorBus:
        if self._serial is None:
            self._serial = open_serial(self.port_name, self.baud, self.timeout_s)
        self.protocol = P.PacketProtocol(P.Transport(self._serial, self.timeout_s))
        return self

    def close(self) -> None:
        if self._serial is not None:
            self._serial.close()
        self._serial, self.protocol = None, None

    def __enter__(self) -> MotorBus:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self.protocol is not None

    def _proto(self) -> P.PacketProtocol:
        if self.protocol is None:
            raise So101Error(f"the bus on {self.port_name} is not open")
        return self.protocol

    def _id(self, motor: str) -> int:
        try:
            return self.motors[motor]
        except KeyError:
            raise So101Error(f"no motor '{motor}' on this bus; motors: {', '.join(self.motors)}") from None

    def _fail(self, motor: str, what: str, exc: P.ProtocolError) -> MotorError:
        self.stats.failures += 1
        return MotorError(f"{motor} (id {self.motors.get(motor, '?')}): {what} failed after {self.retries + 1} "
                          f"tries, {_hint(exc)}")

    # single-motor access ----------------------------------------------------------------------

    def _retry(self, motor: str, what: str, fn):
        last: P.ProtocolError | None = None
        for attempt in range(self.retries + 1):
            self.stats.transactions += 1
            if attempt:
                self.stats.retries += 1
            try:
                return fn()
            except P.ProtocolError as exc:
                self.stats.count(exc)
                last = exc
        assert last is not None  # at least one try failed
        raise self._fail(motor, what, last)

    def ping(self, servo_id: int, timeout_s: float | None = None) -> bool:
        """One ping, no retries (for scanning)."""
        proto = self._proto()
        saved = proto.t.timeout_s
        proto.t.timeout_s = timeout_s or saved
        try:
            proto.ping(servo_id)
            return True
        except P.ProtocolError:
            return False
        finally:
            proto.t.timeout_s = saved

    def read(self, name: str, motor: str) -> int:
        reg, servo_id = register(name), self._id(motor)
        data = self._retry(motor, f"reading {name}", lambda: self._proto().read(servo_id, reg.address, reg.size))
        return reg.decode(data)

    def read_span(self, names: list[str], motor: str) -> dict[str, int]:
        """Several registers of one motor in one transaction: the span from the first to the last."""
        regs = [register(n) for n in names]
        start = min(r.address for r in regs)
        size = max(r.address + r.size for r in regs) - start
        servo_id = self._id(motor)
        data = self._retry(motor, f"reading {', '.join(names)}", lambda: self._proto().read(servo_id, start, size))
        return {r.name: r.decode(data[r.address - start:r.address - start + r.size]) for r in regs}

    def read_id(self, name: str, servo_id: int) -> int:
        """Read from a servo by ID (for scans, before names are known)."""
        reg = register(name)
        data = self._retry(f"servo {servo_id}", f"reading {name}",
                           lambda: self._proto().read(servo_id, reg.address, reg.size))
        return reg.decode(data)

    def write(self, name: str, motor: str, value: int, verify: bool = False) -> None:
        reg, servo_id = register(name), self._id(motor)
        if not reg.writable:
            raise So101Error(f"{name} is read-only")
        data = reg.encode(value)
        self._retry(motor, f"writing {name}", lambda: self._proto().write(servo_id, reg.address, data))
        if verify:
            self._verify(reg, motor, value)

    def _verify(self, reg: Register, motor: str, value: int) -> None:
        got = self.read(reg.name, motor)
        if got != value:
            raise MotorError(f"{motor} (id {self.motors[motor]}): wrote {reg.name} = {value} but it reads {got}"
                             + (" (EEPROM: needs torque off and lock 0)" if reg.eeprom else ""))

    def write_eeprom(self, name: str, motor: str, value: int) -> None:
        """An EEPROM write done right: torque off, unlock, write, verify, lock."""
        self.write("torque_enable", motor, 0, verify=True)
        self.write("lock", motor, 0, verify=True)
        try:
            self.write(name, motor, value)
            self._verify(register(name), motor, value)
        finally:
            self.write("lock", motor, 1)

    # group access -----------------------------------------------------------------------------

    def sync_read(self, name: str, motors: list[str] | None = None) -> dict[str, int]:
        """One register of many motors; failed motors are retried one by one."""
        reg = register(name)
        motors = list(motors or self.motors)
        ids = [self._id(m) for m in motors]
        self.stats.transactions += 1
        replies = self._proto().sync_read(reg.address, reg.size, ids)
        out = {}
        for motor, servo_id in zip(motors, ids, strict=True):
            reply = replies[servo_id]
            if isinstance(reply, P.ProtocolError):
                self.stats.count(reply)
                self.stats.retries += 1
                out[motor] = self.read(name, motor)
            else:
                out[motor] = reg.decode(reply)
        return out

    def sync_write(self, name: str, values: dict[str, int]) -> None:
        """Fire and forget: no reply comes back. Verify with a read where it matters."""
        reg = register(name)
        if not reg.writable:
            raise So101Error(f"{name} is read-only")
        self.stats.sync_writes += 1
        self._proto().sync_write(reg.address, reg.size, {self._id(m): reg.encode(v) for m, v in values.items()})

    # the handshake ----------------------------------------------------------------------------

    def _answers(self, servo_id: int) -> bool:
        for attempt in range(self.retries + 1):
            self.stats.transactions += 1
            if self.ping(servo_id):
                return True
            self.stats.retries += attempt < self.retries
        self.stats.failures += 1
        return False

    def handshake(self, model: int = MODEL_STS3215) -> dict[str, tuple[int, int]]:
        """Every motor present, the right model, one firmware version; returns firmware per motor."""
        missing = [m for m, i in self.motors.items() if not self._answers(i)]
        if missing:
            listed = ", ".join(f"{m} (id {self.motors[m]})" for m in missing)
            raise MotorError(f"Missing motor IDs on {self.port_name}: {listed}. Check the cable into each, that "
                             f"the arm is powered, and the IDs and baud rate ({self.baud}); 'so101 motors scan "
                             f"@port {self.port_name}' lists what answers")
        firmware = {}
        for motor in self.motors:
            found = self.read("model_number", motor)
            if found != model:
                raise MotorError(f"{motor} (id {self.motors[motor]}) is model {found}, expected {model} (STS3215)")
            firmware[motor] = (self.read("firmware_major", motor), self.read("firmware_minor", motor))
        if len(set(firmware.values())) > 1:
            listed = ", ".join(f"{m} {a}.{b}" for m, (a, b) in firmware.items())
            raise MotorError(f"motors run different firmware versions ({listed}); update them to one version "
                             f"with Feetech's tool")
        return firmware
