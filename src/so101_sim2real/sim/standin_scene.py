"""A stand-in world's scene: the twin's, with the picture, camera, cube and actuator gaps built in.

What the stand-in changes in MuJoCo itself (:mod:`so101_sim2real.sim.standin` names the
gaps): the light and the materials, a distractor on the table, the camera's mount and
intrinsics, the cube, the arm's and the gripper's gains. The rest of its gaps act on the
rendered picture (:mod:`~so101_sim2real.sim.camera_effects`) or on the arm's commands
(:mod:`~so101_sim2real.sim.standin_robot`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import mujoco
import numpy as np

from so101_sim2real.geometry.rig_file import RigGeometry
from so101_sim2real.sim import scene as S
from so101_sim2real.sim.standin import CameraMount, Distractor, Lighting, Materials, StandIn

DISTRACTOR_BODY = "standin_distractor"
WORKSPACE = np.array([0.3, 0.0, 0.0])  # where the cube goes: what a light's shadow map must cover


@dataclass(frozen=True)
class Look:
    """The light and materials of a stand-in world (a scene addition: built in last)."""

    lighting: Lighting | None = None
    materials: Materials | None = None

    def add_to(self, spec: mujoco.MjSpec) -> None:
        if self.lighting is not None:
            _light(spec, self.lighting)
        if self.materials is not None:
            _materials(spec, self.materials)


def _light(spec: mujoco.MjSpec, g: Lighting) -> None:
    # a wrist camera carries no lamp: the headlight only fills in, as a room's indirect light does
    colour = np.asarray(g.colour)
    spec.visual.headlight.diffuse = [0.1] * 3
    spec.visual.headlight.ambient = list(g.ambient * colour)
    az, el = math.radians(g.azimuth_deg), math.radians(g.elevation_deg)
    towards = -np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    for light in spec.lights:
        # a directional light's shadow map is drawn from its position: keep the table in its view
        light.pos = list(WORKSPACE - 1.5 * towards)
        light.dir = list(towards)
        light.diffuse = list(g.intensity * colour)
        light.specular = [0.2] * 3


def _named(items, name: str):  # noqa: ANN001, ANN202 - MjSpec's lists: its own lookup misses some kinds
    return next(item for item in items if item.name == name)


def _materials(spec: mujoco.MjSpec, g: Materials) -> None:
    texture = _named(spec.textures, "groundplane")
    texture.rgb1 = list(g.table_rgb)
    texture.rgb2 = list(np.asarray(g.table_rgb) * (1.0 - g.table_grain))
    texture.mark = mujoco.mjtMark.mjMARK_NONE
    _named(spec.materials, "groundplane").reflectance = 0.05
    cube = _named(spec.materials, "cube_material")
    cube.rgba = [*g.cube_rgb, 1.0]
    cube.specular = g.cube_specular


@dataclass(frozen=True)
class DistractorBox:
    """A box on the table (a scene addition)."""

    gap: Distractor

    def add_to(self, spec: mujoco.MjSpec) -> None:
        half = self.gap.size_m / 2
        body = spec.worldbody.add_body(name=DISTRACTOR_BODY, pos=[*self.gap.xy_m, half])
        body.add_geom(name=DISTRACTOR_BODY, type=mujoco.mjtGeom.mjGEOM_BOX, size=[half] * 3,
                      rgba=[*self.gap.rgb, 1.0])


def standin_scene(world: StandIn, base: S.SceneConfig, size: tuple[int, int]) -> S.SceneConfig:
    """The twin's scene ``base`` with ``world``'s scene gaps; ``size`` (H, W): what the camera renders."""
    cfg = base
    look = Look(world.get("lighting"), world.get("materials"))
    additions = list(cfg.additions)
    if look != Look():
        additions.append(look)
    if (distractor := world.get("distractor")) is not None:
        additions.append(DistractorBox(distractor))
    cfg = replace(cfg, additions=tuple(additions))
    if (mount := world.get("camera_mount")) is not None:
        pos, euler = moved_mount(cfg.camera_pos, cfg.camera_euler, mount)
        cfg = replace(cfg, camera_pos=pos, camera_euler=euler)
    if (intrinsics := world.get("intrinsics")) is not None:
        cfg = _intrinsics(cfg, intrinsics.focal_scale, intrinsics.principal_offset_px, size)
    if (cube := world.get("cube")) is not None:
        cfg = replace(cfg, cube_half=cube.size_m / 2, cube_mass=cube.mass_kg,
                      cube_friction=(cube.friction, *cfg.cube_friction[1:]),
                      cube_body_pos=(*cfg.cube_body_pos[:2], cube.size_m / 2))
    if (compliance := world.get("compliance")) is not None:
        k = compliance.stiffness_scale
        # the gripper keeps the twin's gains unless the gripper gap sets its own
        cfg = replace(cfg, kp=cfg.kp * k, kv=cfg.kv * k, gripper_kp=cfg.gripper_kp or cfg.kp,
                      gripper_kv=cfg.gripper_kv or cfg.kv)
    if (gripper := world.get("gripper")) is not None:
        cfg = replace(cfg, gripper_kp=base.kp * gripper.stiffness_scale, gripper_kv=base.kv * gripper.damping_scale)
    return cfg


def _intrinsics(cfg: S.SceneConfig, focal_scale: float, offset_px: tuple[float, float],
                size: tuple[int, int]) -> S.SceneConfig:
    """The fovy camera (or the calibrated one) with its focal length scaled and principal point moved;
    the offset is given at 640x480 and scales with the image."""
    height, width = size
    if cfg.camera_intrinsics is not None and cfg.camera_size == (height, width):
        fx, fy, cx, cy = cfg.camera_intrinsics
    else:
        fy = (height / 2) / math.tan(math.radians(cfg.camera_fovy) / 2)
        fx, cx, cy = fy, (width - 1) / 2, (height - 1) / 2
    scale = width / 640.0
    return replace(cfg, camera_intrinsics=(fx * focal_scale, fy * focal_scale, cx + offset_px[0] * scale,
                                           cy + offset_px[1] * scale), camera_size=(height, width))


Triple = tuple[float, float, float]


def moved_mount(pos: Triple, euler: Triple, mount: CameraMount) -> tuple[Triple, Triple]:
    """A camera's (position m, MuJoCo euler rad) moved by a mount gap: millimetres added, degrees added
    angle by angle (the one way the scene and the world's true rig both move it)."""
    x, y, z = (p + d / 1000.0 for p, d in zip(pos, mount.shift_mm, strict=True))
    rx, ry, rz = (e + math.radians(d) for e, d in zip(euler, mount.tilt_deg, strict=True))
    return (x, y, z), (rx, ry, rz)


def standin_rig(world: StandIn, guess: RigGeometry, size: tuple[int, int] = (480, 640)) -> RigGeometry:
    """The rig a stand-in world's arm really has, as calibrating it should find it: the guess's camera
    with the world's intrinsics and lens, its mount moved as :func:`standin_scene` moves it, and its
    joint offsets. A rig adds its offsets to a reading, which carries the world's: they are the negative
    of the world's. (The stand-in distorts about the picture's centre, not its offset principal point: a
    few pixels' difference the calibration absorbs.)"""
    cfg = S.scene_for_rig(guess, size)
    if (intrinsics := world.get("intrinsics")) is not None:
        cfg = _intrinsics(cfg, intrinsics.focal_scale, intrinsics.principal_offset_px, size)
    camera = guess.camera.scaled_to(size)
    if cfg.camera_intrinsics is not None:
        fx, fy, cx, cy = cfg.camera_intrinsics
        camera = replace(camera, K=np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]]))
    lens = world.get("lens_distortion")
    camera = replace(camera, D=np.array(lens.coefficients if lens else np.zeros(5), np.float64),
                     source=f"the stand-in's camera (seed {world.seed})")
    pos, euler = guess.mount_pos, guess.mount_euler
    if (mount := world.get("camera_mount")) is not None:  # as the scene moves it
        pos, euler = moved_mount(pos, euler, mount)
    offsets = world.get("joint_offsets")
    joints = -np.radians(offsets.deg) if offsets else np.zeros(len(guess.joint_offsets_rad))
    return replace(guess, camera=camera, mount_pos=pos, mount_euler=euler, joint_offsets_rad=joints,
                   calibrated=True, fitted={})
