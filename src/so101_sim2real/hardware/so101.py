"""The SO-101 follower (a :class:`~so101_sim2real.interfaces.Robot`) and leader arms.

Joint values are sim radians (the MJCF's zero and sign), converted through the user's
calibration. The follower's goals are clamped to the calibrated ranges and a maximum
step per tick in software, and by each servo's own position limits, written at connect;
the gripper's torque and current are capped; one servo's temperature and load are
checked every tick; torque goes off on disconnect, and a watchdog stops the arm after
``watchdog`` consecutive failed reads.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable

import numpy as np

from so101_sim2real.errors import DeviceFault, So101Error
from so101_sim2real.hardware.bus import MotorBus, MotorError
from so101_sim2real.hardware.joint_calibration import ArmCalibration
from so101_sim2real.hardware.protocol import ProtocolError
from so101_sim2real.interfaces import JOINT_NAMES, JointState, SafetyLimits
from so101_sim2real.kinematics import JointVelocity

# What LeRobot configures on an SO-101 follower: softer P than the factory's 32 to avoid
# shaking, no I, the factory D, fast acceleration, immediate replies (return delay 0: the
# factory's 250 is 500 us per reply). Each servo also gets its calibrated range as its own
# position limits, so a goal beyond them is refused by the servo even if software fails.
FOLLOWER_SETTINGS = {"p_coefficient": 16, "i_coefficient": 0, "d_coefficient": 32, "return_delay": 0}
FOLLOWER_RAM = {"acceleration": 254}
# LeRobot caps the gripper "to avoid burnout": squeezing a cube is a stall, for minutes.
GRIPPER_CAPS = {"max_torque": 500, "protection_current": 250, "overload_torque": 25}
# A leader that follows the follower runs soft, so a hand overpowers it easily (HIL-SERL).
LEADER_FOLLOW_GAINS = {"p_coefficient": 16, "i_coefficient": 0, "d_coefficient": 16}
DEFAULT_MAX_STEP_RAD = 0.15  # per control tick; about 8.6 degrees
# The STS3215 shuts itself down at 70 C; stop well before. A squeezing gripper sits at its
# torque cap by design, so load alone is no fault: heat is what it costs.
MAX_TEMPERATURE_C = 55


class WatchdogTripped(DeviceFault):
    """Too many consecutive failed reads: the arm was stopped."""


class ServoOverheated(DeviceFault):
    """A servo ran too hot: the arm was stopped."""


class WriteFailed(DeviceFault):
    """Goals could not be sent (the port failed): the arm was stopped."""


class _Arm:
    name: str  # each arm's own, set by its class

    def __init__(self, bus: MotorBus, calibration: ArmCalibration, max_step_rad: float = DEFAULT_MAX_STEP_RAD,
                 watchdog: int = 5):
        self.bus, self.cal, self.watchdog = bus, calibration, watchdog
        self.limits = SafetyLimits.from_ranges(calibration.sim_ranges(), max_step_rad)
        self._torque = False
        self.failures = 0
        self.tolerated = 0  # bus failures absorbed here (a stale reading returned), not raised to the caller
        self._velocity = JointVelocity()
        self._last: JointState | None = None
        self.firmware: dict[str, tuple[int, int]] = {}
        self.on_close: list[Callable[[], None]] = []  # run after the bus is closed (e.g. stop an in-process emulator)

    def connect(self) -> None:
        """Open the bus and check every motor is there, an STS3215, on one firmware."""
        if not self.bus.is_open:
            self.bus.open()
        self.firmware = self.bus.handshake()

    def read(self) -> JointState:
        """Joint positions (sim radians) and finite-difference velocities."""
        try:
            raw = self.bus.sync_read("present_position")
        except MotorError as exc:
            self.failures += 1
            if self.failures >= self.watchdog or self._last is None:
                self._on_watchdog()
                raise WatchdogTripped(f"{self.failures} consecutive failed reads ({exc}); the arm was stopped") \
                    from None
            self.tolerated += 1
            return self._last
        self.failures = 0
        now = time.monotonic()
        pos = self.cal.to_sim(raw)
        self._last = JointState(pos, self._velocity.update(now, pos), now)
        return self._last

    def _on_watchdog(self) -> None:
        pass

    def write(self, targets: np.ndarray) -> None:
        """Goal positions; clamped here again, so a caller that skipped the controller is still safe."""
        if self._last is None:
            raise So101Error("read the arm before writing goals (the clamp needs the measured position)")
        targets, _ = self.limits.clamp(np.asarray(targets, dtype=np.float64), self._last.position)
        try:
            self.bus.sync_write("goal_position", self.cal.to_raw(targets))
        except (ProtocolError, MotorError) as exc:
            self._on_watchdog()
            raise WriteFailed(f"{self.name}: goals not sent ({exc})") from None

    def torque(self, enabled: bool) -> None:
        """Torque on (goals first set to where the joints are, so nothing jumps) or off; verified."""
        if enabled:
            raw = self.bus.sync_read("present_position")
            self.bus.sync_write("goal_position", raw)
            self._last = None
            self.read()
        value = int(enabled)
        self.bus.sync_write("torque_enable", dict.fromkeys(JOINT_NAMES, value))
        states = self.bus.sync_read("torque_enable")
        for motor, state in states.items():
            if state != value:  # that part of the sync write was lost: say it again, and check
                self.bus.write("torque_enable", motor, value, verify=True)
        self._torque = enabled

    @property
    def torque_enabled(self) -> bool:
        return self._torque

    def disconnect(self) -> None:
        self.bus.close()

    def reconnect(self) -> None:
        """After a fault: the port reopened (a replugged adapter is a new file), the handshake and
        ``connect``'s settings again (a power-cycled servo forgot its RAM), torque off, one read.
        Raises while the arm is not back."""
        with contextlib.suppress(Exception):  # the old port may be dead already
            self.bus.close()
        self._torque, self.failures, self._last = False, 0, None
        self.connect()
        for _ in JOINT_NAMES:  # every servo's health once (the follower checks one per read)
            self.read()

    def close(self) -> None:
        """Torque off (whatever state the bus is in), then the port, then ``on_close`` hooks."""
        try:
            if self.bus.is_open:
                self.torque(False)
        finally:
            self.disconnect()
            for hook in self.on_close:
                hook()
            self.on_close.clear()


class SO101Leader(_Arm):
    """The arm a person moves: limp, or, for a HIL-SERL takeover (``follows``), following the
    follower on low gains so that a person can grab it at any moment."""

    name = "so101-leader"

    def __init__(self, bus: MotorBus, calibration: ArmCalibration, follows: bool = False,
                 max_step_rad: float = DEFAULT_MAX_STEP_RAD, watchdog: int = 5):
        super().__init__(bus, calibration, max_step_rad, watchdog)
        self.follows = follows
        self.goal: np.ndarray | None = None  # where ``follow`` last sent it (after the clamp); None while limp

    def connect(self) -> None:
        """Handshake and torque off; a following leader also gets its low gains (P 16, D 16)."""
        super().connect()
        self.torque(False)
        if self.follows:
            for motor in JOINT_NAMES:
                for name, value in LEADER_FOLLOW_GAINS.items():
                    if self.bus.read(name, motor) != value:
                        self.bus.write_eeprom(name, motor, value)

    def follow(self, position: np.ndarray) -> None:
        """Torque on (from where it is) and a step toward ``position``, clamped like any moving arm."""
        if not self.follows:
            raise So101Error("this leader arm was connected read-only (follows=False)")
        if not self._torque:
            self.torque(True)
        assert self._last is not None  # torque on read the arm (a failed read raised)
        self.goal, _ = self.limits.clamp(np.asarray(position, dtype=np.float64), self._last.position)
        self.write(self.goal)

    def limp(self) -> None:
        """Torque off: a person's hand moves it."""
        self.goal = None
        if self._torque:
            self.torque(False)


