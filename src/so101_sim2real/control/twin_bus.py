"""``so101 emulate --twin``: emulated servos whose shafts are the sim twin's joints.

Goal positions written over the bus become the twin's actuator targets (through the
twin's calibration, the centre tick = 0 rad), present positions are its joint angles, and
the physics runs in real time in a thread. So the real driver, bus and follower move
the twin; with the twin's camera the whole real code path runs without an arm.

Two locks: the world's (``bridge.lock``: physics, resets, renders, anyone reading the
cube) and the emulator's register files (``emu.lock``: the serving thread). The serving
thread never touches the world and never takes its lock: a servo keeps the goal it was
given and the position the physics last measured, and the physics thread exchanges
those between slices of a few steps. So a reply never waits behind a physics catch-up
or a render, nor behind a thread descheduled while it holds the world (issue 26.7).
"""

from __future__ import annotations

import threading
import time

import mujoco
import numpy as np

from so101_sim2real.hardware.emulator import BusEmulator, Servo
from so101_sim2real.hardware.joint_calibration import ArmCalibration, twin_calibration
from so101_sim2real.interfaces import JOINT_NAMES
from so101_sim2real.sim import scene as S
from so101_sim2real.sim.standin import StandIn, joint_array
from so101_sim2real.sim.standin_robot import CommandPath
from so101_sim2real.sim.standin_scene import standin_scene
from so101_sim2real.sim.task import LiftCubeTask
from so101_sim2real.spec import Spec, default_spec

SLICE_STEPS = 5  # physics steps per hold of the world's lock (about 0.2 ms at full speed)
CATCH_UP_STEPS = 50  # at most this many steps per wake-up; beyond, the twin falls behind real time


def twin_arm_calibration(model: mujoco.MjModel | None = None) -> ArmCalibration:
    """The emulated twin arm's calibration (``--calibration twin``): what ``so101 emulate --twin`` uses."""
    m = model if model is not None else S.build_model()
    return twin_calibration(np.array([m.jnt_range[m.joint(j).id] for j in S.JOINTS]))


class TwinBridge:
    """The twin's world, stepped in real time, shared by the servos, a camera and the task.

    ``standin``: a stand-in world's arm between the servos and the joints (its joint offsets,
    top speed and backlash; its latency is the real pipeline's own here, so none is added)."""

    def __init__(self, task: LiftCubeTask, lock: threading.RLock | None = None,
                 registers: threading.RLock | None = None, standin: StandIn | None = None):
        self.task = task
        self.standin = standin
        self.lock = lock or threading.RLock()  # the world
        self.registers = registers or threading.RLock()  # the servos' register files (the emulator's lock)
        m = task.model
        self.calibration: ArmCalibration = twin_arm_calibration(m)
        self._qpos = [m.jnt_qposadr[m.joint(j).id] for j in S.JOINTS]
        self._act = [m.actuator(j).id for j in S.JOINTS]
        self._gain = m.actuator_gainprm[self._act, 0].copy()
        self._bias = m.actuator_biasprm[self._act, :3].copy()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.servos: list[TwinServo] = []
        offsets = standin.get("joint_offsets") if standin else None
        self.offset = joint_array(offsets.deg) if offsets else np.zeros(len(S.JOINTS))
        gaps = standin is not None and any(standin.has(name) for name in ("backlash", "max_speed"))
        self.path = CommandPath(standin, len(S.JOINTS), with_latency=False) if standin and gaps else None
        self._targets = np.full(len(S.JOINTS), np.nan)  # each joint's goal (rad), NaN while limp

    # joints as servos -------------------------------------------------------------------------

    def present(self, joint: int) -> int:
        """The joint as its servo reads it (a stand-in's calibration error included), in raw ticks."""
        position = float(self.task.data.qpos[self._qpos[joint]]) + self.offset[joint]
        return self.calibration.sim_to_raw(JOINT_NAMES[joint], position)

    def drive(self, joint: int, goal_raw: float | None) -> None:
        """Torque on toward a goal, or limp (the actuator's gains zeroed) when ``None``."""
        m, a = self.task.model, self._act[joint]
        if goal_raw is None:
            m.actuator_gainprm[a, 0] = 0.0
            m.actuator_biasprm[a, :3] = 0.0
            self._targets[joint] = np.nan
            return
        m.actuator_gainprm[a, 0] = self._gain[joint]
        m.actuator_biasprm[a, :3] = self._bias[joint]
        target = self.calibration.raw_to_sim(JOINT_NAMES[joint], goal_raw) - self.offset[joint]
        self._targets[joint] = target
        if self.path is None:
            self.task.data.ctrl[a] = target

    def _physics(self, steps: int) -> None:
        """``steps`` physics steps under the world's lock; through a stand-in's command path, one at a time."""
        m, d = self.task.model, self.task.data
        if self.path is None:
            mujoco.mj_step(m, d, nstep=steps)
            return
        self.path.send(d.time, self._targets)
        for _ in range(steps):
            position = d.qpos[self._qpos].copy()
            ctrl = self.path.step(d.time, m.opt.timestep, position)
            if ctrl is not None:
                held = ~np.isnan(self._targets)
                d.ctrl[np.asarray(self._act)[held]] = ctrl[held]
            mujoco.mj_step(m, d)

    # the world --------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> dict:
        """A new episode: the world is reset and each servo holds where its joint now is."""
        with self.lock:
            info = self.task.reset(seed)
            if self.path is not None:
                self.path.reset()
            with self.registers:  # always world, then registers: the serving thread takes only the latter
                for servo in self.servos:
                    servo.hold_here()
            self.exchange()
            return info

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="twin-physics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def exchange(self) -> None:
        """Under the world's lock: each servo's goal to its actuator, each joint's position to its servo.
        Plain attribute reads and writes, atomic under the GIL: no register lock, so no wait."""
        for servo in self.servos:
            self.drive(servo.joint, servo.target)
            servo.measured = self.present(servo.joint)

    def _run(self) -> None:
        m, d = self.task.model, self.task.data
        start_wall, start_sim = time.monotonic(), d.time
        while not self._stop.is_set():
            behind = (time.monotonic() - start_wall) - (d.time - start_sim)
            due = min(int(behind / m.opt.timestep), CATCH_UP_STEPS)  # catch up after a stall, not forever
            for done in range(0, max(due, 1), SLICE_STEPS):  # the world's lock one slice at a time
                with self.lock:
                    self.exchange()
                    if due:
                        self._physics(min(SLICE_STEPS, due - done))
            if due == CATCH_UP_STEPS:
                start_wall, start_sim = time.monotonic(), d.time
            time.sleep(m.opt.timestep)  # about one step per wake-up: Python's share of the GIL stays small


