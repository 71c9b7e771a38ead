"""An env: the robot, task, controller and perception one run drives, and how to build one.

The runner only sees the interfaces, so the sim twin and the real arm are the same
loop; what differs is assembled here, in one place that every command uses:
:func:`build_env` from a :class:`~so101_sim2real.control.description.RunDescription`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import numpy as np

from so101_sim2real.arm import SERVO_IDS
from so101_sim2real.control.controller import Controller
from so101_sim2real.control.description import EMULATOR_PORT, RunDescription, check_description
from so101_sim2real.errors import So101Error
from so101_sim2real.hardware.protocol import is_emulated
from so101_sim2real.interfaces import Camera, Frame, JointState, Perceived, Perception, Robot, StepResult, Task
from so101_sim2real.kinematics import Kinematics
from so101_sim2real.policy.state import Proprio
from so101_sim2real.sim import scene as S
from so101_sim2real.sim.perturb import NoisyPerception, OffsetRobot, Perturbation
from so101_sim2real.spec import Spec

if TYPE_CHECKING:
    import threading

    from so101_sim2real.control.twin_bus import TwinBridge
    from so101_sim2real.geometry.rig_file import RigGeometry
    from so101_sim2real.hardware.joint_calibration import ArmCalibration
    from so101_sim2real.perception.real import RealModels
    from so101_sim2real.sim.standin import StandIn
    from so101_sim2real.sim.task import LiftCubeTask


@dataclass
class Env:
    """What one run drives. ``twin`` is set when the world is the sim (for scripted pilots)."""

    spec: Spec
    robot: Robot
    task: Task
    controller: Controller
    perception: Perception | None
    period_s: float
    twin: LiftCubeTask | None = None
    geometry: RigGeometry | None = None  # the rig file the run was given (@rig), read once by build_env
    scored: bool = True  # False on a real arm: nothing judges success yet
    trained_spec: Spec | None = None  # the spec before this run's overrides, where they differ
    period_note: str | None = None  # an arm: the period it runs at, and why (measured, or asked for)

    @property
    def kinematics(self) -> Kinematics:
        return self.controller.kinematics

    def proprio(self, joints: JointState) -> Proprio:
        """The policy's proprioception from a joint reading: FK of the same MJCF (or, on the
        twin with ``live_physics``, the pose its last physics step left, as training read it)."""
        arm = len(self.kinematics.joints)
        pos, rot = self.kinematics.fk(joints.position[:arm])
        return Proprio(joint_pos=joints.position.copy(), joint_vel=joints.velocity.copy(), tcp_pos=pos, tcp_rot=rot)

    def reset(self, seed: int | None) -> tuple[JointState, dict]:
        """New episode: the task resets the world, the controller starts from the TCP."""
        info = self.task.reset(seed)
        joints = self.robot.read()
        self.controller.reset(joints.position)
        return joints, info

    def close(self) -> None:
        try:
            self.robot.close()
        finally:
            if self.perception is not None:
                self.perception.close()


# Builds the perception from a camera; None: the twin's privileged segmentation and depth.
PerceptionFactory = Callable[[Camera], Perception]

def load_rig_file(path: str | Path | None) -> RigGeometry | None:
    """``@rig FILE`` read (a rig.yaml or a camera.yaml); None without one."""
    from so101_sim2real.geometry.rig_file import read_rig

    return read_rig(path) if path else None


def build_env(spec: Spec, d: RunDescription, with_camera: bool = True,
              wait_for_operator: Callable[[str], None] | None = None, threads: int | None = None) -> Env:
    """The env a run description asks for: the twin, the driver on the emulated twin, or an arm.

    ``with_camera`` False: no rendering at all (a scripted pilot keeping no frames);
    ``wait_for_operator``: an arm's person, asked before each episode; ``threads``: the real
    perception's CPU threads when @perception_threads is not given."""
    check_description(d)
    geometry = load_rig_file(d.camera.rig)
    if geometry is not None and geometry.calibrated:
        from so101_sim2real.geometry.rig_file import check_size

        check_size(geometry, spec.observation.source_size)
    calibration = load_calibration(d.robot.calibration) if d.real_port else None  # a typo fails before the networks
    if calibration is not None and geometry is not None:
        from so101_sim2real.hardware.joint_calibration import with_joint_offsets

        calibration = with_joint_offsets(calibration, geometry.joint_offsets_rad)
    models = d.models(threads)
    if d.real_port and not is_emulated(d.robot.port or ""):  # check_description: an arm has its @port
        from so101_sim2real.perception import STANDIN_MARK
        from so101_sim2real.perception.examples import (
            example_sources,
            marked_sources,
            refuse_on_an_arm,
            refuse_standin_on_an_arm,
        )

        refuse_on_an_arm(example_sources(models.seg_ckpt, models.depth_model))  # from the files, before they load
        refuse_standin_on_an_arm(marked_sources(models.seg_ckpt, models.depth_model, STANDIN_MARK))
    camera = _open_arm_camera(spec, d, geometry) if d.real_port else None  # cheap, so before the networks
    try:
        make_perception = _perception_factory(spec, d, models)
        if d.real_port:
            assert camera is not None  # opened above for an arm
            env = _arm_env(spec, d, make_perception, calibration, camera, wait_for_operator, geometry)
    except BaseException:
        if camera is not None:
            camera.close()
        raise
    if d.robot.kind == "so101" and not d.real_port:  # the driver on an in-process twin
        assert d.robot.port is not None  # check_description: so101 needs @port
        env = so101_env(spec, d.robot.port, with_camera=with_camera, make_perception=make_perception,
                        geometry=geometry, standin=d.standin)
    elif not d.real_port:
        env = sim_env(spec, with_camera=with_camera, make_perception=make_perception, perturbation=d.world,
                      geometry=geometry, standin=d.standin)
    return env


