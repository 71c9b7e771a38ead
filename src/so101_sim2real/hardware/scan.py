"""Finding the arm: serial ports, and the servos that answer on one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from so101_sim2real.errors import So101Error
from so101_sim2real.hardware.bus import MotorBus, MotorError, PortNotFound, SerialPort
from so101_sim2real.hardware.protocol import MAX_ID
from so101_sim2real.hardware.registers import BAUD_RATES


@dataclass(frozen=True)
class PortInfo:
    device: str
    description: str
    hwid: str


@dataclass(frozen=True)
class ServoInfo:
    id: int
    baud: int
    model: int
    firmware: str
    voltage_v: float
    temperature_c: int
    position: int

    def to_dict(self) -> dict:
        return asdict(self)


def list_ports() -> list[PortInfo]:
    """Serial ports the OS knows (USB adapters of the arms show up as ttyACM/ttyUSB/cu.usbmodem)."""
    from serial.tools import list_ports as lp

    return [PortInfo(p.device, p.description or "", p.hwid or "") for p in sorted(lp.comports())]


def new_ports(before: list[PortInfo], after: list[PortInfo]) -> list[PortInfo]:
    """Ports present in only one of two listings: the one that went away when a cable was unplugged."""
    a, b = {p.device for p in before}, {p.device for p in after}
    return [p for p in before + after if p.device in a ^ b]


def scan(port: str, baud: int = 1_000_000, timeout_s: float = 0.02, serial_port: SerialPort | None = None,
         every_id: bool = False) -> list[ServoInfo]:
    """Find the servos at one baud rate (a broadcast ping, or each ID 0-252 with ``every_id``) and read
    model, firmware, voltage, temperature and position of each."""
    found = []
    with MotorBus(port, {}, baud=baud, timeout_s=timeout_s, retries=2, serial_port=serial_port) as bus:
        if every_id:
            ids = [i for i in range(MAX_ID + 1) if bus.ping(i) or bus.ping(i)]
        else:
            proto = bus.protocol
            assert proto is not None  # the bus is open
            ids = sorted(set(proto.broadcast_ping()) | set(proto.broadcast_ping()))
        for servo_id in ids:
            try:
                info = ServoInfo(
                    id=servo_id, baud=baud, model=bus.read_id("model_number", servo_id),
                    firmware=f"{bus.read_id('firmware_major', servo_id)}.{bus.read_id('firmware_minor', servo_id)}",
                    voltage_v=bus.read_id("present_voltage", servo_id) / 10,
                    temperature_c=bus.read_id("present_temperature", servo_id),
                    position=bus.read_id("present_position", servo_id),
                )
            except MotorError:
                continue  # answered a ping but not the reads: reported as absent rather than half-known
            found.append(info)
    return found


def scan_bauds(port: str, bauds: list[int] | None = None, every_id: bool = False,
               on_skip: Callable[[int, So101Error], None] | None = None) -> list[ServoInfo]:
    """:func:`scan` at each baud rate (default: every one the STS3215 supports). A rate the port
    cannot run at is skipped (``on_skip`` hears of it) when there are several; a missing port,
    or a single rate that fails, is an error."""
    bauds = bauds or list(BAUD_RATES.values())
    found: list[ServoInfo] = []
    for baud in bauds:
        try:
            found += scan(port, baud, every_id=every_id)
        except PortNotFound:
            raise
        except So101Error as exc:
            if len(bauds) == 1:
                raise
            if on_skip:
                on_skip(baud, exc)
    return found
