"""What a replay's numbers name: the mismatches compare-sim recognises, each with the evidence that
shows it and what to run next. A clean twin recording has none."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from so101_sim2real.compare.report import Finding, ReplayReport

if TYPE_CHECKING:
    from so101_sim2real.compare.dynamics import DynamicsMetrics

PERIOD_TOLERANCE = 0.2  # a recorded p50 period this far off the spec's is a finding
MIN_CLASS_SHARE = 1e-3  # a recorded id holding less of the pixels is noise, not a class
REMAP_SHARE = 0.6  # a recorded id whose pixels land this much on one other twin id is that id, renamed
SHIFT_MIN_PX = 1.0  # mean finger centroid shift, in policy-frame pixels, that says the camera moved
SHIFT_CONSISTENT = 0.8  # share of ticks whose shift points the mean's way
LAG_TICKS = 2  # the recorded joints this many ticks behind the twin's replay of the same targets
# Disparity in the same order but at other values: normalised over another region (the crop, not the
# whole frame) or with another interpolation. Noise lowers the rank correlation; a renormalisation does not.
RANK_AGREES, VALUES_DIFFER = 0.98, 0.10
# No class overlapping the twin's more than this: the recorded frames show another world (a wrong model,
# another camera, noise). A misplaced cube or a moved camera still leaves the table well above it.
UNLIKE_IOU = 0.2


def id_remap(confusion: np.ndarray, classes: list[str]) -> dict[int, int] | None:
    """Recorded id -> twin id when the recorded ids are the twin's renamed (a permutation or an
    offset, one to one), with at least one id moved; None otherwise.

    A recorded id with real mass whose pixels land mostly on one twin id maps there. A
    cube the twin places elsewhere lands on the table too, but then two ids map to the
    table: not one to one, so not a renaming.
    """
    total = confusion.sum()
    if total == 0:
        return None
    mapping = {}
    for r, row in enumerate(confusion):
        if row.sum() < MIN_CLASS_SHARE * total:
            continue
        t = int(row.argmax())
        if row[t] < REMAP_SHARE * row.sum():
            return None  # spread over several classes: noise or a scene difference, not a renaming
        mapping[r] = t
    moved = {r: t for r, t in mapping.items() if r != t}
    if not moved or len(set(mapping.values())) != len(mapping):
        return None
    return mapping


def _offset(mapping: dict[int, int]) -> int | None:
    """k when every moved id is the twin's plus k (two or more of them), else None."""
    moved = {r: t for r, t in mapping.items() if r != t}
    offsets = {r - t for r, t in moved.items()}
    return offsets.pop() if len(offsets) == 1 and len(moved) >= 2 else None


def _describe_remap(mapping: dict[int, int], classes: list[str]) -> str:
    k = _offset(mapping)
    if k is not None:
        return f"recorded id = twin id {'+' if k > 0 else '-'} {abs(k)}"
    return ", ".join(f"{r}->{t} ({classes[t]})" for r, t in sorted(mapping.items()) if r != t)


def fix_table(mapping: dict[int, int], n_classes: int) -> list[int]:
    """The lookup table (index = recorded id) that undoes ``mapping``: an offset extends to the ids
    this episode did not show; a permutation leaves them as they are."""
    k = _offset(mapping)
    size = max(max(mapping) + 1, n_classes + max(k or 0, 0))
    table = [min(max(i - k, 0), n_classes - 1) if k is not None else i for i in range(size)]
    for r, t in mapping.items():
        table[r] = t
    return table