def _perception_factory(spec: Spec, d: RunDescription, models: RealModels) -> PerceptionFactory | None:
    """The real perception's networks, loaded (and their backend chosen) now; None for the twin's own."""
    if d.perception.kind != "real":
        return None
    from so101_sim2real.control.frames import twin_frames
    from so101_sim2real.perception.fidelity import CHECK_FRAMES
    from so101_sim2real.perception.load import real_perception_factory

    assert d.robot.port is not None or not d.real_port
    make_perception = real_perception_factory(spec.observation, models,
                                              allow_examples=not d.real_port or is_emulated(d.robot.port or ""),
                                              frames=lambda: twin_frames(CHECK_FRAMES, spec),
                                              camera_check=d.real_port)
    return _ahead(make_perception) if d.real_port and models.overlap else make_perception


def _ahead(make_perception: PerceptionFactory) -> PerceptionFactory:
    """Perception a frame ahead in its own thread (control.overlap), on a serial port's camera: a real
    one reads from any thread. The twin's camera renders through a GL context bound to the loop's
    thread (and the plain twin steps its physics there), so the twin and the in-process emulator
    never get this."""
    from so101_sim2real.control.overlap import OverlappedPerception

    return lambda camera: OverlappedPerception(make_perception(camera), with_rgb=True)


def load_calibration(name: str | None) -> ArmCalibration | None:
    """``twin`` (the emulated twin arm), a calibration ``.json``, or a follower id in LeRobot's folder."""
    from so101_sim2real.hardware.joint_calibration import resolve_calibration

    if not name:
        return None
    if name == "twin":
        from so101_sim2real.control.twin_bus import twin_arm_calibration

        return twin_arm_calibration()
    return resolve_calibration(name, "follower")


