"""Feetech protocol, motor bus and SO-101 arms against the pty STS3215 emulator."""

import json
import math

import numpy as np
import pytest

from fixtures import ctrl_c_works
from so101_sim2real.arm import CENTRE_TICK, SERVO_IDS
from so101_sim2real.errors import So101Error
from so101_sim2real.hardware import protocol as P
from so101_sim2real.hardware.bus import PTY_TIMEOUT_S, SERIAL_TIMEOUT_S, MotorBus, MotorError
from so101_sim2real.hardware.emulator import BusEmulator, Faults
from so101_sim2real.hardware.joint_calibration import (
    ArmCalibration,
    JointMap,
    MotorCalibration,
    find_lerobot_file,
    read_lerobot,
    twin_calibration,
)
from so101_sim2real.hardware.registers import register
from so101_sim2real.hardware.so101 import ServoOverheated, SO101Follower, WatchdogTripped
from so101_sim2real.interfaces import JOINT_NAMES

MOTORS = SERVO_IDS
RANGES = np.array([[-1.91986, 1.91986], [-1.74533, 1.74533], [-1.69, 1.69], [-1.65806, 1.65806],
                   [-2.74385, 2.84121], [-0.17453, 1.74533]])


@pytest.fixture
def emulator():
    with BusEmulator(list(MOTORS.values())) as emu:
        yield emu


@pytest.fixture
def bus(emulator):
    with MotorBus(emulator.path, MOTORS) as bus:
        yield bus


# ---------------------------------------------------------------------------------- protocol


def test_packets_match_the_documented_bytes():
    assert P.packet(1, P.PING) == bytes.fromhex("ffff010201fb")
    read = P.packet(1, P.READ, bytes([56, 2]))
    assert read == bytes.fromhex("ffff0104023802") + bytes([~(1 + 4 + 2 + 56 + 2) & 0xFF])


def test_parse_skips_noise_and_flags_bad_checksums():
    good = P.packet(3, P.WRITE, bytes([42, 0x00, 0x08]))
    buf = bytearray(b"\x00\x13\xff" + good + good[:-1] + bytes([good[-1] ^ 1]) + good[:4])
    pkt, bad = P.parse(buf)
    assert pkt == P.Packet(3, P.WRITE, bytes([42, 0x00, 0x08])) and not bad
    assert P.parse(buf) == (None, True)  # the corrupted copy
    assert P.parse(buf) == (None, False) and bytes(buf) == good[:4]  # a partial packet waits for more bytes


def test_sign_magnitude_fields():
    offset = register("homing_offset")
    assert offset.decode(offset.encode(-710)) == -710 and offset.encode(-710) == (710 | 1 << 11).to_bytes(2, "little")
    with pytest.raises(ValueError, match="2047"):
        offset.encode(2500)  # the homing-offset overflow users hit
    assert register("present_load").decode((300 | 1 << 10).to_bytes(2, "little")) == -300
    assert register("goal_position").decode(register("goal_position").encode(-5)) == -5


# ---------------------------------------------------------------------------------- bus


def test_handshake_reports_firmware(bus):
    assert bus.handshake() == dict.fromkeys(JOINT_NAMES, (3, 10))


def test_missing_ids_are_named():
    emu = BusEmulator(list(MOTORS.values()), Faults(missing=frozenset({5})))
    with emu, MotorBus(emu.path, MOTORS) as bus, \
            pytest.raises(MotorError, match=r"Missing motor IDs .*wrist_roll \(id 5\).*cable"):
        bus.handshake()


def test_wrong_model_and_mixed_firmware_are_refused(emulator, bus):
    emulator.servo(2).regs[3:5] = (1234).to_bytes(2, "little")
    with pytest.raises(MotorError, match="shoulder_lift .*model 1234"):
        bus.handshake()
    emulator.servo(2).regs[3:5] = (777).to_bytes(2, "little")
    emulator.servo(4).regs[1] = 9
    with pytest.raises(MotorError, match="different firmware"):
        bus.handshake()


def test_error_bits_name_the_motor_and_the_fault():
    emu = BusEmulator(list(MOTORS.values()), Faults(error_bits={3: 4}))
    with emu, MotorBus(emu.path, MOTORS) as bus, pytest.raises(MotorError, match=r"elbow_flex \(id 3\).*overheat"):
        bus.read("present_position", "elbow_flex")


