"""Feetech SCS/STS serial protocol: bytes, packets, checksums, status replies.

``FF FF ID LEN INST P1..Pn CHK`` with ``LEN = n + 2`` and
``CHK = ~(ID + LEN + INST + sum P) & 0xFF``; a status reply has the same shape with an
error byte in place of the instruction (docs/reference.md section 5). This layer knows
bytes and timeouts, nothing about servos' registers or robots.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from so101_sim2real.errors import So101Error

HEADER = b"\xff\xff"
BROADCAST_ID = 0xFE
MAX_ID = 0xFC

PING, READ, WRITE, REG_WRITE, ACTION, SYNC_READ, SYNC_WRITE = 0x01, 0x02, 0x03, 0x04, 0x05, 0x82, 0x83

ERROR_BITS = {1: "input voltage", 2: "sensor", 4: "overheat", 8: "current", 16: "angle", 32: "overload"}


class ProtocolError(So101Error):
    """A transaction failed on the wire."""


class NoStatus(ProtocolError):
    """No reply within the timeout (LeRobot: "There is no status packet")."""


class PortLost(ProtocolError):
    """The serial port itself failed (an unplugged adapter): no packet can go out or come in."""


class CorruptStatus(ProtocolError):
    """A reply arrived but was malformed (LeRobot: "Incorrect status packet")."""


class ServoError(ProtocolError):
    """The servo replied with error bits set."""

    def __init__(self, servo_id: int, bits: int):
        self.servo_id, self.bits = servo_id, bits
        super().__init__(f"servo {servo_id} reports {describe_error(bits)}")


def describe_error(bits: int) -> str:
    names = [name for bit, name in ERROR_BITS.items() if bits & bit]
    return " + ".join(names) + " error" if names else "no error"


def checksum(body: bytes) -> int:
    """``~sum(body) & 0xFF`` over ID, LEN, INST/ERROR and the parameters."""
    return ~sum(body) & 0xFF


def packet(servo_id: int, instruction: int, params: bytes = b"") -> bytes:
    """An instruction packet."""
    if not 0 <= servo_id <= BROADCAST_ID:
        raise ValueError(f"servo id {servo_id} out of range 0..{BROADCAST_ID}")
    if len(params) > 250:
        raise ValueError("too many parameters for one packet")
    body = bytes([servo_id, len(params) + 2, instruction]) + bytes(params)
    return HEADER + body + bytes([checksum(body)])


@dataclass(frozen=True)
class Packet:
    """A parsed packet: ``code`` is the instruction (requests) or the error byte (replies)."""

    servo_id: int
    code: int
    params: bytes


def parse(buffer: bytearray) -> tuple[Packet | None, bool]:
    """Take the first complete packet off the front of ``buffer``.

    Returns ``(packet, corrupt)``: ``(None, False)`` when more bytes are needed,
    ``(None, True)`` when a packet with a bad checksum was dropped. Bytes before a
    header are noise and are discarded.
    """
    start = buffer.find(HEADER)
    if start < 0:
        del buffer[: max(0, len(buffer) - 1)]  # keep a trailing 0xFF: it may start a header
        return None, False
    del buffer[:start]
    while len(buffer) >= 3 and buffer[2] == 0xFF:  # FF FF FF ...: the header is the last two
        del buffer[0]
    if len(buffer) < 4:
        return None, False
    length = buffer[3]
    if length < 2:
        del buffer[:2]
        return None, True
    end = 4 + length
    if len(buffer) < end:
        return None, False
    body, chk = bytes(buffer[2:end - 1]), buffer[end - 1]
    del buffer[:end]
    if checksum(body) != chk:
        return None, True
    return Packet(body[0], body[2], body[3:]), False


def encode_sign_magnitude(value: int, sign_bit: int) -> int:
    """Signed int -> the servo's sign-magnitude field (sign in ``sign_bit``)."""
    limit = (1 << sign_bit) - 1
    if abs(value) > limit:
        raise ValueError(f"{value} does not fit a sign-magnitude field with sign bit {sign_bit} (|v| <= {limit})")
    return (abs(value) | (1 << sign_bit)) if value < 0 else value


def decode_sign_magnitude(raw: int, sign_bit: int) -> int:
    magnitude = raw & ((1 << sign_bit) - 1)
    return -magnitude if raw & (1 << sign_bit) else magnitude


def to_bytes(value: int, size: int) -> bytes:
    return int(value).to_bytes(size, "little", signed=False)


def from_bytes(data: bytes) -> int:
    return int.from_bytes(data, "little", signed=False)


class Port(Protocol):
    """What the protocol needs from a serial port (pyserial's ``Serial`` fits)."""

    timeout: float | None

    def write(self, data: bytes) -> int | None: ...

    def read(self, size: int) -> bytes: ...

    def reset_input_buffer(self) -> None: ...


