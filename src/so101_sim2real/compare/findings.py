"""What a replay's numbers name: the mismatches compare-sim recognises, each with the evidence that
shows it and what to run next. A clean twin recording has none."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from so101_sim2real.compare.report import Finding, ReplayReport

if TYPE_CHECKING:
    from so101_sim2real.compare.arm_fit import ArmFit
    from so101_sim2real.compare.dynamics import DynamicsMetrics
    from so101_sim2real.compare.picture_check import PictureMetrics

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
                           "at the real period in the perturbed twin (period_s)", ["period"]))
    shifted = [s for s in report.finger_shifts if s.magnitude >= SHIFT_MIN_PX and s.consistent >= SHIFT_CONSISTENT]
    measured = report.picture is not None and {"fingers", "scene"} <= set(report.picture.flow)
    if shifted and not unlike and not measured:  # without the camera's picture: the policy frame's fingers
        dx, dy = np.mean([s.mean_dx for s in shifted]), np.mean([s.mean_dy for s in shifted])
        out.append(Finding("camera pose offset",
                           {"shift_px": float(np.hypot(dx, dy)), "dx_px": float(dx), "dy_px": float(dy),
                            "classes": ",".join(s.name for s in shifted)},
                           "the fingers sit elsewhere in the picture: the camera's mount or its focal length and "
                           "centre differ from the twin's; measure them: so101 calibrate camera, then so101 "
                           "calibrate align", ["camera_mount", "intrinsics"]))
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
    arm = _arm(report.arm)
    if not any(f.gaps != ["gripper"] for f in arm) and (lag := _lag(report.dynamics)) is not None:
        out.append(lag)  # a lag no gap of the arm's joints explains
    out += arm
    if report.picture is not None and not unlike:
        out += _picture(report.picture)
    if (size := _cube_size(report)) is not None:
        out.append(size)
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
                       "'so101 compare-sim sensitivity' shows what such a lag costs the policy", ["latency"])
    # Ahead: the arm answers sooner than the twin's servo model, or the rows pair a reading with a later target.
    return Finding("the arm moves ahead of the twin's replay of its targets", evidence,
                   "check that row i's target is the one sent at tick i (targets stored a row late make the arm "
                   "look ahead), then the twin's servo gains against the arm's ('so101 motors scan')")


# What each arm gap the replay fit names is called, and what to do about it.
ARM_WORDS = {
    "latency": ("commands reach the arm late",
                "the time from the camera's exposure to the servos: 'so101 infer --json' (tick_ms) shows where it "
                "goes; fine-tune with it ('so101 compare-sim sensitivity' shows what it costs)"),
    "max_speed": ("the servos turn slower than the twin's",
                  "check the servos' speed and acceleration registers ('so101 motors scan') and the supply "
                  "voltage; a policy trained without a top speed asks for moves the arm cannot make"),
    "backlash": ("gear play: a reversing joint loses motion",
                 "worn or loose gears: tighten the horns; train with backlash in the stand-in"),
    "compliance": ("the arm's position loop is softer than the twin's: it sags under load",
                   "the servos' P gain (LeRobot's 16) against the twin's actuators: raise it where the arm does not "
                   "shake, or train with the stand-in's compliance"),
    "gripper": ("the gripper closes unlike the twin's",
                "the gripper servo's gains and its fingers' grip: check 'so101 motors scan'; train with the "
                "stand-in's gripper"),
}


def _arm(fit: ArmFit | None) -> list[Finding]:
    """A finding per arm gap the replay fit names, with the amount that explains the recorded joints."""
    if fit is None:
        return []
    from so101_sim2real.compare.arm_fit import AMOUNT

    out = []
    for gap in fit.named:
        name, next_step = ARM_WORDS[gap.name]
        key, unit = AMOUNT[gap.name]
        out.append(Finding(name, {key: gap.amount_value(), "unit": unit,
                                  "replay_error_deg": float(np.rad2deg(fit.nominal_error_rad)),
                                  "left_deg": float(np.rad2deg(gap.error_rad)),
                                  "amounts": dataclasses.asdict(gap.amount)}, next_step, [gap.name]))
    return out


# Picture thresholds: the measures of a twin recording sit at 1 (or 0) within a few percent.
GAIN_OFF = 0.06  # a colour gain this far from 1 on the fingers is the camera's exposure or white balance
COLOUR_OFF = 0.12  # a class this far from the fingers' gain has another material
# a blurred brightness ratio varying this much over the fingers, and their gain off: another light (a
# camera moved by millimetres shifts the fingers' edges: up to ~0.15 without a gain)
SHADING = 0.1
# the recorded median fine residual this many grey levels above the twin's (std 3 noise: ~1.3; the whole stand-in:
# ~0.38)
NOISE = 0.25
BLOCKS = 0.25  # 8x8 edge steps this many grey levels above the twin's: stronger JPEG (noise through q95: ~0.2)
# the fastest third of the ticks this much less sharp than the slowest (12 ms exposure: ~0.75; the rest >= 0.83)
BLUR = 0.8
FOREIGN_PX = 2500  # a blob this large (640x480 pixels) on the table in two ticks
FOREIGN_LIT_PX = 3500  # ... under another light, whose shadows have another hue


def _picture(pm: PictureMetrics) -> list[Finding]:
    out = []
    dimmed = pm.gain is not None and max(abs(g - 1.0) for g in pm.gain) >= GAIN_OFF
    lit = pm.shading is not None and pm.shading >= SHADING and dimmed
    if lit:
        out.append(Finding("the light differs from the twin's", {"shading": pm.shading},
                           "the room's light makes shadows and gradients the twin's renders lack: light the arm "
                           "evenly, or train the networks and the policy with the stand-in's lighting",
                           ["lighting"]))
    if dimmed and not lit:
        out.append(Finding("the camera's exposure or white balance differ from the twin's",
                           {"gain_r": pm.gain[0], "gain_g": pm.gain[1], "gain_b": pm.gain[2]},  # type: ignore[index]
                           "fix the camera's exposure and white balance (manual, not auto) to match the renders",
                           ["exposure"]))
    off = {name: max(abs(c - 1.0) for c in colour) for name, colour in pm.class_colour.items() if colour}
    recoloured = bool(off) and max(off.values()) >= COLOUR_OFF
    if recoloured:
        worst = max(off, key=lambda k: off[k])
        out.append(Finding("the table or the cube has another colour than the twin's",
                           {"class": worst, "colour_off": off[worst]},
                           "the networks learned the twin's materials: fine-tune them on frames of this table and "
                           "cube ('so101 seg train')", ["materials"]))
    noisy = pm.noise is not None and pm.noise >= NOISE
    if noisy:
        out.append(Finding("the camera's picture is noisier than the twin's", {"noise_levels": pm.noise},
                           "more light or less gain", ["sensor_noise"]))
    if pm.blockiness is not None and pm.blockiness >= BLOCKS:
        out.append(Finding("the picture carries JPEG blocks", {"blockiness": pm.blockiness},
                           "raise the camera's MJPEG quality or read it uncompressed (YUYV)", ["jpeg"]))
    # another texture, or noise, is another sharpness: blur is judged without them
    if pm.blur is not None and pm.blur <= BLUR and not recoloured and not noisy:
        out.append(Finding("the picture blurs when the wrist turns", {"sharpness_fast_vs_slow": pm.blur},
                           "a shorter exposure (more light), or train with motion blur", ["motion_blur"]))
    out += _geometry(pm)
    if pm.foreign_px is not None and pm.foreign_px >= (FOREIGN_LIT_PX if lit else FOREIGN_PX):
        out.append(Finding("something on the table the twin does not have", {"pixels": pm.foreign_px},
                           "clear the table, or train the networks with objects they should ignore",
                           ["distractor"]))
    return out


CAMERA_SHIFT_PX = 2.0  # the fingers this far off the twin's (640x480 pixels) ...
CAMERA_SCALE = 0.01  # ... or scaled this much: the camera differs
CAMERA_EXPLAINED = 0.5  # ... where the fit carries most of the fingers' motion (a moved camera: > 0.9)
PARALLAX_PX = 1.5  # fingers and scene shifted this differently: the camera moved, not its centre
LENS_K1 = 0.015  # a radial term this strong (OpenCV's k1) in the scene's motion: the lens
LENS_EXPLAINED = 0.3  # ... where the fit explains this share of the motion
SCENE_SHIFT_PX = 2.0  # the scene this far off the twin's while the fingers stay within FINGERS_STILL_PX
FINGERS_STILL_PX = 1.0
SHIFT_EXPLAINED = 0.15


def _geometry(pm: PictureMetrics) -> list[Finding]:
    """The lens, the camera's mount and intrinsics, and the joints' calibration, from where the
    recorded picture's edges sit: the fingers ride with the camera, the scene does not."""
    out = []
    scene, fingers = pm.flow.get("scene"), pm.flow.get("fingers")
    if scene is not None and fingers is not None and fingers.explained >= CAMERA_EXPLAINED and (
            fingers.shift_px >= CAMERA_SHIFT_PX or abs(fingers.scale) >= CAMERA_SCALE):
        parallax = float(np.hypot(fingers.dx_px - scene.dx_px, fingers.dy_px - scene.dy_px))
        evidence = {"fingers_dx_px": fingers.dx_px, "fingers_dy_px": fingers.dy_px, "scale": fingers.scale,
                    "parallax_px": parallax}
        if parallax >= PARALLAX_PX:  # the near fingers and the far table moved apart: the camera moved
            out.append(Finding("camera pose offset", evidence,
                               "the camera sits elsewhere on the gripper than the twin's: measure its mount "
                               "('so101 calibrate align')", ["camera_mount"]))
        else:  # everything moved alike, and scaled: the picture's centre and focal length
            out.append(Finding("the camera's focal length or centre differ from the twin's", evidence,
                               "measure the camera ('so101 calibrate camera') and let the twin see through it; "
                               "a turned mount looks alike without the scale ('so101 calibrate align')",
                               ["intrinsics"]))
    if scene is not None and abs(scene.k1) >= LENS_K1 and scene.explained >= LENS_EXPLAINED:
        out.append(Finding("the lens distorts the picture", {"k1": scene.k1, "explained": scene.explained},
                           "the twin's camera has no distortion: 'so101 calibrate camera' measures it, and "
                           "perception then undistorts each frame", ["lens_distortion"]))
    if (scene is not None and fingers is not None and scene.shift_px >= SCENE_SHIFT_PX
            and scene.explained >= SHIFT_EXPLAINED and fingers.shift_px < FINGERS_STILL_PX):
        out.append(Finding("the scene sits elsewhere while the fingers do not: the joints read off their angles",
                           {"scene_shift_px": scene.shift_px, "fingers_shift_px": fingers.shift_px},
                           "the camera rides on the gripper as in the twin, but the arm is not where its joints "
                           "say: calibrate the joints again ('so101 calibrate joints')", ["joint_offsets"]))
    return out


CUBE_AREA_OFF = 0.2  # the cube's recorded area this far from the twin's, where it is fitted
CUBE_FIT_IOU = 0.5  # ... by a fit whose masks overlap at least this much (a 2.5 cm cube on the twin's 3: ~0.7)


def _cube_size(report: ReplayReport) -> Finding | None:
    """The cube the first frames show, smaller or larger than the twin's at the fitted place."""
    c = report.cube
    if (c.area_ratio is None or c.iou is None or c.iou < CUBE_FIT_IOU or not c.converged
            or abs(c.area_ratio - 1.0) < CUBE_AREA_OFF):
        return None  # no size from a fit that did not settle, or put the cube elsewhere
    return Finding("the cube's size differs from the twin's", {"area_ratio": c.area_ratio,
                                                               "size_ratio": float(np.sqrt(c.area_ratio))},
                   "use the training cube's size, or train with the real cube's", ["cube"])
