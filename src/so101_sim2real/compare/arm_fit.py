"""Which of a real arm's joint-level gaps explain the recorded joints, and by how much.

The recorded targets replayed open loop in the nominal twin (:mod:`~so101_sim2real.compare.dynamics`)
say *that* the arm moves otherwise; a lag alone cannot say *why*. A late command, a
soft position loop, a top speed and gear play all make the arm trail its targets, each
with its own shape: a late command is the twin's motion shifted in time, a soft loop
sags under gravity and rises slowly, a top speed clips the fast moves, play loses a
little motion at every reversal. So each is tried: the same targets are replayed in a
twin that has that one gap, over a grid of amounts (the stand-in's own
:class:`~so101_sim2real.sim.standin_robot.CommandPath` and actuator gains), and a gap is
named when some amount removes a large share of the replay's error (a third for the first,
a fifth of what is left for each further one). Gaps are added one at a time, each on top of
those already named, so a world with several shows several.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np

from so101_sim2real.sim import scene as S
from so101_sim2real.sim.standin import Backlash, Compliance, Gripper, Latency, MaxSpeed, StandIn
from so101_sim2real.sim.standin_robot import CommandPath
from so101_sim2real.spec import Spec

# The amounts tried per gap, spanning the anchors' ranges (the stand-in's defaults are inside each; a
# randomised world's can fall outside, and is then named at the grid's nearest).
GRIDS: dict[str, tuple] = {
    "latency": tuple(Latency(ms) for ms in (20.0, 40.0, 60.0, 80.0, 100.0, 120.0, 150.0, 200.0)),
    "max_speed": tuple(MaxSpeed(v) for v in (60.0, 90.0, 120.0, 150.0, 180.0, 240.0, 320.0)),
    "backlash": tuple(Backlash((d,) * 6) for d in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)),
    "compliance": tuple(Compliance(s) for s in (0.15, 0.25, 0.35, 0.5, 0.7)),
    "gripper": tuple(Gripper(k, c) for k in (0.3, 0.6, 1.0) for c in (0.5, 1.5, 3.0) if (k, c) != (1.0, 1.0)),
}
# What each gap's amount is called in a finding, and its unit.
AMOUNT = {"latency": ("ms", "ms"), "max_speed": ("deg_s", "deg/s"), "backlash": ("deg", "deg"),
          "compliance": ("stiffness_scale", "x the twin's gains"), "gripper": ("stiffness_scale", "x the twin's kp")}
# A gap is named when its best amount removes at least this share of the replay's error that is left: the
# first a third (one gap alone removes ~99 %; a smaller cube's grip, no arm gap, moves the arm's error ~23 %),
# each further one a fifth (in the whole stand-in, softness and play remove 20-50 % of what latency leaves).
EXPLAINS_FIRST, EXPLAINS = 0.3, 0.2
NOISE_RAD = 2e-3  # an RMS replay error below this (0.1 deg) leaves nothing to explain
MAX_GAPS = 4


@dataclass
class ArmGap:
    """One named gap: its best amount on the grid and the replay error it leaves."""

    name: str
    amount: Any  # the gap's dataclass at the best amount
    error_rad: float  # RMS replay error with it (and the gaps named before it)

    def amount_value(self) -> float:
        key = AMOUNT[self.name][0]
        value = getattr(self.amount, key)
        return float(np.mean(value)) if isinstance(value, tuple) else float(value)


@dataclass
class ArmFit:
    """The nominal replay's error and the gaps that explain it, in the order they were named."""

    nominal_error_rad: float
    named: list[ArmGap] = field(default_factory=list)

    @property
    def explained(self) -> float:
        """The share of the nominal replay's error the named gaps remove."""
        if not self.named or self.nominal_error_rad <= 0:
            return 0.0
        return 1.0 - self.named[-1].error_rad / self.nominal_error_rad


