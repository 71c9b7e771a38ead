"""A scripted hand for the emulator: it does what ``so101 calibrate joints`` asks a person to do.

The emulated arm is assembled like a real one: each servo horn sits at some angle, so
the shaft tick at the sim's zero pose is not the centre tick, and each joint turns only
through its mechanical range. The hand knows that arm (it built it) and, with torque
off, moves the shafts as the calibration's prompts say: to the middle of every range,
through every range, to the sim's zero pose. So the procedure can be rehearsed without
an arm, and a test can check what the calibration recovered against the truth.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from so101_sim2real.arm import CENTRE_TICK, JOINT_NAMES, SERVO_IDS
from so101_sim2real.hardware.emulator import BusEmulator
from so101_sim2real.hardware.joint_calibration import TICKS_PER_DEGREE

TICKS_PER_RAD = math.degrees(1.0) * TICKS_PER_DEGREE


@dataclass(frozen=True)
class AssembledJoint:
    """One joint as built: where its shaft reads at the sim's zero, and how far it turns."""

    zero_tick: float  # shaft ticks (before any homing offset) at 0 rad in the MJCF
    low_rad: float
    high_rad: float

    def tick(self, rad: float) -> float:
        return self.zero_tick + rad * TICKS_PER_RAD

    @property
    def middle_rad(self) -> float:
        return (self.low_rad + self.high_rad) / 2


def assemble(ranges_rad: dict[str, tuple[float, float]], seed: int = 0, horn_spread: int = 300,
             ) -> dict[str, AssembledJoint]:
    """An arm whose horns sit up to ``horn_spread`` ticks off centre (seeded), with these ranges."""
    rng = random.Random(seed)
    return {j: AssembledJoint(CENTRE_TICK + rng.randint(-horn_spread, horn_spread), *ranges_rad[j])
            for j in JOINT_NAMES}


class ScriptedHand:
    """Moves the emulated shafts (torque off) as the calibration prompts ask.

    ``wait`` and ``sweep`` are the two callbacks of :func:`so101_sim2real.hardware.setup.calibrate`.
    """

    def __init__(self, emulator: BusEmulator, arm: dict[str, AssembledJoint], sweep_s: float = 1.5,
                 say: Callable[[str], None] = lambda _: None):
        self.emulator, self.arm, self.sweep_s, self.say = emulator, arm, sweep_s, say

    def pose(self, rad: dict[str, float]) -> None:
        """Put every joint at ``rad`` (sim radians), clamped to its range as a real joint is."""
        with self.emulator.lock:
            for joint, a in self.arm.items():
                angle = min(max(rad[joint], a.low_rad), a.high_rad)
                self.emulator.servo(SERVO_IDS[joint]).move_to(a.tick(angle))

    def wait(self, message: str) -> None:
        """Hold the pose a prompt asks for: the middle of every range, or the sim's zero."""
        self.say(message)
        if "MIDDLE" in message:
            self.pose({j: a.middle_rad for j, a in self.arm.items()})
            self.say("  (the hand holds every joint at the middle of its range)")
        elif "ZERO" in message:
            self.pose(dict.fromkeys(self.arm, 0.0))
            self.say("  (the hand puts the arm in the sim's zero pose)")
        else:
            raise ValueError(f"the scripted hand does not know this step: {message!r}")

    def sweep(self, message: str) -> Callable[[], bool]:
        """Swing every joint to both ends of its range and back, in a thread; the check says when it is over."""
        self.say(message)
        self.say(f"  (the hand swings every joint through its range, {self.sweep_s:.1f} s)")
        done = threading.Event()

        def swing() -> None:
            path = [(lambda a: a.low_rad), (lambda a: a.high_rad), (lambda a: a.middle_rad)]
            for target in path:
                self.pose({j: target(a) for j, a in self.arm.items()})
                time.sleep(self.sweep_s / len(path))  # held long enough for the 10 ms sampling to see it
            done.set()

        threading.Thread(target=swing, name="scripted-hand", daemon=True).start()
        return done.is_set