def test_eeprom_writes_need_unlocking_and_are_verified(emulator, bus):
    with pytest.raises(MotorError, match="lock 0"):
        bus.write("homing_offset", "gripper", -710, verify=True)  # locked: the servo ignores it
    assert emulator.register(6, "homing_offset") == 0
    bus.write_eeprom("homing_offset", "gripper", -710)
    assert emulator.register(6, "homing_offset") == -710 and emulator.register(6, "lock") == 1
    assert bus.read("present_position", "gripper") == CENTRE_TICK + 710  # present = actual - offset


def test_reads_are_retried_through_dropped_and_corrupted_replies():
    faults = Faults(drop=0.2, corrupt=0.2)
    with BusEmulator(list(MOTORS.values()), faults, seed=1) as emu, \
            MotorBus(emu.path, MOTORS, timeout_s=0.01, retries=6) as bus:
        for _ in range(30):
            assert bus.sync_read("model_number") == dict.fromkeys(JOINT_NAMES, 777)
        assert bus.stats.retries > 0 and emu.stats["dropped"] > 0 and emu.stats["corrupted"] > 0


class _LateReplies:
    """A port whose input is scripted: what a request finds is there, whatever the flush did
    (a late reply to an earlier request that arrived after it)."""

    def __init__(self, *replies: bytes):
        self.rx, self.timeout = bytearray(b"".join(replies)), None

    def write(self, data: bytes) -> int:
        return len(data)

    def read(self, size: int) -> bytes:
        out = bytes(self.rx[:size])
        del self.rx[:size]
        return out

    def reset_input_buffer(self) -> None:
        pass

    def close(self) -> None:
        pass


def _status(servo_id: int, params: bytes = b"") -> bytes:
    body = bytes([servo_id, len(params) + 2, 0]) + params
    return P.HEADER + body + bytes([P.checksum(body)])


def test_a_late_reply_of_another_size_is_skipped_not_taken_for_this_one():
    """Issue 26.7: on a busy machine the ack of a write came after its timeout and was taken as
    the next read's (wrong-size) answer: every retry failed the same way, and connect gave up."""
    late_ack, answer = _status(2), _status(2, (1234).to_bytes(2, "little"))
    with MotorBus("fake", MOTORS, timeout_s=0.05, retries=0, serial_port=_LateReplies(late_ack, answer)) as bus:
        assert bus.read("present_position", "shoulder_lift") == 1234
    positions = [_status(i, (2000 + i).to_bytes(2, "little")) for i in MOTORS.values()]
    late_health = _status(1, bytes(4))
    with MotorBus("fake", MOTORS, timeout_s=0.05, retries=0, serial_port=_LateReplies(late_health, *positions)) as bus:
        assert bus.sync_read("present_position") == {m: 2000 + i for m, i in MOTORS.items()}
        assert bus.stats.retries == 0


def test_a_real_serial_port_keeps_a_real_servos_timeout_and_a_pty_gets_an_emulators(emulator, tmp_path):
    """Issue 26.7: a pty is an emulator, a process on a shared machine that can wait 100s of ms for a
    core; a real arm keeps 20 ms, 3 retries and the stop after 5 consecutive failed reads."""
    real = MotorBus("/dev/ttyACM0", MOTORS)
    assert real.timeout_s == SERIAL_TIMEOUT_S == 0.02 and real.retries == 3
    assert SO101Follower(real, twin_calibration(RANGES)).watchdog == 5
    link = tmp_path / "arm"
    link.symlink_to(emulator.path)
    for port in (emulator.path, str(link)):
        assert MotorBus(port, MOTORS).timeout_s == PTY_TIMEOUT_S > SERIAL_TIMEOUT_S
    assert MotorBus(emulator.path, MOTORS, timeout_s=0.005).timeout_s == 0.005  # asked for: as asked


def test_a_pty_that_no_emulator_serves_is_a_real_arm():
    """socat and ser2net bridge real arms onto ptys: only 'so101 emulate''s own ptys are emulated."""
    import os

    from so101_sim2real.hardware.emulator import BusEmulator
    from so101_sim2real.hardware.protocol import is_emulated

    master, slave = os.openpty()
    try:
        bridged = os.ttyname(slave)
        assert not is_emulated(bridged) and MotorBus(bridged, MOTORS).timeout_s == SERIAL_TIMEOUT_S
    finally:
        os.close(master)
        os.close(slave)
    emu = BusEmulator([1])
    path = emu.start()
    assert is_emulated(path)
    emu.stop()
    assert not is_emulated(path)  # stopped: its pty may become anyone's


