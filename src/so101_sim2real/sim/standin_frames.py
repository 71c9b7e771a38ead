"""Labelled frames from the stand-in, for fitting perception networks to its picture.

The twin knows every pixel's class, so its renders are labelled for free. Under the
stand-in's randomisation (each gap's amounts drawn around the world's), with the arm at
random poses around the task's start and moving (motion blur), they are what ``so101
seg train`` learns from when the user has no labelled frames of their own, and the
held-out frames it is scored on. Labels are the *real* network's class ids (the user's
EfficientViT has an ``unlabeled`` class first: real id = sim id + 1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import mujoco
import numpy as np

from so101_sim2real.sim import scene as S
from so101_sim2real.sim.camera import SimCamera
from so101_sim2real.sim.camera_effects import standin_camera
from so101_sim2real.sim.standin import StandIn
from so101_sim2real.sim.standin_scene import standin_scene
from so101_sim2real.sim.task import LiftCubeTask
from so101_sim2real.spec import Spec

POSE_JITTER_RAD = 0.3  # arm joints around the task's start pose
SPIN_RAD_S = 1.0  # std of each arm joint's speed (the picture blurs as the wrist turns)
# amounts that multiply the twin's (1: no gap): drawn by their distance from 1
FACTORS = ("focal_scale", "white_balance", "scale", "gain", "stiffness_scale", "damping_scale")


@dataclass
class LabelledFrames:
    """RGB frames ``(N, H, W, 3)`` uint8, their real class ids ``(N, H, W)`` uint8 and, where asked
    for, their metric depth ``(N, H, W)`` float32."""

    rgb: np.ndarray
    labels: np.ndarray
    depth_m: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rgb)

    def _rows(self, rows: np.ndarray) -> LabelledFrames:
        return LabelledFrames(self.rgb[rows], self.labels[rows], None if self.depth_m is None else self.depth_m[rows])

    def split(self, held_out: float, seed: int = 0) -> tuple[LabelledFrames, LabelledFrames]:
        """(training, held-out) frames, drawn at random."""
        order = np.random.default_rng(seed).permutation(len(self))
        cut = max(1, round(len(self) * held_out))
        return self._rows(order[cut:]), self._rows(order[:cut])


def randomised(world: StandIn, rng: np.random.Generator, keep: float = 1.0) -> StandIn:
    """``world`` with each gap's amounts drawn around its own: amounts x0.6-1.4 (factors, whose
    no-gap value is 1, as powers 0.6-1.4: a focal scale of 1.02 stays within 1.0119-1.028, a
    stiffness of 0.15 within 0.07-0.32),
    colours +-0.15, the light from anywhere around; whole numbers (JPEG quality) +-20. Each gap is
    kept with probability ``keep``: below 1, some draws show the twin's own look for that gap, so a
    network fitted to them reads the twin and every gap alone, not only the whole world."""
    def draw(name: str, value):  # noqa: ANN001, ANN202 - one amount: a number or a tuple of them
        if isinstance(value, tuple):
            return tuple(draw(name, v) for v in value)
        if isinstance(value, int):
            return int(np.clip(value + rng.integers(-20, 21), 5, 100))
        if "rgb" in name or "colour" in name:
            return float(np.clip(value + rng.uniform(-0.15, 0.15), 0.0, 1.0))
        if name == "azimuth_deg":
            return float(rng.uniform(0.0, 360.0))
        if name in FACTORS:  # in log space: a factor's distance from 1 scales, and it stays positive
            return float(value ** rng.uniform(0.6, 1.4))
        drawn = value * rng.uniform(0.6, 1.4)
        return float(min(drawn, 1.0)) if name in ("intensity", "ambient", "table_grain", "cube_specular") else drawn

    gaps = {}
    for name, gap in world.gaps.items():
        if keep < 1.0 and rng.uniform() >= keep:
            continue
        amounts = {f.name: draw(f.name, getattr(gap, f.name)) for f in dataclasses.fields(gap)}
        gaps[name] = type(gap)(**amounts)
    return StandIn(gaps, int(rng.integers(0, 2**31)))


def standin_frames(spec: Spec, world: StandIn, count: int, seed: int = 0, per_world: int = 20,
                   on_frame: Callable[[int], None] | None = None, with_depth: bool = False,
                   keep: float = 1.0) -> LabelledFrames:
    """``count`` labelled frames, ``per_world`` from each draw of ``world``'s randomisation (a
    draw rebuilds the scene: ~0.3 s), each gap kept with probability ``keep``; the first frames of
    a larger count are a smaller count's."""
    rng = np.random.default_rng(seed)
    height, width = spec.observation.source_size
    rgb = np.zeros((count, height, width, 3), np.uint8)
    labels = np.zeros((count, height, width), np.uint8)
    depth = np.zeros((count, height, width), np.float32) if with_depth else None
    made = 0
    while made < count:
        drawn = randomised(world, rng, keep)
        task = LiftCubeTask(spec, scene=standin_scene(drawn, S.SceneConfig(), (height, width)))
        camera = standin_camera(SimCamera(task.model, task.data, spec.observation), drawn)
        try:
            for _ in range(min(max(1, per_world), count - made)):
                _random_pose(task, rng)
                rgb[made] = camera.read().rgb
                labels[made] = camera.seg_ids() + 1  # real id = sim id + 1 (unlabeled first)
                if depth is not None:
                    depth[made] = camera.depth_m()
                made += 1
                if on_frame:
                    on_frame(made)
        finally:
            camera.close()
    return LabelledFrames(rgb, labels, depth)


def _random_pose(task: LiftCubeTask, rng: np.random.Generator) -> None:
    """A seeded episode start with the arm moved and moving around it (no physics step)."""
    task.reset(int(rng.integers(0, 2**31)))
    m, d = task.model, task.data
    arm = [m.joint(j) for j in S.ARM_JOINTS]
    for joint in arm:
        low, high = m.jnt_range[joint.id]
        address = m.jnt_qposadr[joint.id]
        d.qpos[address] = np.clip(d.qpos[address] + rng.uniform(-POSE_JITTER_RAD, POSE_JITTER_RAD), low, high)
        d.qvel[m.jnt_dofadr[joint.id]] = rng.normal(0.0, SPIN_RAD_S)
    gripper = m.joint(S.GRIPPER_JOINT)
    d.qpos[m.jnt_qposadr[gripper.id]] = rng.uniform(*m.jnt_range[gripper.id])
    mujoco.mj_forward(m, d)
