"""The recorded joint targets replayed open loop in the twin: does the real arm move as the twin's does?

The twin starts where the recording's first row is (joints and their velocities, the cube
where it was recorded or at its nominal place) and gets, tick by tick, the joint targets the recording
sent (``target``), each held for the recorded period. Its joints are then compared with
the recorded ones: the tracking error per joint (RMS over the episode), and the lag, the
shift in ticks that best lines up the two joint velocity traces (cross-correlation). A real
arm that lags its targets more than the twin (soft gains, a slow bus, a late loop) shows
as a positive lag; one that moves a joint the twin does not (a wrong sign, a loose horn) as
a large error on that joint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from so101_sim2real.compare.arm_fit import ReplayTwin
from so101_sim2real.interfaces import JOINT_NAMES
from so101_sim2real.spec import Spec

MAX_LAG_TICKS = 10
MIN_MOTION_RAD = 0.02  # a joint that moved less than this over the episode has no lag to measure


@dataclass
class JointTracking:
    """One joint: how far the twin's replay is from the recording."""

    name: str
    rms_error_rad: float
    max_error_rad: float
    lag_ticks: int | None  # recorded behind the twin (>0) or ahead (<0); None where the joint barely moved


@dataclass
class DynamicsMetrics:
    ticks: int
    joints: list[JointTracking]

    @property
    def worst_lag(self) -> int:
        lags = [j.lag_ticks for j in self.joints if j.lag_ticks is not None]
        return max(lags, key=abs) if lags else 0

    def lag_words(self) -> str:
        """:attr:`worst_lag` said in words: its sign is easy to misread as a number."""
        return describe_lag(self.worst_lag)


def describe_lag(lag: int) -> str:
    """What a lag in ticks (the recorded joints behind the twin's replay when positive) means."""
    if lag == 0:
        return "the recorded joints move in step with the twin's replay of their targets"
    ticks = f"{abs(lag)} tick{'s' if abs(lag) != 1 else ''}"
    return f"the recorded joints move {ticks} {'behind' if lag > 0 else 'ahead of'} the twin's replay of their targets"


def replay_targets(arrays: dict[str, np.ndarray], spec: Spec, twin: ReplayTwin | None = None) -> DynamicsMetrics:
    """The twin driven open loop by an episode's recorded targets (``Recording.load``'s arrays, with
    ``time``, ``joint_pos`` and ``target``), compared joint by joint. ``twin``: one already built (the
    arm fit replays through the same one)."""
    from so101_sim2real.sim.standin import StandIn

    recorded = arrays["joint_pos"]
    return _compare((twin or ReplayTwin(spec)).replay(arrays, StandIn({})), recorded)


def _compare(twin: np.ndarray, recorded: np.ndarray) -> DynamicsMetrics:
    error = recorded - twin
    joints = [JointTracking(name, float(np.sqrt(np.mean(error[:, k] ** 2))), float(np.abs(error[:, k]).max()),
                            lag_ticks(twin[:, k], recorded[:, k])) for k, name in enumerate(JOINT_NAMES)]
    return DynamicsMetrics(len(recorded), joints)


def lag_ticks(reference: np.ndarray, follower: np.ndarray, max_lag: int = MAX_LAG_TICKS) -> int | None:
    """The shift (ticks) of ``follower`` behind ``reference`` that best lines up their velocities."""
    if np.ptp(reference) < MIN_MOTION_RAD or len(reference) < 4:
        return None
    a, b = np.diff(reference), np.diff(follower)
    a, b = a - a.mean(), b - b.mean()
    best, best_score = 0, -np.inf
    span = min(max_lag, len(a) - 3)  # at least 3 velocities overlap at every shift tried
    for lag in range(-span, span + 1):
        x, y = (a[:len(a) - lag], b[lag:]) if lag >= 0 else (a[-lag:], b[:len(b) + lag])
        score = float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12))  # shape, not size
        if score > best_score:
            best, best_score = lag, score
    return best