def findings(report: ReplayReport, remap: dict[int, int] | None = None) -> list[Finding]:
    """The named mismatches the report shows; a clean twin recording has none."""
    out = []
    classes = report.segmentation.classes
    unlike = None if remap else _unlike(report)
    if unlike:  # then the frames' finer measures (finger shifts, disparity values) mean nothing
        out.append(unlike)
    if remap:
        moved = {r: t for r, t in remap.items() if r != t}
        table = fix_table(remap, len(classes))
        out.append(Finding("class ids not remapped",
                           {"agreement": report.segmentation.agreement, "mapping": _describe_remap(remap, classes),
                            "recorded_to_twin": {str(r): t for r, t in sorted(moved.items())}},
                           f"map recorded ids to sim ids with {table} (index = recorded id), e.g. fix "
                           f"observation.segmentation.real_to_sim"))
    t = report.timing
    if t.offset is not None and abs(t.offset) > PERIOD_TOLERANCE:
        assert t.p50_s is not None and t.p95_s is not None  # the offset is made from them
        out.append(Finding("control period differs from the spec",
                           {"p50_ms": t.p50_s * 1e3, "p95_ms": t.p95_s * 1e3, "spec_ms": t.spec_period_s * 1e3,
                            "offset": t.offset},
                           "make the loop keep the spec's period (profile with 'so101 infer --json'), or fine-tune "
                           "at the real period in the perturbed twin (period_s)"))
    shifted = [s for s in report.finger_shifts if s.magnitude >= SHIFT_MIN_PX and s.consistent >= SHIFT_CONSISTENT]
    if shifted and not unlike:
        dx, dy = np.mean([s.mean_dx for s in shifted]), np.mean([s.mean_dy for s in shifted])
        out.append(Finding("camera pose offset",
                           {"shift_px": float(np.hypot(dx, dy)), "dx_px": float(dx), "dy_px": float(dy),
                            "classes": ",".join(s.name for s in shifted)},
                           "measure the camera's mount: so101 calibrate align"))
    disp = report.disparity
    if (not unlike and disp.spearman is not None and disp.spearman >= RANK_AGREES
            and (disp.rel_error or 0.0) >= VALUES_DIFFER):
        out.append(Finding("disparity normalised another way",
                           {"spearman": disp.spearman, "rel_error": disp.rel_error},
                           "the near-far order agrees but not the values: normalise as trained (the spec's "
                           "observation.disparity: the whole frame, min-max per frame) and resize as trained"))
    slips = [c for c in report.state or [] if c.degrees_for_radians]
    if slips:
        out.append(Finding("degrees and radians mixed in the state",
                           {"fields": ",".join(c.name for c in slips), "scale": slips[0].scale},
                           "the state is in the sim's units (radians, metres): convert where the state is built, "
                           "before the policy sees it"))
    if report.motion is not None and report.motion.swapped:
        m = report.motion
        out.append(Finding("commanded and measured end-effector motion on different axes",
                           {"moves": ", ".join(f"+{a} -> {b if b.startswith('-') else '+' + b}"
                                               for a, b in m.swapped.items()),
                            "r2_as_commanded": m.r2_identity, "r2_through_map": m.r2_best},
                           "the action is a world-frame x, y, z step: check where the controller turns it into "
                           "end-effector targets (axis order and signs), then record again"))
    if (lag := _lag(report.dynamics)) is not None:
        out.append(lag)
    return out


def _unlike(report: ReplayReport) -> Finding | None:
    """Every class far from the twin's: not one mismatch but a different picture altogether."""
    seg, disp = report.segmentation, report.disparity
    present = [v for v in seg.iou.values() if v is not None]
    if not present or max(present) >= UNLIKE_IOU:
        return None
    return Finding("the recorded segmentation does not resemble the twin's",
                   {"max_iou": max(present), "agreement": seg.agreement, "spearman": disp.spearman},
                   "check the model, the class ids, the camera: see the recorded frames beside the twin's with "
                   "'so101 compare-sim REC --out DIR', run 'so101 perceive IMAGE --seg-ckpt CKPT' on a frame of "
                   "this camera and compare its classes with the spec's (observation.segmentation, real_to_sim)")


def _lag(dyn: DynamicsMetrics | None) -> Finding | None:
    """The recorded joints a few ticks behind the twin's replay of their targets, or ahead of it."""
    if dyn is None or abs(dyn.worst_lag) < LAG_TICKS:
        return None
    evidence = {"lag_ticks": dyn.worst_lag, "joints": ",".join(j.name for j in dyn.joints
                                                                if j.lag_ticks == dyn.worst_lag)}
    if dyn.worst_lag > 0:
        return Finding("the arm lags its targets more than the twin", evidence,
                       "check the servos' gains and acceleration ('so101 motors scan') and the loop's latency; "
                       "'so101 compare-sim sensitivity' shows what such a lag costs the policy")
    # Ahead: the arm answers sooner than the twin's servo model, or the rows pair a reading with a later target.
    return Finding("the arm moves ahead of the twin's replay of its targets", evidence,
                   "check that row i's target is the one sent at tick i (targets stored a row late make the arm "
                   "look ahead), then the twin's servo gains against the arm's ('so101 motors scan')")
