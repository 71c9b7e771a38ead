"""Pilots: who picks the action each tick (a DrQ-v2 policy, the scripted expert).

A pilot sees an :class:`Observation` (the joint reading, the proprioception built from
it, the controller's accumulated target and, if it needs pixels, the perceived frame)
and returns the 4-D action. HIL-SERL's exploring pilot (hilserl/actor.py) and the takeovers
(control/interveners.py, leader/takeover.py) wrap these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from so101_sim2real.errors import So101Error
from so101_sim2real.interfaces import JointState, Perceived
from so101_sim2real.policy.frame_stack import FrameStack
from so101_sim2real.policy.runtime import Policy
from so101_sim2real.policy.state import Proprio, StateBuilder

if TYPE_CHECKING:
    from so101_sim2real.sim.task import LiftCubeTask


@dataclass(frozen=True)
class Observation:
    """Everything a pilot may look at for one tick."""

    joints: JointState
    proprio: Proprio
    ee_target: np.ndarray
    perceived: Perceived | None
    state: np.ndarray | None = None  # the spec's state vector, built once per tick by the runner when asked


class Pilot(Protocol):
    name: str
    needs_pixels: bool

    def reset(self, obs: Observation) -> None: ...

    def act(self, obs: Observation) -> np.ndarray: ...


class PolicyPilot:
    """A checkpoint's actor over the frame and state stacks it was trained with."""

    needs_pixels = True

    def __init__(self, policy: Policy, name: str = "policy"):
        self.policy, self.name = policy, name
        frames = policy.spec.observation.frame_stack
        self.frames, self.states = FrameStack(frames), FrameStack(frames)
        self.state_builder = StateBuilder(policy.spec.state) if policy.arch.state_dim_per_frame else None

    @property
    def needs_state(self) -> bool:
        """Whether this policy reads the state vector (the runner then builds it once per tick)."""
        return self.state_builder is not None

    def _state(self, obs: Observation) -> np.ndarray | None:
        if self.state_builder is None:
            return None
        return obs.state if obs.state is not None else self.state_builder.build(obs.proprio)

    def reset(self, obs: Observation) -> None:
        if obs.perceived is None:
            raise So101Error("the policy needs pixels, but the run has no perception")
        self.frames.reset(obs.perceived.frame)
        state = self._state(obs)
        if state is not None:
            self.states.reset(state)

    def act(self, obs: Observation) -> np.ndarray:
        assert obs.perceived is not None  # reset() refused a run without perception
        frames = self.frames.push(obs.perceived.frame)
        state = self._state(obs)
        states = None if state is None else self.states.push(state)
        return self.policy.act(frames, states)


class ScriptedPilot:
    """The scripted expert: only on the twin, since it reads the cube position from the sim."""

    name = "scripted"
    needs_pixels = False

    def __init__(self, twin: LiftCubeTask | None):
        from so101_sim2real.sim.scripted import ScriptedExpert
        from so101_sim2real.sim.task import LiftCubeTask

        if not isinstance(twin, LiftCubeTask):
            raise So101Error("the scripted expert reads the cube position from the sim: it runs only with @robot sim")
        self.expert = ScriptedExpert(twin)

    def reset(self, obs: Observation) -> None:
        self.expert.reset()

    def act(self, obs: Observation) -> np.ndarray:
        return self.expert.act(obs.proprio.tcp_pos, obs.ee_target)