def test_a_missing_serial_port_says_what_to_do():
    with pytest.raises(Exception, match="not found.*find-port"):
        MotorBus("/dev/ttyDOESNOTEXIST", MOTORS).open()
    from so101_sim2real.hardware.setup import assign

    with pytest.raises(Exception, match="not found.*find-port"):  # not "found 0 servos"
        assign("/dev/ttyDOESNOTEXIST", "gripper", 6)


# ------------------------------------------------------------------------------ official SDK


def test_the_official_feetech_sdk_talks_to_the_emulator(emulator):
    sdk = pytest.importorskip("scservo_sdk", reason="feetech-servo-sdk is a test dependency ([dev])")
    emulator.servo(4).move_to(1500)
    port = sdk.PortHandler(emulator.path)
    assert port.openPort() and port.setBaudRate(1_000_000)
    handler = sdk.PacketHandler(0)
    model, result, error = handler.ping(port, 3)
    assert (model, result, error) == (777, sdk.COMM_SUCCESS, 0)
    value, result, _ = handler.read2ByteTxRx(port, 1, 3)
    assert (value, result) == (777, sdk.COMM_SUCCESS)
    group = sdk.GroupSyncRead(port, handler, 56, 2)
    for servo_id in MOTORS.values():
        group.addParam(servo_id)
    assert group.txRxPacket() == sdk.COMM_SUCCESS
    c = CENTRE_TICK
    assert [group.getData(i, 56, 2) for i in MOTORS.values()] == [c, c, c, 1500, c, c]
    port.closePort()


# ------------------------------------------------------------------------------ calibration


def users_calibration() -> dict:
    return {j: {"id": i + 1, "drive_mode": 0, "homing_offset": -710 + 100 * i, "range_min": 800 + 10 * i,
                "range_max": 3300 - 10 * i} for i, j in enumerate(JOINT_NAMES)}


def test_lerobot_files_old_and_new_layouts(tmp_path):
    old = tmp_path / "robots" / "so101_follower" / "arm.json"
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps(users_calibration()))
    assert find_lerobot_file("follower", "arm", tmp_path) == old
    new = tmp_path / "robots" / "so_follower" / "arm.json"
    new.parent.mkdir(parents=True)
    new.write_text(json.dumps(users_calibration()))
    assert find_lerobot_file("follower", "arm", tmp_path) == new  # the new layout wins
    assert read_lerobot(new)["gripper"] == MotorCalibration(6, 0, -210, 850, 3250)
    with pytest.raises(Exception, match="calibrate joints"):
        find_lerobot_file("leader", "arm", tmp_path)


def test_calibration_maps_lerobot_degrees_to_sim_radians(tmp_path):
    motors = read_lerobot_dict(users_calibration(), tmp_path)
    cal = ArmCalibration(motors, {j: JointMap(-1 if j == "elbow_flex" else 1, 0.25) for j in JOINT_NAMES})
    mid = motors["elbow_flex"].mid
    assert cal.raw_to_sim("elbow_flex", mid) == pytest.approx(0.25)
    deg90 = mid + 90 * 4095 / 360
    assert cal.raw_to_sim("elbow_flex", deg90) == pytest.approx(0.25 - math.pi / 2)  # sign -1
    for joint in JOINT_NAMES:
        for raw in (motors[joint].range_min, 2047, motors[joint].range_max):
            assert cal.sim_to_raw(joint, cal.raw_to_sim(joint, raw)) == raw
    cal.save(tmp_path / "arm.json")
    assert ArmCalibration.load(tmp_path / "arm.json") == cal


def read_lerobot_dict(data, tmp_path):
    path = tmp_path / "in.json"
    path.write_text(json.dumps(data))
    return read_lerobot(path)


def test_twin_calibration_puts_the_centre_tick_at_the_mjcf_zero():
    cal = twin_calibration(RANGES)
    for joint in JOINT_NAMES:
        assert cal.raw_to_sim(joint, CENTRE_TICK) == pytest.approx(0.0, abs=1e-9)
    assert cal.sim_ranges() == pytest.approx(RANGES, abs=2e-3)