def _open_arm_camera(spec: Spec, d: RunDescription, geometry: RigGeometry | None) -> Camera:
    """An arm's camera, opened and its frame size checked (``twin``: the emulated arm's on @port)."""
    from so101_sim2real.cameras import check_frame_size, open_camera, undistorted

    source = d.camera.source or ""
    camera = open_camera(source, spec.observation.source_size, loop=True, port=d.robot.port)
    try:
        check_frame_size(camera, spec.observation.source_size, source)
    except BaseException:
        camera.close()
        raise
    if geometry is not None:  # perception sees the ideal pinhole image the twin renders
        camera = undistorted(camera, geometry.camera)
    return camera


def _arm_env(spec: Spec, d: RunDescription, make_perception: PerceptionFactory | None,
             calibration: ArmCalibration | None, camera: Camera,
             wait_for_operator: Callable[[str], None] | None, geometry: RigGeometry | None) -> Env:
    assert d.robot.port is not None  # d.real_port: check_description asked for @port
    # The emulated arm's camera can also set its scene: the emulated person places the cube.
    place_cube = getattr(camera, "start_episode", None)
    return so101_env(spec, d.robot.port, make_perception=make_perception, calibration=calibration, camera=camera,
                     wait_for_operator=None if place_cube else wait_for_operator, place_cube=place_cube,
                     geometry=geometry)


def twin_scene(spec: Spec, geometry: RigGeometry | None = None) -> S.SceneConfig:
    """The twin's scene: its wrist camera ``geometry``'s (intrinsics and mount), or today's without one."""
    if geometry is None:
        return S.SceneConfig()
    return S.scene_for_rig(geometry, spec.observation.source_size)


def sim_env(spec: Spec, with_camera: bool = True, make_perception: PerceptionFactory | None = None,
            perturbation: Perturbation | None = None, geometry: RigGeometry | None = None,
            standin: StandIn | None = None) -> Env:
    """The sim twin: lift-cube world, its arm as the robot, its wrist camera as the eyes
    (rendered classes and depth, or ``make_perception`` on its rendered RGB). A
    ``perturbation`` makes it the perturbed twin: another control period, the camera
    moved, noisy perception. ``standin`` makes it a stand-in world (sim/standin.py): its
    scene, its picture through a real camera's gaps, its arm behind a real arm's, its period.
    ``geometry`` (a rig file) is the camera the twin sees through; its joint offsets belong
    to a real arm's calibration, not the twin. On a stand-in, which is an arm, the rig file is
    the arm's: its offsets are added to each reading and the networks read frames undistorted
    with its lens, while the world keeps its own camera."""
    from so101_sim2real.cameras import undistorted
    from so101_sim2real.sim.camera import PrivilegedPerception, SimCamera
    from so101_sim2real.sim.camera_effects import standin_camera
    from so101_sim2real.sim.robot import SimRobot
    from so101_sim2real.sim.standin_robot import ARM_GAPS, StandInRobot
    from so101_sim2real.sim.standin_scene import standin_scene
    from so101_sim2real.sim.task import LiftCubeTask

    perturbation = perturbation or Perturbation()
    # a stand-in is an arm: a rig file corrects what its camera and joints report, not the twin's camera
    as_arm = geometry if standin is not None else None
    scene = perturbation.scene(twin_scene(spec, None if as_arm else geometry))
    if standin is not None:
        scene = standin_scene(standin, scene, spec.observation.source_size)
    task = LiftCubeTask(spec, scene=scene)
    robot: Robot = SimRobot(task.model, task.data, spec)
    if standin is not None and any(standin.has(name) for name in ARM_GAPS):
        robot = StandInRobot(cast(SimRobot, robot), standin)
    if any(perturbation.joint_offset_deg):
        robot = OffsetRobot(robot, np.deg2rad(perturbation.joint_offset_deg))
    if as_arm is not None:  # the rig's offsets added to each reading, as an arm's calibration adds them
        robot = OffsetRobot(robot, as_arm.joint_offsets_rad)
    # the stand-in is an arm: the pose comes from FK of its measured joints (its calibration error in them)
    live = task.data if spec.action.ik.pose_from == "live_physics" and standin is None else None
    kinematics = Kinematics(task.model, spec.action.ik, S.ARM_JOINTS, live=live)
    controller = Controller(spec.action, kinematics, robot.limits)
    perception: Perception | None = None
    if with_camera:
        camera = SimCamera(task.model, task.data, spec.observation)
        if standin is not None:
            camera = cast(SimCamera, standin_camera(camera, standin))  # the same reads, its RGB through the gaps
        if as_arm is not None and make_perception:  # the networks read it undistorted, as on an arm
            camera = cast(SimCamera, undistorted(camera, as_arm.camera))
        seen = spec.observation
        if perturbation.disparity_region:  # normalised another way than the policy was trained on
            region = cast(Literal["crop", "full_frame"], perturbation.disparity_region)  # checked when it was parsed
            seen = replace(seen, disparity=replace(seen.disparity, normalise_region=region))
        perception = make_perception(camera) if make_perception else PrivilegedPerception(camera, seen)
        if perturbation.noisy_perception:
            perception = NoisyPerception(perception, perturbation, spec.observation.channels,
                                         list(spec.observation.segmentation.classes))
    period = perturbation.period_s or (standin and standin.period_s) or spec.control.period_s
    return Env(spec, robot, task, controller, perception, period, twin=task, geometry=geometry)


