"""A scripted expert for the lift-cube task: approach, grasp, lift.

It acts through the same 4-D action interface as a policy (EE deltas + gripper) and
sees what a policy's state holds (the TCP position) plus the controller's accumulated
target, with one privilege: the cube position, read from the sim. So it proves the
task and the action pipeline work and gives a demo that needs no checkpoint and no
rendering.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from so101_sim2real.sim.task import LiftCubeTask


@dataclass(frozen=True)
class ExpertConfig:
    # TCP goal relative to the cube centre. With the wrist at pi/2 the static finger is
    # on the -y side, and closing pulls the cube toward it. Chosen by a grid search on the
    # faithful twin: 150/150 over seeds 0-149 here and at +-1 mm in y and z.
    grasp_offset: tuple[float, float, float] = (0.0, -0.017, 0.005)
    approach_height: float = 0.03
    close_steps: int = 15
    lift_z: float = 0.15
    tolerance: float = 0.004
    # A real arm's servos stop short of a goal (gear play, a soft position loop): a phase also ends
    # when the TCP has settled this close for this many ticks. The twin always reaches tolerance.
    settled_within: float = 0.012
    settled_ticks: int = 8
    settled_motion: float = 0.0005  # m per tick: slower than this is settled


class ScriptedExpert:
    """State machine over phases approach -> descend -> close -> lift."""

    def __init__(self, task: LiftCubeTask, cfg: ExpertConfig | None = None):
        self.task = task
        self.cfg = cfg or ExpertConfig()
        self.reset()

    def reset(self) -> None:
        self.phase = "approach"
        self._closing = 0
        self._grasp_point: np.ndarray | None = None
        self._last_tcp: np.ndarray | None = None
        self._still = 0  # ticks the TCP has barely moved

    def _arrived(self, tcp_pos: np.ndarray, goal: np.ndarray) -> bool:
        """Within tolerance, or settled near the goal where the arm's servos stopped short of it."""
        cfg = self.cfg
        moved = np.inf if self._last_tcp is None else float(np.linalg.norm(tcp_pos - self._last_tcp))
        self._last_tcp = tcp_pos.copy()
        self._still = self._still + 1 if moved < cfg.settled_motion else 0
        distance = float(np.linalg.norm(tcp_pos - goal))
        if distance < cfg.tolerance or (distance < cfg.settled_within and self._still >= cfg.settled_ticks):
            self._still = 0
            return True
        return False

    def _toward(self, goal: np.ndarray, ee_target: np.ndarray) -> np.ndarray:
        scale = self.task.spec.action.xyz_scale_m
        return np.clip((goal - ee_target) / scale, -1.0, 1.0)

    def act(self, tcp_pos: np.ndarray, ee_target: np.ndarray) -> np.ndarray:
        """The next action from the TCP position and the controller's accumulated target."""
        cfg = self.cfg
        if self._grasp_point is None:
            self._grasp_point = self.task.cube_pos() + np.array(cfg.grasp_offset)
        grasp = self._grasp_point
        above = grasp + np.array([0.0, 0.0, cfg.approach_height])
        if self.phase == "approach":
            if self._arrived(tcp_pos, above):
                self.phase = "descend"
            return np.array([*self._toward(above, ee_target), 1.0])
        if self.phase == "descend":
            if self._arrived(tcp_pos, grasp):
                self.phase = "close"
            return np.array([*self._toward(grasp, ee_target), 1.0])
        if self.phase == "close":
            self._closing += 1
            if self._closing >= cfg.close_steps:
                self.phase = "lift"
            return np.array([*self._toward(grasp, ee_target), -1.0])
        lift = np.array([grasp[0], grasp[1], cfg.lift_z])
        return np.array([*self._toward(lift, ee_target), -1.0])
