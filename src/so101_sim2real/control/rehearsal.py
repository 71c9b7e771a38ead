"""Rehearsing the arm's set-up without an arm: the emulator plays the hardware and the person.

``motors setup --port emulator``: at each prompt a factory-fresh servo (ID 1) is on the
bus, as when the person plugs in the next one. ``calibrate joints --port emulator``: the
emulated arm has the twin's joint ranges and horns mounted off centre (seeded), and is
left somewhere in its range as a person would find it; a scripted hand then does each
step the calibration asks for. The code that runs is the one a real arm gets.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator

from so101_sim2real.arm import SERVO_IDS
from so101_sim2real.hardware.calibrating_hand import AssembledJoint, ScriptedHand, assemble
from so101_sim2real.hardware.emulator import BusEmulator, Servo
from so101_sim2real.sim import scene as S


def twin_joint_ranges() -> dict[str, tuple[float, float]]:
    """Each joint's range in sim radians, from the MJCF."""
    model = S.build_model()
    return {j: (float(model.jnt_range[model.joint(j).id][0]), float(model.jnt_range[model.joint(j).id][1]))
            for j in S.JOINTS}


def rehearsal_arm(seed: int = 0) -> dict[str, AssembledJoint]:
    return assemble(twin_joint_ranges(), seed)


@contextlib.contextmanager
def calibration_rehearsal(seed: int = 0, say: Callable[[str], None] = print,
                          sweep_s: float = 1.5) -> Iterator[tuple[str, ScriptedHand]]:
    """An emulated arm on a pseudo-terminal and the hand that moves it: ``(port, hand)``."""
    arm = rehearsal_arm(seed)
    rng = random.Random(seed + 1)
    with BusEmulator(list(SERVO_IDS.values())) as emulator:
        hand = ScriptedHand(emulator, arm, sweep_s=sweep_s, say=say)
        hand.pose({j: rng.uniform(a.low_rad, a.high_rad) for j, a in arm.items()})  # as it was left
        yield emulator.path, hand


@contextlib.contextmanager
def setup_rehearsal(say: Callable[[str], None] = print) -> Iterator[tuple[str, Callable[[str], None]]]:
    """An empty bus on a pseudo-terminal, and the prompt that connects the next new servo: ``(port, ask)``."""
    with BusEmulator([]) as emulator:
        def connect_next(message: str) -> None:
            say(message)
            with emulator.lock:
                emulator.servos = [Servo(1)]  # the servos done so far are unplugged; a new one from the box
            say("  (the emulator connects a factory-fresh servo: ID 1, 1 Mbaud)")

        yield emulator.path, connect_next