# ------------------------------------------------------------------------------ follower


def test_follower_configures_reads_and_clamps(emulator):
    cal = twin_calibration(RANGES)
    with MotorBus(emulator.path, cal.ids) as bus:
        arm = SO101Follower(bus, cal, max_step_rad=0.1)
        arm.connect()
        assert [emulator.register(i, "p_coefficient") for i in range(1, 7)] == [16] * 6
        state = arm.read()
        assert state.position == pytest.approx(np.zeros(6), abs=2e-3)
        arm.torque(True)
        assert all(emulator.register(i, "torque_enable") == 1 for i in range(1, 7))
        arm.write(np.array([0.5, -0.05, 0.0, 0.0, 0.0, 0.0]))  # 0.5 rad asked, 0.1 allowed per tick
        bus.read("lock", "gripper")  # a round trip: the emulator has handled the (reply-less) sync write
        goal = emulator.register(1, "goal_position")
        assert cal.raw_to_sim("shoulder_pan", goal) == pytest.approx(0.1, abs=2e-3)
        assert cal.raw_to_sim("shoulder_lift", emulator.register(2, "goal_position")) == pytest.approx(-0.05, abs=2e-3)
        arm.close()
    assert all(emulator.register(i, "torque_enable") == 0 for i in range(1, 7))


def _users_arm_calibration() -> ArmCalibration:
    motors = {j: MotorCalibration(**c) for j, c in users_calibration().items()}
    return ArmCalibration(motors, {j: JointMap() for j in JOINT_NAMES})


def test_connect_writes_limits_caps_and_reply_delay_into_each_servo(emulator):
    sdk = pytest.importorskip("scservo_sdk", reason="feetech-servo-sdk is a test dependency ([dev])")
    cal = _users_arm_calibration()
    with MotorBus(emulator.path, cal.ids) as bus:
        SO101Follower(bus, cal).connect()
    port = sdk.PortHandler(emulator.path)  # read back by an independent client: Feetech's own SDK
    assert port.openPort() and port.setBaudRate(1_000_000)
    handler = sdk.PacketHandler(0)

    def read(servo_id, name):
        reg = register(name)
        fn = handler.read1ByteTxRx if reg.size == 1 else handler.read2ByteTxRx
        value, result, error = fn(port, servo_id, reg.address)
        assert (result, error) == (sdk.COMM_SUCCESS, 0)
        return value

    for joint, servo_id in cal.ids.items():
        c = cal.motors[joint]
        assert (read(servo_id, "min_position_limit"), read(servo_id, "max_position_limit")) == (c.range_min,
                                                                                                 c.range_max)
        assert read(servo_id, "return_delay") == 0 and read(servo_id, "p_coefficient") == 16
        assert read(servo_id, "lock") == 1  # EEPROM locked again after the writes
    gripper = cal.ids["gripper"]
    assert [read(gripper, n) for n in ("max_torque", "protection_current", "overload_torque")] == [500, 250, 25]
    assert read(cal.ids["elbow_flex"], "max_torque") == 1000  # the other joints keep their strength
    port.closePort()


def test_a_servo_refuses_a_goal_beyond_its_limits_even_from_a_raw_write(emulator):
    cal = _users_arm_calibration()
    with MotorBus(emulator.path, cal.ids) as bus:
        arm = SO101Follower(bus, cal)
        arm.connect()
        arm.torque(True)
        bus.write("goal_position", "shoulder_pan", 100)  # past the software clamp: only the servo can refuse
        import time

        time.sleep(0.6)  # 1,248 ticks at the emulated servo's top speed
        assert emulator.register(1, "present_position") == cal.motors["shoulder_pan"].range_min
        arm.close()


def test_a_hot_servo_stops_the_arm_with_torque_off(emulator):
    cal = twin_calibration(RANGES)
    with MotorBus(emulator.path, cal.ids) as bus:
        arm = SO101Follower(bus, cal)
        arm.connect()
        arm.torque(True)
        emulator.servo(3).temperature = 61.0
        with pytest.raises(ServoOverheated, match="elbow_flex is at 61 C .*torque is off"):
            for _ in range(6):  # one servo checked per tick: all six within six ticks
                arm.read()
        assert all(emulator.register(i, "torque_enable") == 0 for i in range(1, 7))


