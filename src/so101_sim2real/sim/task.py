"""The lift-cube task as the policy was trained on it (docs/reference.md section 4).

The task owns the world (the compiled scene and its ``MjData``), the seeded reset,
and the scoring: success is a grasp (gripper closed past a threshold with both finger
pads touching the cube) with the cube above ``lift_height`` for ``hold_steps``
consecutive steps, and the reward is the user's "v19" dense reward, so returns compare
with their training logs. It does not move the arm during an episode: the control
loop does that through :class:`~so101_sim2real.sim.robot.SimRobot` and the
:class:`~so101_sim2real.control.controller.Controller`, the path the real arm takes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import mujoco
import numpy as np

from so101_sim2real.interfaces import StepResult
from so101_sim2real.kinematics import Kinematics
from so101_sim2real.sim import scene as S
from so101_sim2real.spec import Spec


@dataclass(frozen=True)
class TaskConfig:
    """Numbers of the task itself (the scene's are in ``SceneConfig``): the user's
    curriculum stage 3, "gripper near the cube, open"."""

    cube_xy: tuple[float, float] = (0.25, 0.0)
    cube_xy_noise: float = 0.02
    reset_wrist_rad: float = np.pi / 2  # wrist_flex and wrist_roll at reset
    settle_steps: int = 50  # physics steps the cube settles before the arm moves
    # The reset target relative to the settled cube: the finger-width offset puts the
    # static finger beside the cube, then 5 mm grasp height plus 3 cm above it.
    finger_width_offset_m: float = -0.015
    grasp_z_offset_m: float = 0.005
    reset_height_m: float = 0.03
    reset_gripper_action: float = 0.3
    reset_ik_steps: int = 100  # each one IK step on the live physics, then one physics step
    lift_height_m: float = 0.08
    hold_steps: int = 10
    closed_below_rad: float = 0.25


class LiftCubeTask:
    """The simulated world and task: seeded reset, success, reward."""

    def __init__(self, spec: Spec, task: TaskConfig | None = None, scene: S.SceneConfig | None = None):
        self.spec = spec
        self.cfg = task or TaskConfig()
        # the spec's physics timestep is the twin's: the control period is counted in its steps
        self.scene = replace(scene or S.SceneConfig(), timestep=spec.control.physics_timestep_s)
        self.model = S.build_model(self.scene)
        self.data = mujoco.MjData(self.model)
        # The reset is the training env's own procedure: IK on the live physics.
        self.kinematics = Kinematics(self.model, spec.action.ik, S.ARM_JOINTS, live=self.data)
        self._site = self.kinematics.site
        self._qpos = np.array([self.model.jnt_qposadr[self.model.joint(j).id] for j in S.JOINTS])
        self._act = np.array([self.model.actuator(j).id for j in S.JOINTS])
        self._cube_qpos = self.model.jnt_qposadr[self.model.joint(S.CUBE_JOINT).id]
        sensor = self.model.sensor(S.CUBE_SENSOR)
        self._cube_sensor = slice(sensor.adr[0], sensor.adr[0] + 3)
        self._cube_geom = self.model.geom(S.CUBE_GEOM).id
        self._cube_body = self.model.body(S.CUBE_BODY).id
        self._pads = (self.model.geom(S.STATIC_PAD).id, self.model.geom(S.MOVING_PAD).id)
        self.rng = np.random.default_rng()
        self.steps = 0
        self.hold = 0
        self._was_grasping = False
        self._prev_action = np.zeros(spec.action.dim)

    # ---------------------------------------------------------------------- queries

    def cube_pos(self) -> np.ndarray:
        """The ``cube_pos`` sensor: where the last physics step found the cube (as training read it)."""
        return self.data.sensordata[self._cube_sensor].copy()

    def cube_quat(self) -> np.ndarray:
        """The cube's orientation (w, x, y, z) at the same moment as :meth:`cube_pos`: the pose the
        camera rendered."""
        return self.data.xquat[self._cube_body].copy()

    def qpos(self) -> np.ndarray:
        """The world's positions in the training env's 13-D layout: 5 arm joints + gripper
        (rad), cube xyz (m), cube quaternion (wxyz)."""
        cube = self.data.qpos[self._cube_qpos:self._cube_qpos + 7]
        return np.concatenate([self.data.qpos[self._qpos], cube])

    def tcp_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._site].copy()

    def gripper_qpos(self) -> float:
        return float(self.data.qpos[self._qpos[-1]])

    def pad_contacts(self) -> tuple[bool, bool]:
        static = moving = False
        for c in self.data.contact[:self.data.ncon]:
            pair = (c.geom1, c.geom2)
            if self._cube_geom in pair:
                other = pair[1] if pair[0] == self._cube_geom else pair[0]
                static |= other == self._pads[0]
                moving |= other == self._pads[1]
        return static, moving

    def is_grasping(self) -> bool:
        return self.gripper_qpos() < self.cfg.closed_below_rad and all(self.pad_contacts())

    # ------------------------------------------------------------------- episodes

    def reset(self, seed: int | None = None) -> dict:
        """The training env's reset: cube near (0.25, 0), settled; TCP driven beside and above it.

        Step by step as the user's environment did it (the golden traces check it to
        1e-15): cube x then y drawn from ``uniform(-noise, noise)``, wrists at pi/2, 50
        physics steps to settle, then 100 rounds of one IK step on the live physics and
        one physics step. A seed restarts the generator; None continues it.
        """
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        cfg, m, d = self.cfg, self.model, self.data
        m.opt.disableflags &= ~int(mujoco.mjtDisableBit.mjDSBL_ACTUATION)  # a previous run may have left torque off
        mujoco.mj_resetData(m, d)
        x = cfg.cube_xy[0] + self.rng.uniform(-cfg.cube_xy_noise, cfg.cube_xy_noise)
        y = cfg.cube_xy[1] + self.rng.uniform(-cfg.cube_xy_noise, cfg.cube_xy_noise)
        d.qpos[self._cube_qpos:self._cube_qpos + 7] = [x, y, self.scene.cube_half, 1, 0, 0, 0]
        wrist = self._qpos[3:5]
        d.qpos[wrist] = cfg.reset_wrist_rad
        d.ctrl[self._act[3:5]] = cfg.reset_wrist_rad
        mujoco.mj_forward(m, d)
        for _ in range(cfg.settle_steps):
            mujoco.mj_step(m, d)
        cube = d.qpos[self._cube_qpos:self._cube_qpos + 3].copy()
        above = cube.copy()
        above[1] += cfg.finger_width_offset_m
        above[2] = cube[2] + cfg.grasp_z_offset_m + cfg.reset_height_m
        gripper = self.spec.action.gripper.to_rad(cfg.reset_gripper_action)
        arm = self._qpos[:5]
        for _ in range(cfg.reset_ik_steps):
            d.ctrl[self._act[:5]] = self.kinematics.ik(d.qpos[arm], above)
            d.ctrl[self._act[5]] = gripper
            mujoco.mj_step(m, d)
        mujoco.mj_forward(m, d)  # positions, contacts and sensors of the state the episode starts in
        self.steps, self.hold, self._was_grasping = 0, 0, False
        self._prev_action = np.zeros(self.spec.action.dim)
        return self.info()

    def start(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The joints and the cube's (x, y) that the twin's ``reset(seed)`` starts from: a real arm's
        episode ``seed`` starts there, with the person placing the cube where it says. The
        task's own random stream is left as it was."""
        rng = self.rng
        try:
            self.reset(seed)
            return self.data.qpos[self._qpos].copy(), self.cube_pos()[:2].copy()
        finally:
            self.rng = rng

    def start_pose(self) -> np.ndarray:
        """The joints an episode starts from with the cube at its nominal place: where a real arm starts."""
        cfg, rng = self.cfg, self.rng
        self.cfg = replace(cfg, cube_xy_noise=0.0)
        try:
            self.reset()
            return self.data.qpos[self._qpos].copy()
        finally:
            self.cfg, self.rng = cfg, rng

    def place_cube(self, x: float, y: float) -> None:
        """Put the cube, still and upright, on the table at ``(x, y)``: the person setting the scene
        of an emulated arm's episode (the arm stays where it is)."""
        m, d = self.model, self.data
        d.qpos[self._cube_qpos:self._cube_qpos + 7] = [x, y, self.scene.cube_half, 1, 0, 0, 0]
        dof = m.jnt_dofadr[m.joint(S.CUBE_JOINT).id]
        d.qvel[dof:dof + 6] = 0.0
        mujoco.mj_forward(m, d)
        self.steps, self.hold, self._was_grasping = 0, 0, False

    def evaluate(self, action: np.ndarray) -> StepResult:
        """Score the step the control loop just took with ``action``."""
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self.steps += 1
        grasping = self.is_grasping()
        self.hold = self.hold + 1 if grasping and self.cube_pos()[2] > self.cfg.lift_height_m else 0
        info = self.info(grasping)
        reward = self.reward(info, action)
        self._was_grasping, self._prev_action = grasping, action
        return StepResult(reward, info["is_success"], self.steps >= self.spec.episode.max_steps, info)

    def info(self, grasping: bool | None = None) -> dict:
        cube = self.cube_pos()
        return {
            "cube_pos": cube,
            "cube_z": float(cube[2]),
            "gripper_to_cube": float(np.linalg.norm(self.tcp_pos() - cube)),
            "gripper_state": self.gripper_qpos(),
            "is_grasping": self.is_grasping() if grasping is None else grasping,
            "hold_count": self.hold,
            "is_success": self.hold >= self.cfg.hold_steps,
        }

    def reward(self, info: dict, action: np.ndarray) -> float:
        """The user's v19 dense reward (ggand0/pick-101, src/envs/rewards/lift_rewards.py)."""
        lift = self.cfg.lift_height_m
        cube_z, grasping, hold = info["cube_z"], info["is_grasping"], info["hold_count"]
        reach = 1.0 - np.tanh(10.0 * info["gripper_to_cube"])
        if reach >= 0.7:  # near the cube: the moving finger gets its own reach term
            moving = self.data.geom_xpos[self._pads[1]]
            finger = 1.0 if info["gripper_state"] < self.cfg.closed_below_rad else \
                1.0 - np.tanh(10.0 * np.linalg.norm(moving - info["cube_pos"]))
            reach = (reach + finger) * 0.5
        r = reach
        if cube_z < 0.01:
            r -= (0.01 - cube_z) * 50.0
        if self._was_grasping and not grasping:
            r -= 2.0
        if grasping:
            r += 1.5 + max(0.0, cube_z - 0.015) / (lift - 0.015) * 4.0
            if cube_z > 0.02:
                r += 1.0
            if cube_z > 0.04:
                r += min(1.0, (cube_z - 0.04) / (lift - 0.04)) * 2.0
        if cube_z > lift:
            r += 1.0 + 0.5 * hold
            if hold > 0:
                r -= 0.02 * float(np.sum((action - self._prev_action) ** 2))
        if info["is_success"]:
            r += 10.0
        return float(r)