class ReplayTwin:
    """The nominal twin driven open loop by recorded targets, through a chosen set of arm gaps."""

    def __init__(self, spec: Spec):
        from so101_sim2real.sim.task import LiftCubeTask

        self.spec = spec
        self.task = LiftCubeTask(spec)
        m = self.task.model
        self._qpos = np.array([m.jnt_qposadr[m.joint(j).id] for j in S.JOINTS])
        self._dof = np.array([m.jnt_dofadr[m.joint(j).id] for j in S.JOINTS])
        self._act = np.array([m.actuator(j).id for j in S.JOINTS])
        self._gripper = list(S.JOINTS).index(S.GRIPPER_JOINT)
        self._gains = (m.actuator_gainprm[self._act, 0].copy(), -m.actuator_biasprm[self._act, 2].copy())
        self._cube = m.jnt_qposadr[m.joint(S.CUBE_JOINT).id]

    def _set_gains(self, world: StandIn) -> None:
        kp, kv = (g.copy() for g in self._gains)
        if (c := world.get("compliance")) is not None:
            arm = np.arange(len(kp)) != self._gripper
            kp[arm] *= c.stiffness_scale
            kv[arm] *= c.stiffness_scale
        if (g := world.get("gripper")) is not None:
            kp[self._gripper] *= g.stiffness_scale
            kv[self._gripper] *= g.damping_scale
        m = self.task.model
        m.actuator_gainprm[self._act, 0] = kp
        m.actuator_biasprm[self._act, 1] = -kp
        m.actuator_biasprm[self._act, 2] = -kv

    def replay(self, arrays: dict[str, np.ndarray], world: StandIn) -> np.ndarray:
        """The twin's joints at every recorded row, driven by the recorded targets through ``world``'s
        latency, top speed, play and gains."""
        m, d = self.task.model, self.task.data
        recorded, targets, times = arrays["joint_pos"], arrays["target"], arrays["time"]
        self._set_gains(world)
        mujoco.mj_resetData(m, d)
        d.qpos[self._qpos] = recorded[0]
        if "joint_vel" in arrays:
            d.qvel[self._dof] = arrays["joint_vel"][0]
        cube = arrays["cube_pos"][0] if "cube_pos" in arrays else (0.25, 0.0, self.task.scene.cube_half)
        d.qpos[self._cube:self._cube + 7] = [*cube, 1.0, 0.0, 0.0, 0.0]
        d.ctrl[self._act] = recorded[0]
        mujoco.mj_forward(m, d)
        path = CommandPath(world, len(S.JOINTS))
        periods = np.diff(times) if len(times) > 1 else np.array([self.spec.control.period_s])
        dt = m.opt.timestep
        out = [recorded[0].copy()]
        for i in range(len(recorded) - 1):
            path.send(d.time, targets[i])
            for _ in range(max(1, round(float(periods[i]) / dt))):
                ctrl = path.step(d.time, dt, d.qpos[self._qpos])
                if ctrl is not None:
                    d.ctrl[self._act] = ctrl
                mujoco.mj_step(m, d)
            out.append(d.qpos[self._qpos].copy())
        self._set_gains(StandIn({}))
        return np.array(out)


def _errors(episodes: list[dict[str, np.ndarray]], twin: ReplayTwin, world: StandIn) -> np.ndarray:
    """Per joint, the RMS replay error over the episodes."""
    errors = np.concatenate([twin.replay(a, world) - a["joint_pos"] for a in episodes])
    return np.sqrt(np.mean(errors ** 2, axis=0))


def _score(name: str, per_joint: np.ndarray, gripper: int) -> float:
    """The error a gap is judged on: the arm's joints for the arm's gaps (the gripper's own error is
    mostly the cube it closes on: another size, another grip), every joint for the gripper's."""
    arm = np.arange(len(per_joint)) != gripper
    joints = per_joint if name == "gripper" else per_joint[arm]
    return float(np.sqrt(np.mean(joints ** 2)))


def fit_arm(episodes: list[dict[str, np.ndarray]], spec: Spec, twin: ReplayTwin | None = None) -> ArmFit:
    """The arm gaps that explain the episodes' recorded joints (``Recording.load``'s arrays with
    ``time``, ``joint_pos`` and ``target``), named greedily: each round adds the gap whose best
    amount removes the largest share of the error it is judged on (:func:`_score`), while that
    share is at least :data:`EXPLAINS_FIRST` (then :data:`EXPLAINS`). ``twin``: one already built."""
    twin = twin or ReplayTwin(spec)
    gripper = list(S.JOINTS).index(S.GRIPPER_JOINT)
    current = _errors(episodes, twin, StandIn({}))
    fit = ArmFit(_score("all", current, gripper))
    chosen: dict[str, Any] = {}
    while len(chosen) < MAX_GAPS:
        trials = []
        for name, grid in GRIDS.items():
            if name in chosen or (before := _score(name, current, gripper)) < NOISE_RAD:
                continue
            for amount in grid:
                errors = _errors(episodes, twin, StandIn({**chosen, name: amount}))
                if np.isfinite(errors).all():  # a replay that diverged explains nothing
                    trials.append((1.0 - _score(name, errors, gripper) / before, name, amount, errors))
        if not trials:
            break
        share, name, amount, errors = max(trials, key=lambda t: t[0])
        if share < (EXPLAINS if chosen else EXPLAINS_FIRST):
            break
        chosen[name] = amount
        current = errors
        fit.named.append(ArmGap(name, amount, _score("all", errors, gripper)))
    return fit