def test_a_gripper_squeezing_for_minutes_is_stopped_before_it_cooks():
    now = [0.0]
    cal = twin_calibration(RANGES)
    with BusEmulator(list(MOTORS.values()), clock=lambda: now[0]) as emu, MotorBus(emu.path, cal.ids) as bus:
        arm = SO101Follower(bus, cal, max_step_rad=4.0)  # the goal all the way closed, as a stall commands it
        arm.connect()
        emu.servo(6).move_to(cal.sim_to_raw("gripper", 1.5))  # open
        arm.torque(True)
        emu.servo(6).stop_at = float(cal.sim_to_raw("gripper", 0.3))  # the cube between the jaws
        closed = np.array([0.0, 0.0, 0.0, 0.0, 0.0, RANGES[5, 0]])
        with pytest.raises(ServoOverheated, match="gripper is at 55 C") as stopped:
            for _ in range(400):
                now[0] += 2.0  # two seconds of squeezing per tick
                arm.write(closed)
                arm.read()
        assert 120 < now[0] < 600  # minutes of squeezing, stopped well before the servo's 70 C cut-off
        assert emu.servo(6).temperature < 60 and arm.health["gripper"] == (55, 500)  # squeezing at its cap
        assert stopped.value and all(emu.register(i, "torque_enable") == 0 for i in range(1, 7))


def test_torque_is_verified_even_when_sync_writes_get_lost():
    cal = twin_calibration(RANGES)
    with BusEmulator(list(MOTORS.values()), Faults(drop=0.3), seed=3) as emu, \
            MotorBus(emu.path, cal.ids, timeout_s=0.01, retries=8) as bus:
        arm = SO101Follower(bus, cal)
        arm.torque(True)
        assert all(emu.register(i, "torque_enable") == 1 for i in range(1, 7))
        arm.torque(False)
        assert all(emu.register(i, "torque_enable") == 0 for i in range(1, 7))


def test_watchdog_stops_after_consecutive_failed_reads(emulator):
    cal = twin_calibration(RANGES)
    with MotorBus(emulator.path, cal.ids, timeout_s=0.05, retries=0) as bus:  # 5 ms failed on a busy machine
        arm = SO101Follower(bus, cal, watchdog=3)
        arm.torque(True)
        good = arm.read()
        emulator.faults = Faults(corrupt=1.0)  # every reply garbled; writes (which need none) still land
        assert arm.read() is good and arm.read() is good  # stale but tolerated
        with pytest.raises(WatchdogTripped, match="3 consecutive failed reads"):
            arm.read()
        assert all(emulator.register(i, "torque_enable") == 0 for i in range(1, 7))  # the trip stopped the arm


@pytest.mark.slow
def test_soak_10000_cycles_with_faults_ends_with_torque_off():
    """10,000 control cycles at 1% dropped + 1% corrupted replies: no crash, every
    failure retried, reported or knowingly absorbed (a stale reading under the watchdog),
    torque off at the end (read from the emulator). Faults are seeded; machine load only
    adds timeouts, which the same accounting covers."""
    cal = twin_calibration(RANGES)
    reported = 0
    with BusEmulator(list(MOTORS.values()), Faults(drop=0.01, corrupt=0.01), seed=7) as emu, \
            MotorBus(emu.path, cal.ids, timeout_s=0.005, retries=3) as bus:
        arm = SO101Follower(bus, cal, watchdog=5)
        arm.connect()
        arm.torque(True)
        rng = np.random.default_rng(0)
        for _ in range(10_000):
            try:
                state = arm.read()
                arm.write(state.position + rng.uniform(-0.02, 0.02, 6))
            except MotorError:
                reported += 1
        arm.close()
        lost = emu.stats["dropped"] + emu.stats["corrupted"]
        assert lost > 500  # the faults really happened
        assert bus.stats.retries + bus.stats.failures >= lost
        assert reported + arm.tolerated == bus.stats.failures  # every failure reached the caller or was absorbed
        assert all(emu.register(i, "torque_enable") == 0 for i in range(1, 7))


# ------------------------------------------------------------------------------ commands