class _LockedPerception:
    """Perception of a world that another thread steps: hold its lock while rendering."""

    def __init__(self, inner: Perception, lock: threading.RLock):
        self.inner, self.lock = inner, lock

    def observe(self, with_rgb: bool = False) -> Perceived:
        with self.lock:
            return self.inner.observe(with_rgb)

    def close(self) -> None:
        self.inner.close()


class LockedCamera:
    """A camera in a world that another thread steps: renders hold its lock."""

    def __init__(self, inner: Camera, lock: threading.RLock):
        self.inner, self.lock = inner, lock

    def read(self) -> Frame:
        with self.lock:
            return self.inner.read()

    def close(self) -> None:
        self.inner.close()


class _TwinEpisodes:
    """The lift-cube task on the emulated arm's twin: resets through the bridge."""

    def __init__(self, bridge: TwinBridge):
        self.bridge = bridge

    def reset(self, seed: int | None = None) -> dict:
        return self.bridge.reset(seed)

    def evaluate(self, action: np.ndarray) -> StepResult:
        with self.bridge.lock:
            return self.bridge.task.evaluate(action)


def arm_needs_eyes(port: str) -> So101Error:
    """The error for an arm on a serial port run without a camera or the real perception."""
    return So101Error(f"@port {port}: a real arm sees through @camera (an index, a device or a video) with "
                      f"@perception real @seg_ckpt PATH (@port emulator runs the driver on the twin, with its "
                      f"camera)")