class SO101Follower(_Arm):
    """The arm the policy moves."""

    name = "so101"

    def __init__(self, bus: MotorBus, calibration: ArmCalibration, max_step_rad: float = DEFAULT_MAX_STEP_RAD,
                 watchdog: int = 5):
        super().__init__(bus, calibration, max_step_rad, watchdog)
        self.max_temperature_c = MAX_TEMPERATURE_C
        self.health: dict[str, tuple[int, int]] = {}  # motor -> (temperature C, |load| in 0.1 %), last checked
        self._health_tick = 0

    def connect(self) -> None:
        """Handshake, torque off, then each servo's EEPROM as it should be (written only where it
        differs, each write verified): LeRobot's gains and reply delay, the calibrated range as
        position limits, the gripper's torque and current caps."""
        super().connect()
        self.torque(False)
        for motor in JOINT_NAMES:
            for name, value in self.eeprom_settings(motor).items():
                if self.bus.read(name, motor) != value:
                    self.bus.write_eeprom(name, motor, value)
            for name, value in FOLLOWER_RAM.items():
                self.bus.write(name, motor, value)

    def eeprom_settings(self, motor: str) -> dict[str, int]:
        """What ``connect`` puts in ``motor``'s EEPROM."""
        m = self.cal.motors[motor]
        limits = {"min_position_limit": m.range_min, "max_position_limit": m.range_max}
        return {**FOLLOWER_SETTINGS, **limits, **(GRIPPER_CAPS if motor == "gripper" else {})}

    def read(self) -> JointState:
        """Joint positions, then one servo's temperature and load (a different servo each tick)."""
        state = super().read()
        self._check_health()
        return state

    def _check_health(self) -> None:
        motor = JOINT_NAMES[self._health_tick % len(JOINT_NAMES)]
        self._health_tick += 1
        try:
            health = self.bus.read_span(["present_load", "present_temperature"], motor)  # one 4-byte read
            temperature, load = health["present_temperature"], abs(health["present_load"])
        except MotorError:
            self.tolerated += 1  # position reads carry the watchdog; a missed health check waits for its turn
            return
        self.health[motor] = (temperature, load)
        if temperature >= self.max_temperature_c:
            with contextlib.suppress(So101Error):
                self.torque(False)
            raise ServoOverheated(f"{motor} is at {temperature} C (limit {self.max_temperature_c} C, load "
                                  f"{load / 10:.0f}%); torque is off. Let it cool for a few minutes and check "
                                  f"what it presses on before running again")

    def advance(self, period_s: float) -> None:
        """Real time passes by itself; the runner keeps the rate."""

    def _on_watchdog(self) -> None:
        with contextlib.suppress(So101Error):  # the bus is failing: the caller's exit path tries again
            self.torque(False)


def open_follower(port: str, calibration: ArmCalibration, max_step_rad: float | None = None, *,
                  on_close: Iterable[Callable[[], None]] = ()) -> SO101Follower:
    """The follower on ``port`` (a serial device, or the pty of an emulator), connected.

    Its bus addresses ``calibration``'s servo IDs at 1 Mbaud, with the status timeout that
    suits the port (:func:`~so101_sim2real.hardware.bus.default_timeout_s`: a real servo's, or
    an emulator's on a pty); its goals are clamped to the calibrated ranges and to
    ``max_step_rad`` per tick (default :data:`DEFAULT_MAX_STEP_RAD`). ``on_close`` runs after
    its port is closed (e.g. stopping an in-process emulator). If connecting fails, the arm is
    closed again (torque off, the port, ``on_close``) before the error is raised.
    """
    robot = SO101Follower(MotorBus(port, calibration.ids), calibration, max_step_rad or DEFAULT_MAX_STEP_RAD)
    robot.on_close.extend(on_close)
    try:
        robot.connect()
    except BaseException:
        robot.close()
        raise
    return robot