@pytest.mark.slow
def test_emulate_prints_its_port_first_and_scan_finds_the_servos(tmp_path):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "so101_sim2real", "emulate", "--ids", "1-3,7"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_works)
    try:
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/")
        scan = subprocess.run([sys.executable, "-m", "so101_sim2real", "motors", "scan", "--port", port, "--json"],
                              capture_output=True, text=True, timeout=120)
        assert scan.returncode == 0, scan.stderr
        servos = json.loads(scan.stdout)["servos"]
        assert [s["id"] for s in servos] == [1, 2, 3, 7]
        assert all(s["model"] == 777 and s["firmware"] == "3.10" and s["voltage_v"] == 12.0 for s in servos)
    finally:
        proc.send_signal(2)  # Ctrl-C
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "stopped" in err


def test_bad_faults_and_ids_are_one_line_errors():
    import subprocess
    import sys

    for args, expected in ((["--faults", "drop=2"], "drop=2"), (["--ids", "1-x"], "--ids")):
        proc = subprocess.run([sys.executable, "-m", "so101_sim2real", "emulate", *args], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 2 and expected in proc.stderr and proc.stderr.count("\n") == 1


# ------------------------------------------------------------------------------ setup, calibration


def test_setup_assigns_id_and_verifies():
    from so101_sim2real.hardware.setup import assign

    with BusEmulator([1]) as emu:  # a factory-fresh servo answers as ID 1
        info = assign(emu.path, "gripper", 6)
        assert info.id == 6 and emu.register(6, "id") == 6 and emu.register(6, "lock") == 1


def test_setup_refuses_more_than_one_servo():
    from so101_sim2real.hardware.setup import assign

    with BusEmulator([1, 2]) as emu, pytest.raises(Exception, match="exactly one servo.*connect only"):
        assign(emu.path, "gripper", 6)


def test_calibration_records_offsets_ranges_and_sim_zero(emulator, tmp_path):
    from so101_sim2real.hardware.setup import calibrate

    middle = {1: 2500, 2: 1800, 3: 2100, 4: 2000, 5: 3000, 6: 2048}
    zero = {1: 2600, 2: 1700, 3: 2050, 4: 1900, 5: 3100, 6: 1500}  # raw ticks where the sim's zero pose is
    script = iter([
        lambda: [emulator.servo(i).move_to(a) for i, a in middle.items()],
        lambda: None,
        lambda: [emulator.servo(i).move_to(z) for i, z in zero.items()],
    ])
    sweep = iter(range(4))

    def done():
        step = next(sweep)
        for i, a in middle.items():  # swing each joint +-600 ticks around its middle
            emulator.servo(i).move_to(a + (600 if step == 1 else -600 if step == 2 else 0))
        return step == 3

    with MotorBus(emulator.path, MOTORS) as bus:
        cal = calibrate(bus, lambda msg: next(script)(), lambda msg: (next(script)(), done)[1],
                        signs={"elbow_flex": -1})
    for i, joint in enumerate(JOINT_NAMES, start=1):
        m = cal.motors[joint]
        assert m.homing_offset == middle[i] - 2047 == emulator.register(i, "homing_offset")
        assert (m.range_min, m.range_max) == (2047 - 600, 2047 + 600)
        present_at_zero = zero[i] - m.homing_offset
        assert cal.raw_to_sim(joint, present_at_zero) == pytest.approx(0.0, abs=1e-9)
    assert cal.sim["elbow_flex"].sign == -1
    cal.save(tmp_path / "arm.json")
    assert json.loads((tmp_path / "arm.json").read_text())["gripper"]["homing_offset"] == 1


def test_a_failed_calibration_leaves_the_servos_homing_offsets_as_they_were(emulator):
    from so101_sim2real.hardware.setup import calibrate

    with MotorBus(emulator.path, MOTORS) as bus:
        for motor in JOINT_NAMES:
            bus.write_eeprom("homing_offset", motor, 100 + MOTORS[motor])  # the arm's current calibration
        with pytest.raises(So101Error, match="moved less than 200 ticks"):
            calibrate(bus, lambda msg: None, lambda msg: lambda: True)  # nobody swept the joints
        assert [emulator.register(i, "homing_offset") for i in MOTORS.values()] == [101, 102, 103, 104, 105, 106]
        assert all(emulator.register(i, "lock") == 1 for i in MOTORS.values())


def test_a_homing_offset_that_overflows_is_explained(emulator):
    from so101_sim2real.hardware.setup import calibrate

    with MotorBus(emulator.path, MOTORS) as bus:
        def ask(msg):
            emulator.servo(3).move_to(4095)  # 4095 - 2047 = 2048 > 2047

        with pytest.raises(Exception, match="elbow_flex: homing offset 2048 does not fit"):
            calibrate(bus, ask, lambda msg: lambda: True)


def test_leader_reads_with_torque_off(emulator):
    from so101_sim2real.hardware.so101 import SO101Leader

    cal = twin_calibration(RANGES)
    emulator.servo(3).regs[40] = 1  # left on by a previous program
    with MotorBus(emulator.path, cal.ids) as bus:
        leader = SO101Leader(bus, cal)
        leader.connect()
        bus.read("lock", "gripper")  # round trip: the torque-off sync write has been handled
        assert all(emulator.register(i, "torque_enable") == 0 for i in range(1, 7))
        emulator.servo(3).move_to(CENTRE_TICK + 4095 / 4)  # a hand turns the elbow a quarter turn
        assert leader.read().position[2] == pytest.approx(math.pi / 2, abs=2e-3)


@pytest.mark.slow
def test_motors_setup_command_walks_the_user_through_six_servos(capsys, monkeypatch):
    """The person connects one factory-fresh servo (ID 1) per prompt; the command gives each its ID."""
    from fixtures import run_cli
    from so101_sim2real.hardware.emulator import Servo

    with BusEmulator([]) as emu:
        done = []

        def connect_next(message, **_):
            assert "connect ONLY the" in message
            with emu.lock:
                done.extend(emu.servos)
                emu.servos = [Servo(1)]  # the next servo, straight from the factory

        monkeypatch.setattr("typer.prompt", connect_next)
        code, out, err = run_cli(capsys, "motors", "setup", "--port", emu.path)
        done.extend(emu.servos)
    assert code == 0, err
    assert [s.servo_id for s in done] == [6, 5, 4, 3, 2, 1]  # gripper first, shoulder_pan last
    assert "gripper: id 6" in out and "shoulder_pan: id 1" in out and "all six servos set up" in out


def test_calibrate_joints_command_writes_lerobot_and_sim_files(capsys, monkeypatch, emulator, tmp_path):
    import time

    from fixtures import run_cli

    def sweep(*_):  # the person swings every joint through its range, then presses Enter
        for offset in (600, -600, 0):
            for i in range(1, 7):
                emulator.servo(i).move_to(CENTRE_TICK + offset)
            time.sleep(0.2)
        return ""

    monkeypatch.setattr("typer.prompt", lambda message, **_: None)  # Enter at the middle and the zero pose
    monkeypatch.setattr("builtins.input", sweep)
    code, out, err = run_cli(capsys, "calibrate", "joints", "--port", emulator.path, "--id", "arm1", "--root",
                             str(tmp_path), "--sign", "elbow_flex=-1")
    assert code == 0, err
    lerobot = tmp_path / "robots" / "so_follower" / "arm1.json"
    assert lerobot.is_file() and (lerobot.parent / "arm1.so101_sim.json").is_file()
    assert set(json.loads(lerobot.read_text())) == set(JOINT_NAMES)
    assert json.loads((lerobot.parent / "arm1.so101_sim.json").read_text())["elbow_flex"]["sign"] == -1
    code, _, err = run_cli(capsys, "calibrate", "joints", "--port", emulator.path, "--id", "x", "--sign", "elbow=2")
    assert code == 2 and "--sign 'elbow=2'" in err


def test_the_scripted_hand_rehearsal_recovers_the_arm_it_built():
    """Calibrating the emulated arm (horns off centre) with the scripted hand recovers, for every
    joint, the sim angle of any pose and the mechanical range, to within a tick or two."""
    from so101_sim2real.control.rehearsal import calibration_rehearsal
    from so101_sim2real.hardware.calibrating_hand import TICKS_PER_RAD
    from so101_sim2real.hardware.setup import calibrate

    with calibration_rehearsal(seed=3, say=lambda _: None, sweep_s=0.6) as (port, hand), \
            MotorBus(port, MOTORS) as bus:
        cal = calibrate(bus, hand.wait, hand.sweep)
        assert len({round(a.zero_tick) for a in hand.arm.values()}) > 1  # the horns really are off centre
        for fraction in (0.1, 0.5, 0.9):
            pose = {j: a.low_rad + fraction * (a.high_rad - a.low_rad) for j, a in hand.arm.items()}
            hand.pose(pose)
            read = bus.sync_read("present_position")
            for joint in JOINT_NAMES:
                assert cal.raw_to_sim(joint, read[joint]) == pytest.approx(pose[joint], abs=1.5 / TICKS_PER_RAD)
    truth = np.array([(a.low_rad, a.high_rad) for a in hand.arm.values()])
    assert np.abs(cal.sim_ranges() - truth).max() <= 2 / TICKS_PER_RAD


def test_calibrate_joints_rehearses_on_the_emulator_and_never_replaces_a_calibration(capsys, tmp_path):
    from fixtures import run_cli

    args = ("calibrate", "joints", "--port", "emulator", "--id", "rehearsal", "--root", str(tmp_path))
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "the hand swings every joint" in out and "of the emulated arm" in out
    written = tmp_path / "robots" / "so_follower" / "rehearsal.json"
    motors = json.loads(written.read_text())
    assert all(m["range_max"] - m["range_min"] > 200 for m in motors.values())
    before = written.read_bytes()
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "choose another --id" in err and written.read_bytes() == before


@pytest.mark.slow  # scans every baud rate for each of six servos (5 s)
def test_motors_setup_rehearses_on_the_emulator(capsys):
    from fixtures import run_cli

    code, out, err = run_cli(capsys, "motors", "setup", "--port", "emulator")
    assert code == 0, err
    assert out.count("factory-fresh servo") == 6
    assert [line.split(",")[0] for line in out.splitlines() if ": id " in line] == [
        "gripper: id 6", "wrist_roll: id 5", "wrist_flex: id 4", "elbow_flex: id 3", "shoulder_lift: id 2",
        "shoulder_pan: id 1"]


# ---------------------------------------------------------------------------------- a busy machine


def test_the_twins_servos_answer_while_another_thread_holds_the_world():
    """Issue 26.7: the serving thread waited behind physics catch-ups (and would behind a render),
    up to 0.9 s at load 6. It never takes the world's lock now: goals and positions cross between
    physics slices."""
    import threading

    from so101_sim2real.control.twin_bus import attach_twin

    with BusEmulator(list(MOTORS.values())) as emu:
        bridge = attach_twin(emu)
        emu.on_stop.append(bridge.stop)
        bridge.start()
        cal = bridge.calibration
        held, release = threading.Event(), threading.Event()

        def hold_the_world():
            with bridge.lock:
                held.set()
                release.wait(30)

        holder = threading.Thread(target=hold_the_world, daemon=True)
        holder.start()
        held.wait(5)
        try:
            with MotorBus(emu.path, cal.ids, timeout_s=2.0, retries=0) as bus:
                before = bus.sync_read("present_position")
                bus.write("torque_enable", "elbow_flex", 1)
                bus.write("goal_position", "elbow_flex", before["elbow_flex"] + 300)
                assert bus.read("goal_position", "elbow_flex") == before["elbow_flex"] + 300
        finally:
            release.set()
            holder.join(5)
        assert emu.servo(cal.ids["elbow_flex"]).target == before["elbow_flex"] + 300  # what physics now drives to


def test_the_load_bench_counts_failed_reads_up_to_the_stop(monkeypatch):
    """scripts/bench_emulator_load.py's loop: tolerated failed reads, then the watchdog's stop, counted."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / "bench_emulator_load.py"
    spec = importlib.util.spec_from_file_location("bench_emulator_load", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    cal = twin_calibration(RANGES)
    record = bench.Record()
    with BusEmulator(list(MOTORS.values())) as emu, MotorBus(emu.path, cal.ids, timeout_s=0.05, retries=0) as bus:
        bus.protocol.t = bench.TimedTransport(bus.protocol.t.port, 0.05, record)
        arm = SO101Follower(bus, cal)
        arm.torque(True)
        arm.read()
        emu.faults = Faults(corrupt=1.0)  # every reply garbled from here on
        bench.drive(arm, 60.0, 0.0, record)
        assert all(emu.register(i, "torque_enable") == 0 for i in range(1, 7))  # the stop turned torque off
    row = record.summary()
    assert row["stopped"] and row["stopped_at_tick"] == 5 and row["failed_reads"] == 5
    assert row["max_consecutive_failures"] == 5 and row["replies"] > 0
