"""What compare-sim measured on one recorded episode: the report and its parts, and the findings
that name its mismatches. :mod:`~so101_sim2real.compare.replay` fills it, :mod:`~so101_sim2real.compare.findings`
reads it for what it recognises, the pictures and the page show it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from so101_sim2real.compare.cube_fit import CubePlacement

if TYPE_CHECKING:
    from so101_sim2real.compare.arm_fit import ArmFit
    from so101_sim2real.compare.dynamics import DynamicsMetrics
    from so101_sim2real.compare.motion import AxisCheck
    from so101_sim2real.compare.picture_check import PictureMetrics
    from so101_sim2real.compare.state_check import StateFieldCheck


@dataclass
class Finding:
    """A recognised mismatch: what it is, the numbers that show it, what to run next."""

    name: str
    evidence: dict
    next: str
    gaps: list[str] = field(default_factory=list)  # the stand-in's gaps (sim/standin.py) it names, where it names one

    def line(self) -> str:
        numbers = ", ".join(f"{k}={_short(v)}" for k, v in self.evidence.items() if not isinstance(v, dict))
        return f"{self.name}: {numbers} -> {self.next}"


def _short(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


@dataclass
class SegmentationMetrics:
    """Recorded vs twin class ids over the episode."""

    classes: list[str]
    iou: dict[str, float | None]  # None: the class is in neither frame all episode
    agreement: float  # share of pixels with the same id
    confusion: list[list[int]]  # [recorded id][twin id], pixel counts summed over the episode
    per_tick_iou: list[list[float | None]]  # [tick][class]


@dataclass
class DisparityMetrics:
    """Recorded vs twin disparity on the pixels where both segmentations agree."""

    spearman: float | None  # median over ticks of the per-tick rank correlation
    rel_error: float | None  # median over ticks of the median-scaled absolute relative error
    pixels: int  # compared, over the episode
    per_tick_spearman: list[float | None]
    by_band: dict[str, float | None] = field(default_factory=dict)  # mean error by the twin's depth band


@dataclass
class TimingMetrics:
    """The recorded control period (differences of ``time``) against the spec's."""

    spec_period_s: float
    p50_s: float | None
    p95_s: float | None
    jitter_s: float | None  # standard deviation of the period
    offset: float | None  # p50 / spec - 1


@dataclass
class FingerShift:
    """How far a finger's mask centroid sits in the recording from the twin's, in policy-frame pixels."""

    name: str
    mean_dx: float
    mean_dy: float
    consistent: float  # share of ticks whose shift points the mean's way
    ticks: int

    @property
    def magnitude(self) -> float:
        return float(np.hypot(self.mean_dx, self.mean_dy))


@dataclass
class TickFrames:
    """One tick's pictures: the recorded camera image and policy frame, and the twin's frame."""

    tick: int
    agreement: float  # share of seg pixels with the same id
    recorded: np.ndarray  # (C, H, W) uint8
    twin: np.ndarray
    rgb: np.ndarray | None = None  # the recorded camera image, where the recording kept it


@dataclass
class ReplayReport:
    """Everything ``compare-sim`` measured on one recorded episode."""

    recording: str
    episode: int
    ticks: int
    segmentation: SegmentationMetrics
    disparity: DisparityMetrics
    timing: TimingMetrics
    finger_shifts: list[FingerShift]
    findings: list[Finding] = field(default_factory=list)
    dynamics: DynamicsMetrics | None = None  # the recorded targets replayed open loop (None: no targets)
    state: list[StateFieldCheck] | None = None  # the recorded state against the twin's (None: not recorded)
    motion: AxisCheck | None = None  # commanded vs measured EE motion (None: too short, or not recorded)
    cube: CubePlacement = field(default_factory=lambda: CubePlacement("recorded"))
    arm: ArmFit | None = None  # the arm gaps that explain the replay's error (None: no targets recorded)
    picture: PictureMetrics | None = None  # the camera picture against the twin's (None: no RGB recorded)
    worst: list[TickFrames] = field(default_factory=list, repr=False)  # for the pictures, not the JSON

    def to_dict(self) -> dict:
        """Plain JSON-able values (NaN as None)."""
        data = asdict(self)
        data.pop("worst")
        data["worst_ticks"] = [w.tick for w in self.worst]
        return _plain(data)


def _plain(obj: object) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
