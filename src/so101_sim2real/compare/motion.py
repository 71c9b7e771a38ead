"""Commanded against measured end-effector motion: does +x in the action move the TCP along +x?

The action's first three numbers ask the end effector to move along the world's x, y
and z. A controller that maps them onto the wrong axes (the user's XY swap) still
moves the arm, smoothly, just elsewhere; nothing in the observation says so. Here the
per-tick TCP motion (differences of the recorded ``tcp_pos``, the FK of the measured
joints) is explained by the commanded motion (``action[:3]`` times the spec's scale)
through each of the 48 axis maps (a permutation of x, y, z with signs), a scalar gain
and a lag of a few ticks. A map other than the identity that explains the motion much
better names the swap. Only one gain per map is fitted, so a policy that moves along
one axis at a time (a scripted approach, say) is judged as well as a rich one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

AXES = ("x", "y", "z")
MAX_LAG = 4  # ticks between an action and the motion it causes that are searched
MIN_TICKS = 12
MIN_R2 = 0.5  # the best map must explain this share of the measured motion to judge at all
MARGIN = 0.2  # ... and this much more than the identity to name a swap


@dataclass
class AxisCheck:
    """How well the commanded motion explains the measured one, as commanded and through the best map."""

    moves: dict[str, str]  # the best map: commanded axis -> measured axis ("-y": the other way)
    r2_best: float  # share of the measured motion's variance the best map explains
    r2_identity: float  # ... and the one the action means (x moves x)
    gain: float  # metres moved per metre asked, through the best map
    lag_ticks: int

    @property
    def swapped(self) -> dict[str, str]:
        """The commanded axes the best map sends elsewhere, when it beats the identity clearly."""
        if self.r2_best < MIN_R2 or self.r2_best - self.r2_identity < MARGIN:
            return {}
        return {a: m for a, m in self.moves.items() if m != a}


def _maps() -> list[np.ndarray]:
    """The 48 signed permutation matrices, identity first."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = np.zeros((3, 3))
            m[range(3), perm] = signs
            out.append(m)
    return out


def _r2(cmd: np.ndarray, meas: np.ndarray) -> tuple[float, float]:
    """Best non-negative scalar ``g`` for ``meas = g * cmd`` and the R^2 it leaves."""
    denom = (cmd * cmd).sum()
    g = max(float((cmd * meas).sum() / denom), 0.0) if denom > 0 else 0.0
    total = ((meas - meas.mean(axis=0)) ** 2).sum()
    return (1.0 - ((meas - g * cmd) ** 2).sum() / total if total > 0 else 0.0), g


def _describe(m: np.ndarray) -> dict[str, str]:
    return {AXES[i]: ("-" if m[i].sum() < 0 else "") + AXES[int(np.abs(m[i]).argmax())] for i in range(3)}


def axis_check(action: np.ndarray, tcp_pos: np.ndarray, xyz_scale_m: float) -> AxisCheck | None:
    """The commanded -> measured axis map of one episode; None when it is too short to judge."""
    cmd = np.clip(np.asarray(action, dtype=np.float64)[:-1, :3], -1.0, 1.0) * xyz_scale_m
    meas = np.diff(np.asarray(tcp_pos, dtype=np.float64), axis=0)
    if len(cmd) < MIN_TICKS + MAX_LAG:
        return None
    fits = []  # (r2, gain, lag, map index)
    maps = _maps()
    for lag in range(MAX_LAG + 1):
        x, y = cmd[:len(cmd) - lag], meas[lag:]
        fits += [(*_r2(x @ m, y), lag, k) for k, m in enumerate(maps)]
    r2, gain, lag, k = max(fits, key=lambda f: f[0])
    identity = max(f[0] for f in fits if f[3] == 0)
    return AxisCheck(_describe(maps[k]), float(r2), float(identity), gain, lag)