class Transport:
    """Instruction out, status replies in, on one half-duplex port."""

    def __init__(self, port: Port, timeout_s: float = 0.02):
        self.port, self.timeout_s = port, timeout_s
        self._rx = bytearray()

    def send(self, data: bytes) -> None:
        self._rx.clear()
        try:
            self.port.reset_input_buffer()  # a late reply to an earlier request must not answer this one
            self.port.write(data)
        except OSError as exc:  # pyserial's SerialException is an OSError too
            raise PortLost(f"the serial port failed ({exc}); is the USB adapter still plugged in?") from None

    def next_packet(self, deadline: float) -> tuple[Packet | None, bool]:
        """The next well-formed packet before ``deadline`` (monotonic); and whether a corrupt one was seen."""
        corrupt = False
        while True:
            pkt, bad = parse(self._rx)
            corrupt |= bad
            if pkt is not None:
                return pkt, corrupt
            if bad:
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, corrupt or bool(self._rx)
            self.port.timeout = remaining
            want = 6 if len(self._rx) < 4 else max(1, 4 + self._rx[3] - len(self._rx))
            try:
                chunk = self.port.read(want)
            except OSError as exc:
                raise PortLost(f"the serial port failed ({exc}); is the USB adapter still plugged in?") from None
            if chunk:
                self._rx.extend(chunk)

    def receive(self, servo_id: int, timeout_s: float | None = None, size: int | None = None) -> Packet:
        """The next status packet from ``servo_id`` with ``size`` data bytes (any size when None).

        Replies from other IDs are skipped, and so is one of another size: a late reply to an
        earlier request that came after the flush (taking it as this one's answer would fail a
        retry that its own reply, due next, would pass). If nothing else comes, it is reported
        as an incorrect status packet."""
        timeout = timeout_s or self.timeout_s
        deadline = time.monotonic() + timeout
        corrupt = False
        while True:
            pkt, bad = self.next_packet(deadline)
            corrupt |= bad
            if pkt is None:
                if corrupt:
                    raise CorruptStatus(f"servo {servo_id}: incorrect status packet (bad checksum, truncated or "
                                        f"of the wrong length)")
                raise NoStatus(f"servo {servo_id}: no status packet within {1e3 * timeout:.0f} ms")
            if pkt.servo_id == servo_id:
                if size is None or len(pkt.params) == size:
                    return pkt
                corrupt = True


class PacketProtocol:
    """The instructions of the protocol, with replies checked."""

    def __init__(self, transport: Transport):
        self.t = transport

    def _reply(self, servo_id: int, expect: int) -> bytes:
        return self._check(self.t.receive(servo_id, size=expect), expect)

    @staticmethod
    def _check(pkt: Packet, expect: int) -> bytes:
        servo_id = pkt.servo_id
        if len(pkt.params) != expect:
            raise CorruptStatus(f"servo {servo_id}: status packet with {len(pkt.params)} data bytes, expected {expect}")
        if pkt.code & 0x3F:
            raise ServoError(servo_id, pkt.code)
        return pkt.params

    def ping(self, servo_id: int) -> None:
        self.t.send(packet(servo_id, PING))
        self._reply(servo_id, 0)

    def broadcast_ping(self, wait_s: float | None = None) -> list[int]:
        """IDs of every servo that answers a ping to the broadcast ID, in reply order."""
        self.t.send(packet(BROADCAST_ID, PING))
        deadline = time.monotonic() + (wait_s or self.t.timeout_s * 2)
        found: list[int] = []
        while True:
            pkt, _ = self.t.next_packet(deadline)
            if pkt is None:
                return found
            if pkt.servo_id not in found:
                found.append(pkt.servo_id)

    def read(self, servo_id: int, address: int, size: int) -> bytes:
        self.t.send(packet(servo_id, READ, bytes([address, size])))
        return self._reply(servo_id, size)

    def write(self, servo_id: int, address: int, data: bytes) -> None:
        self.t.send(packet(servo_id, WRITE, bytes([address]) + data))
        if servo_id != BROADCAST_ID:
            self._reply(servo_id, 0)

    def sync_read(self, address: int, size: int, ids: list[int]) -> dict[int, bytes | ProtocolError]:
        """One request, one reply per servo in order; each failure is returned, not raised."""
        self.t.send(packet(BROADCAST_ID, SYNC_READ, bytes([address, size, *ids])))
        # Collect by ID, not by position: a dropped reply must not make us discard the next one.
        deadline = time.monotonic() + self.t.timeout_s  # replies come back to back
        out: dict[int, bytes | ProtocolError] = {}
        corrupt = False
        while len(out) < len(ids):
            pkt, bad = self.t.next_packet(deadline)
            corrupt |= bad
            if pkt is None:
                break
            if pkt.servo_id in ids and pkt.servo_id not in out:
                if len(pkt.params) != size:  # a late reply to an earlier request: its answer may still come
                    corrupt = True
                    continue
                try:
                    out[pkt.servo_id] = self._check(pkt, size)
                except ProtocolError as exc:
                    out[pkt.servo_id] = exc
        for servo_id in ids:
            if servo_id not in out:
                out[servo_id] = (CorruptStatus(f"servo {servo_id}: incorrect status packet in a sync read") if corrupt
                                 else NoStatus(f"servo {servo_id}: no status packet in a sync read"))
        return {servo_id: out[servo_id] for servo_id in ids}

    def sync_write(self, address: int, size: int, data: dict[int, bytes]) -> None:
        """No reply comes back: it can be lost silently, so verify what matters by reading."""
        params = bytearray([address, size])
        for servo_id, value in data.items():
            if len(value) != size:
                raise ValueError(f"sync write to servo {servo_id}: {len(value)} bytes, expected {size}")
            params += bytes([servo_id]) + value
        self.t.send(packet(BROADCAST_ID, SYNC_WRITE, bytes(params)))


# ------------------------------------------------------------------ which port is an emulator

def emulator_marker(port: str) -> Path:
    """The file by which ``so101 emulate`` says it serves ``port``: a pty alone is not proof (socat
    and ser2net bridge real arms onto ptys), and an emulated arm is treated more leniently."""
    name = os.path.realpath(port).strip("/").replace("/", "-")
    return Path(tempfile.gettempdir()) / f"so101-emulator-{os.getuid()}-{name}"


def is_emulated(port: str) -> bool:
    """Whether an emulator of this user, still running, serves ``port`` (a pseudo-terminal)."""
    if not os.path.realpath(port).startswith("/dev/pts/"):
        return False
    try:
        pid = int(emulator_marker(port).read_text().strip())
        os.kill(pid, 0)  # a marker left by a killed emulator names no live process
    except (OSError, ValueError):
        return False
    return True