def so101_env(spec: Spec, port: str, with_camera: bool = True, max_step_rad: float | None = None,
              make_perception: PerceptionFactory | None = None, calibration: ArmCalibration | None = None,
              camera: Camera | None = None, wait_for_operator: Callable[[str], None] | None = None,
              geometry: RigGeometry | None = None,
              place_cube: Callable[[int, tuple[float, float] | None], None] | None = None,
              standin: StandIn | None = None) -> Env:
    """The real driver stack on a follower arm.

    ``port='emulator'`` runs the STS3215 emulator in this process with the sim twin as
    the arm, its wrist camera as the camera, and its task for resets and scoring: the
    real driver path, end to end, without hardware. Any other port is an arm (or a
    separate ``so101 emulate --twin``): it needs its ``calibration``, a ``camera`` and
    the real perception, and its episodes are run by a person (:class:`ArmEpisodes`).
    ``geometry`` (a rig file) is the emulated twin's camera; on an arm, :func:`build_env`
    has already put its lens on the camera and its joint offsets in the calibration, and the
    env only keeps it (what the run says of its camera). ``standin``: the emulated twin is that
    stand-in world (its scene, arm, picture and period), and ``geometry`` is then its arm's, as on
    an arm: in the calibration and on the camera, not in the twin.
    """
    if port == EMULATOR_PORT:
        return _emulated_so101_env(spec, with_camera, max_step_rad, make_perception, geometry, standin)
    from so101_sim2real.control.arm_episodes import ArmEpisodes
    from so101_sim2real.hardware.so101 import open_follower
    from so101_sim2real.sim.task import LiftCubeTask

    if calibration is None:
        raise So101Error(f"@port {port}: the arm needs its calibration: @calibration ID (from 'so101 calibrate "
                         f"joints'), a calibration .json, or 'twin' for 'so101 emulate --twin'")
    if camera is None or make_perception is None:
        raise arm_needs_eyes(port)
    robot = open_follower(port, calibration, max_step_rad)
    try:
        kinematics = Kinematics(S.build_model(), spec.action.ik, S.ARM_JOINTS)
        controller = Controller(spec.action, kinematics, robot.limits)
        scratch = LiftCubeTask(spec)  # where the twin would start each seeded episode; never stepped
        task = ArmEpisodes(robot, scratch.start_pose(), spec.control.period_s, wait_for_operator,
                           starts=scratch.start, place_cube=place_cube)
        perception = make_perception(camera)
    except BaseException:
        robot.close()
        raise
    return Env(spec, robot, task, controller, perception, spec.control.period_s, scored=False, geometry=geometry)


def _emulated_so101_env(spec: Spec, with_camera: bool, max_step_rad: float | None,
                        make_perception: PerceptionFactory | None, geometry: RigGeometry | None = None,
                        standin: StandIn | None = None) -> Env:
    from so101_sim2real.cameras import undistorted
    from so101_sim2real.control.twin_bus import attach_twin
    from so101_sim2real.hardware.emulator import BusEmulator
    from so101_sim2real.hardware.so101 import open_follower
    from so101_sim2real.sim.camera import PrivilegedPerception, SimCamera
    from so101_sim2real.sim.camera_effects import standin_camera

    emulator = BusEmulator(list(SERVO_IDS.values()))
    # a stand-in is an arm: a rig file corrects what its camera and joints report, not the twin's camera
    as_arm = geometry if standin is not None else None
    bridge = attach_twin(emulator, spec, scene=twin_scene(spec, None if as_arm else geometry), standin=standin)
    emulator.start()
    calibration = bridge.calibration
    if as_arm is not None:
        from so101_sim2real.hardware.joint_calibration import with_joint_offsets

        calibration = with_joint_offsets(calibration, as_arm.joint_offsets_rad)
    # on_close: closing the arm (a failed connect does) stops the emulator and its physics thread too
    robot = open_follower(emulator.path, calibration, max_step_rad, on_close=[emulator.stop])
    kinematics = Kinematics(S.build_model(), spec.action.ik, S.ARM_JOINTS)
    controller = Controller(spec.action, kinematics, robot.limits)
    perception = None
    if with_camera:
        camera = SimCamera(bridge.task.model, bridge.task.data, spec.observation)
        if standin is not None:
            camera = cast(SimCamera, standin_camera(camera, standin))  # its picture through the stand-in's gaps
        if make_perception:  # only the render holds the lock, not the networks
            eyes: Camera = LockedCamera(camera, bridge.lock)
            perception = make_perception(undistorted(eyes, as_arm.camera) if as_arm is not None else eyes)
        else:
            perception = _LockedPerception(PrivilegedPerception(camera, spec.observation), bridge.lock)
    period = (standin and standin.period_s) or spec.control.period_s
    return Env(spec, robot, _TwinEpisodes(bridge), controller, perception, period, twin=bridge.task,
               geometry=geometry)
