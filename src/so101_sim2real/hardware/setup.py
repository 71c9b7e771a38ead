"""Building and calibrating an arm: servo IDs and baud, homing offsets, ranges, sim zero.

Both flows talk to a person through two callbacks, ``ask(message)`` (returns when they
press Enter) and, while they move joints, ``done()`` (polled; True once they press
Enter), so the CLI runs them at a terminal and the tests run them on the emulator.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

from so101_sim2real.arm import CENTRE_TICK, JOINT_NAMES
from so101_sim2real.errors import So101Error
from so101_sim2real.hardware import protocol as P
from so101_sim2real.hardware.bus import MotorBus
from so101_sim2real.hardware.joint_calibration import ArmCalibration, JointMap, MotorCalibration
from so101_sim2real.hardware.registers import BAUD_RATES, register
from so101_sim2real.hardware.scan import ServoInfo, scan_bauds

MAX_HOMING_OFFSET = 2047  # sign-magnitude, bit 11: larger offsets overflow (a known field failure)


def find_single_servo(port: str, bauds: list[int] | None = None) -> ServoInfo:
    """The one servo on the bus, at whichever baud rate it speaks."""
    found = scan_bauds(port, bauds)  # rates the port cannot run at (a pty at 250 kbaud) are skipped
    if len(found) != 1:
        listed = ", ".join(f"id {s.id} at {s.baud}" for s in found) or "none"
        raise So101Error(f"expected exactly one servo on {port}, found {len(found)} ({listed}): connect only the "
                         f"servo you are setting up")
    return found[0]


def assign(port: str, motor: str, new_id: int, baud: int = 1_000_000) -> ServoInfo:
    """Give the only connected servo ``new_id`` and ``baud``; verified by reading back."""
    servo = find_single_servo(port)
    with MotorBus(port, {motor: servo.id}, baud=servo.baud) as bus:
        if servo.id != new_id:
            bus.write("torque_enable", motor, 0, verify=True)
            bus.write("lock", motor, 0, verify=True)
            # The status reply to an ID write comes from the new ID, so this one is sent by hand.
            proto = bus.protocol
            assert proto is not None  # the bus is open
            proto.t.send(P.packet(servo.id, P.WRITE, bytes([register("id").address, new_id])))
            with contextlib.suppress(P.ProtocolError):
                proto.t.receive(new_id)
            bus.motors[motor] = new_id
            if not bus.ping(new_id):
                raise So101Error(f"{motor}: the servo did not take ID {new_id}")
            bus.write("lock", motor, 1)
        if servo.baud != baud:
            code = next(k for k, v in BAUD_RATES.items() if v == baud)
            bus.write("lock", motor, 0, verify=True)
            with contextlib.suppress(So101Error):  # it may answer at the new rate already
                bus.write("baud_rate", motor, code)
    with MotorBus(port, {motor: new_id}, baud=baud) as bus:
        if not bus.ping(new_id) and not bus.ping(new_id):
            raise So101Error(f"{motor}: no answer at ID {new_id} and {baud} baud after setting them")
        bus.write("lock", motor, 1)
    return find_single_servo(port, [baud])


def parse_signs(items: list[str]) -> dict[str, int]:
    """``--sign JOINT=1|-1`` items: each joint's direction against the sim's, checked."""
    signs: dict[str, int] = {}
    for item in items:
        joint, _, value = item.partition("=")
        if joint not in JOINT_NAMES or value not in ("1", "-1"):
            raise So101Error(f"@sign {item!r}: use JOINT=1 or JOINT=-1 with a joint of {', '.join(JOINT_NAMES)}")
        signs[joint] = int(value)
    return signs


def calibrate_on_port(port: str, wait: Callable[[str], None], sweep: Callable[[str], Callable[[], bool]],
                      signs: dict[str, int] | None = None) -> ArmCalibration:
    """:func:`calibrate` of the arm on ``port``: the bus opened, handshaken, and closed after."""
    from so101_sim2real.arm import SERVO_IDS

    with MotorBus(port, SERVO_IDS) as bus:
        bus.handshake()
        return calibrate(bus, wait, sweep, signs)


def calibrate(bus: MotorBus, wait: Callable[[str], None], sweep: Callable[[str], Callable[[], bool]],
              signs: dict[str, int] | None = None) -> ArmCalibration:
    """Homing offsets (middle of range = the centre tick, 2047), ranges, and the sim-zero mapping of one arm.

    ``wait(message)`` returns once the person has done what it says (a held pose);
    ``sweep(message)`` starts a sweep through the ranges and returns the check that says it is over,
    while the arm is read in between.
    """
    bus.sync_write("torque_enable", dict.fromkeys(JOINT_NAMES, 0))
    before = {m: bus.read("homing_offset", m) for m in JOINT_NAMES}
    try:
        return _calibrate(bus, wait, sweep, signs or {})
    except BaseException:  # a failed calibration (or Ctrl-C) leaves the servos as it found them
        for motor, offset in before.items():
            with contextlib.suppress(So101Error):
                if bus.read("homing_offset", motor) != offset:
                    bus.write_eeprom("homing_offset", motor, offset)
        raise


def _calibrate(bus: MotorBus, wait: Callable[[str], None], sweep: Callable[[str], Callable[[], bool]],
               signs: dict[str, int]) -> ArmCalibration:
    wait("Move the arm to the MIDDLE of every joint's range, then press Enter")
    for motor in JOINT_NAMES:
        bus.write_eeprom("homing_offset", motor, 0)
    actual = bus.sync_read("present_position")
    offsets = {}
    for motor in JOINT_NAMES:
        offset = actual[motor] - CENTRE_TICK
        if abs(offset) > MAX_HOMING_OFFSET:
            raise So101Error(f"{motor}: homing offset {offset} does not fit the servo (|offset| <= 2047); "
                             f"re-seat the horn half a turn or re-center the servo with Feetech's tool")
        bus.write_eeprom("homing_offset", motor, offset)
        offsets[motor] = offset
    done = sweep("Move EVERY joint through its whole range, slowly, then press Enter")
    lo = bus.sync_read("present_position")
    hi = dict(lo)
    while not done():
        for motor, value in bus.sync_read("present_position").items():
            lo[motor], hi[motor] = min(lo[motor], value), max(hi[motor], value)
        time.sleep(0.01)
    narrow = [m for m in JOINT_NAMES if hi[m] - lo[m] < 200]
    if narrow:
        raise So101Error(f"{', '.join(narrow)} moved less than 200 ticks (18 degrees): move every joint "
                         f"through its range and calibrate again")
    motors = {m: MotorCalibration(bus.motors[m], 0, offsets[m], lo[m], hi[m]) for m in JOINT_NAMES}
    wait("Put the arm in the sim's ZERO pose (every joint at 0 rad as in the MJCF: arm straight up, "
        "wrist in line, gripper closed), then press Enter")
    zero = bus.sync_read("present_position")
    cal = ArmCalibration(motors, {m: JointMap(signs.get(m, 1), 0.0) for m in JOINT_NAMES})
    cal.sim = {m: JointMap(signs.get(m, 1), -cal.raw_to_sim(m, zero[m])) for m in JOINT_NAMES}
    for m in JOINT_NAMES:
        if not math.isfinite(cal.sim[m].offset_rad):
            raise So101Error(f"{m}: could not compute the sim offset")
    return cal