class TwinServo(Servo):
    """An STS3215 whose shaft is one of the twin's joints. It never touches the world itself:
    ``target`` (raw ticks, None when limp) is what the physics thread drives the joint toward,
    ``measured`` (raw ticks) where it last found the joint."""

    def __init__(self, servo_id: int, bridge: TwinBridge, joint: int):
        self.bridge, self.joint = bridge, joint
        self.measured: int = bridge.present(joint)
        self.target: float | None = None
        super().__init__(servo_id, position=self.measured)

    def _move(self, dt: float, goal: float | None) -> tuple[float, float]:
        offset = self._get("homing_offset")
        before = self.actual
        self.target = None if goal is None else goal - offset
        self.actual = float(self.measured + offset)
        velocity = (self.actual - before) / dt if dt > 0 else 0.0
        return velocity, 0.0 if goal is None else goal - self.actual

    def hold_here(self) -> None:
        """After a reset (world and registers locked): hold where the joint now is."""
        self.measured = self.bridge.present(self.joint)
        self.actual = float(self.measured + self._get("homing_offset"))
        self._set("goal_position", self._present())
        self.update()


def attach_twin(emu: BusEmulator, spec: Spec | None = None, seed: int = 0,
                scene: S.SceneConfig | None = None, standin: StandIn | None = None) -> TwinBridge:
    """Replace ``emu``'s servos 1..6 by the twin's joints; starts and stops with the emulator.
    ``scene``: the twin's scene (e.g. a rig file's camera), today's by default; ``standin``: a
    stand-in world, its scene built on that one and its arm between the servos and the joints."""
    spec = spec or default_spec()
    if standin is not None:
        scene = standin_scene(standin, scene or S.SceneConfig(), spec.observation.source_size)
    bridge = TwinBridge(LiftCubeTask(spec, scene=scene), registers=emu.lock, standin=standin)
    bridge.task.reset(seed)
    ids = [s.servo_id for s in emu.servos]
    bridge.servos = [TwinServo(bridge.calibration.motors[j].id, bridge, i) for i, j in enumerate(JOINT_NAMES)
                     if bridge.calibration.motors[j].id in ids]
    bridge.exchange()
    emu.servos = list(bridge.servos)
    emu.on_start.append(bridge.start)
    emu.on_stop.append(bridge.stop)
    return bridge
