"""``so101 compare-sim sensitivity``: the gap budget, one perturbation of the twin at a time."""

import json

import numpy as np
import pytest

from fixtures import run_cli
from so101_sim2real.compare.sensitivity import Gap, LatePilot, default_gaps, read_report, sensitivity
from so101_sim2real.control.description import describe
from so101_sim2real.control.infer import InferOptions
from so101_sim2real.sim.perturb import Perturbation

# The default rows at the spec's 20 ms period, written out: latencies are whole ticks (40 ms = 2,
# 100 ms = 5, 150 ms = 7.5 -> 8 ticks = 160 ms, Python rounding half to even).
DEFAULT_ROWS_AT_20_MS = [
    "period 50 ms", "period 100 ms",
    "camera shift 3 mm", "camera shift 8 mm", "camera tilt 2 deg about x", "camera tilt 4 deg about x",
    "field of view +5 deg", "seg edge flips p=0.1", "seg edge flips p=0.3",
    "seg cube and fingers eroded 1 px", "seg cube and fingers eroded 2 px", "seg cube pixels missed p=0.3",
    "disparity noise std 3", "disparity noise std 6", "disparity normalised over the crop",
    "action latency 40 ms (2 ticks)", "action latency 100 ms (5 ticks)", "action latency 160 ms (8 ticks)",
    "joint offsets 2 deg", "joint offsets 5 deg",
]


def test_the_scripted_expert_ranks_a_large_period_change_above_a_1_mm_camera_shift():
    # The expert reads the cube from the sim, so a moved camera costs it nothing. A slower period
    # does not either (targets are positions and episodes count ticks: 100 and 200 ms succeed),
    # so the large change is a faster one: at 4 ms the arm cannot reach a tick's target in time.
    opts = InferOptions(describe(ckpt="scripted"), episodes=3, max_steps=60)
    gaps = [Gap("camera shift 1 mm", Perturbation(camera_shift_mm=(1.0, 0.0, 0.0))),
            Gap("period 4 ms", Perturbation(period_s=0.004))]
    rep = sensitivity(opts, gaps)
    assert rep.nominal.successes == 3 and rep.nominal.episodes == 3
    assert [r.name for r in rep.rows] == ["period 4 ms", "camera shift 1 mm"]
    fast, shifted = rep.rows
    assert shifted.successes == 3 and shifted.cost_points == 0 and shifted.stderr_points == 0
    # cost = 100 * (3/3 - k/3) points; two binomial standard errors at p = 0.5 over 3 episodes = 100/sqrt(3)
    assert fast.cost_points == pytest.approx(100.0 * (3 - fast.successes) / 3)
    assert fast.successes <= 1 and fast.cost_points > 57.8
    p = fast.successes / 3  # the nominal's p = 1 adds no variance: se = sqrt(p (1 - p) / 3)
    assert fast.stderr_points == pytest.approx(100.0 * (p * (1 - p) / 3) ** 0.5)
    assert rep.noise_points == pytest.approx(57.735, abs=1e-3)


def test_a_late_pilot_acts_on_the_observation_from_k_ticks_ago():
    class Echo:
        name, needs_pixels = "echo", False

        def reset(self, obs):
            pass

        def act(self, obs):
            return np.array([obs])

    late = LatePilot(Echo(), 2)
    late.reset(0)
    assert [int(late.act(t)[0]) for t in range(1, 6)] == [0, 0, 1, 2, 3]


def test_a_compare_sim_report_adds_a_row_at_the_recorded_period_and_names_the_finger_shift(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"timing": {"p50_s": 0.083, "spec_period_s": 0.02},
                                "finger_shifts": [{"name": "static_finger", "mean_dx": 3.0, "mean_dy": 4.0}],
                                "dynamics": {"joints": [{"lag_ticks": 3}, {"lag_ticks": None}]}}))
    measured = read_report(path)
    assert measured == {"period_s": 0.083, "finger_shift_px": 5.0, "finger_shift": (3.0, 4.0), "lag_ticks": 3}
    gaps = default_gaps(0.02, measured)
    seen = " (recorded fingers moved 5.0 px)"
    assert [g.name for g in gaps] == ["period 83 ms (recorded p50)", *DEFAULT_ROWS_AT_20_MS[:2],
                                      *(name + seen for name in DEFAULT_ROWS_AT_20_MS[2:6]),
                                      *DEFAULT_ROWS_AT_20_MS[6:18], "action latency 3 ticks (recorded lag)",
                                      *DEFAULT_ROWS_AT_20_MS[18:]]
    assert gaps[0].perturbation.period_s == 0.083
    assert [g.latency_ticks for g in gaps if g.latency_ticks] == [2, 5, 8, 3]
    for g, mm in zip(gaps[3:5], (3.0, 8.0), strict=True):  # the shift's norm split evenly over x, y, z
        assert g.perturbation.camera_shift_mm == pytest.approx((mm / 3**0.5,) * 3)
    assert [g.name for g in default_gaps(0.02)] == DEFAULT_ROWS_AT_20_MS


def test_measured_gaps_are_matched_on_the_twins_frames():
    from so101_sim2real.compare.gap_match import measured_gaps, reset_frames
    from so101_sim2real.spec import default_spec

    spec = default_spec()
    matches = {m.name: m for m in measured_gaps(spec, {"iou": {"cube": 0.6, "static_finger": 0.8,
                                                               "moving_finger": None},
                                                       "rel_error": 0.05, "finger_shift": (3.0, 0.0)})}
    assert set(matches) == {"seg erosion", "cube pixels missed", "disparity noise", "camera tilt"}, matches
    # edge flips alone cannot bring the thin classes down to 0.7 (even p=1 leaves ~0.88): no row for them
    near = {m.name: m for m in measured_gaps(spec, {"iou": {"static_finger": 0.93}})}
    # Each matched perturbation is applied to the twin, and its effect measured here, not by the matcher.
    # Classes: 0 background, 1 table, 2 cube, 3 static finger, 4 moving finger; channels: seg, disparity.
    nominal = reset_frames(spec)
    # a cube pixel read as the table with chance p leaves a cube IoU of about 1 - p
    dropout = matches["cube pixels missed"].perturbation.cube_dropout
    assert 0.3 < dropout < 0.5
    noisy = reset_frames(spec, Perturbation(cube_dropout=dropout,
                                            disparity_noise=matches["disparity noise"].perturbation.disparity_noise))
    assert abs(np.mean([_iou(n[0], c[0], 2) for n, c in zip(noisy, nominal, strict=True)]) - 0.6) < 0.05
    assert abs(np.mean([_median_scaled_error(n[1], c[1]) for n, c in zip(noisy, nominal, strict=True)]) - 0.05) < 0.02
    flips = reset_frames(spec, Perturbation(seg_edge_flip=near["seg edge flips"].perturbation.seg_edge_flip))
    thin = [_iou(n[0], c[0], k) for n, c in zip(flips, nominal, strict=True) for k in (2, 3, 4)
            if (c[0] == k).any()]  # the moving finger is hidden at these poses
    assert abs(np.mean(thin) - 0.93) < 0.05, near
    # the tilt moves the fingers' centroid by the recorded (3, 0) px, to half a pixel
    tilt = matches["camera tilt"].perturbation
    assert abs(tilt.camera_tilt_deg[1]) > 0.5
    moved = _finger_centroids(reset_frames(spec, tilt)) - _finger_centroids(nominal)
    assert np.allclose(moved.mean(axis=0), (3.0, 0.0), atol=0.5), moved


def _iou(seg: np.ndarray, ref: np.ndarray, k: int) -> float:
    return float(((seg == k) & (ref == k)).sum() / ((seg == k) | (ref == k)).sum())


def _median_scaled_error(disp: np.ndarray, ref: np.ndarray) -> float:
    """Mean |s d - r| / r where r > 0, with the scale s = median(r) / median(d)."""
    d, r = disp[ref > 0].astype(float), ref[ref > 0].astype(float)
    return float(np.mean(np.abs(d * np.median(r) / np.median(d) - r) / r))


def _finger_centroids(frames) -> np.ndarray:
    return np.array([[xs.mean(), ys.mean()] for ys, xs in (np.nonzero(np.isin(f[0], (3, 4))) for f in frames)])


@pytest.mark.slow
def test_the_json_has_every_row_with_its_cost_against_the_nominal_twin(capsys, tmp_path):
    code, out, err = run_cli(capsys, "compare-sim", "sensitivity", "--ckpt", "scripted", "--episodes", "2",
                             "--max-steps", "40", "--json", "--out", str(tmp_path / "s"))
    assert code == 0, err
    rep = json.loads(out)
    assert sorted(r["name"] for r in rep["rows"]) == sorted(DEFAULT_ROWS_AT_20_MS)
    assert rep["episodes"] == 2 and rep["noise_points"] == pytest.approx(70.711, abs=1e-3)  # 100 / sqrt(2)
    nominal = rep["nominal"]["successes"] / 2
    for row in rep["rows"]:
        assert row["episodes"] == 2 and row["successes"] in (0, 1, 2) and row["success"] == row["successes"] / 2
        assert row["cost_points"] == pytest.approx(100 * (nominal - row["success"]))
        p = row["success"]
        se = (nominal * (1 - nominal) / 2 + p * (1 - p) / 2) ** 0.5
        assert row["stderr_points"] == pytest.approx(100 * se)
    costs = [r["cost_points"] for r in rep["rows"]]
    assert costs == sorted(costs, reverse=True)
    assert json.loads((tmp_path / "s" / "sensitivity.json").read_text()) == rep
    assert (tmp_path / "s" / "sensitivity.png").stat().st_size > 0


def _not_a_report(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"episodes": 3, "success_rate": 1.0}))  # an infer --json summary
    return path


def _bad_amounts(tmp_path, gaps=("latency",), amounts=None):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"timing": {"p50_s": 0.02}, "finger_shifts": [], "findings": [
        {"name": "commands reach the arm late", "gaps": list(gaps),
         "evidence": {"amounts": amounts or {"ms": -5.0}}}]}))
    return path


def _not_json(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("<html>")
    return path


@pytest.mark.parametrize("args, expected", [
    (lambda t: ["--ckpt", str(t / "missing.pt")], "no such file"),
    (lambda t: ["--ckpt", "scripted", "--episodes", "0"], "--episodes must be at least 1"),
    (lambda t: ["--ckpt", "scripted", "--report", str(_not_a_report(t))], "not a compare-sim report"),
    (lambda t: ["--ckpt", "scripted", "--report", str(_not_json(t))], "not JSON"),
    (lambda t: ["--ckpt", "scripted", "--report", str(t / "none.json")], "cannot read the report"),
    (lambda t: ["--ckpt", "scripted", "--seg-ckpt", "seg.ckpt"], "give --standin too"),
    (lambda t: ["--ckpt", "scripted", "--report", str(_bad_amounts(t))],
     "findings[0].evidence.amounts: out of range (ms"),
    (lambda t: ["--ckpt", "scripted", "--report", str(_bad_amounts(t, ("jpeg",), {"quality": 50}))],
     "not one of the arm's gaps"),
    (lambda t: ["--ckpt", "policy.pt", "--standin", "configs/standin.yaml", "--seg-ckpt", "s.ckpt"],
     "give --seg-ckpt (so101 seg train) and --depth-model"),
    (lambda t: ["--ckpt", "scripted", "--standin", str(t / "no.yaml")], "no.yaml"),
    (lambda t: ["--ckpt", "scripted", "--standin", "configs/standin.yaml", "--gaps", "latncy"],
     "--gaps latncy: not a gap of this world (did you mean 'latency'?)"),
    (lambda t: ["--ckpt", "scripted", "--gaps", "latency"], "give --standin too"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, args, expected):
    code, out, err = run_cli(capsys, "compare-sim", "sensitivity", *args(tmp_path))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and expected in err, err


def test_the_standin_rows_are_each_gap_alone_every_gap_and_the_arm_as_a_report_measured(capsys, tmp_path):
    world = tmp_path / "world.yaml"
    world.write_text("seed: 0\ngaps:\n  max_speed: {deg_s: 60.0}\n  jpeg:\n")
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"timing": {"p50_s": 0.02}, "finger_shifts": [], "findings": [
        {"name": "the picture carries JPEG blocks", "gaps": ["jpeg"], "next": "", "evidence": {}},
        {"name": "commands reach the arm late", "gaps": ["latency"], "next": "",
         "evidence": {"ms": 60.0, "amounts": {"ms": 60.0}}},
        {"name": "the servos turn slower than the twin's", "gaps": ["max_speed"], "next": "", "evidence": {}},
        {"name": "control period differs from the spec", "gaps": [], "next": "", "evidence": {}}]}))
    code, out, err = run_cli(capsys, "compare-sim", "sensitivity", "--ckpt", "scripted", "--episodes", "2",
                             "--seed", "5000", "--max-steps", "60", "--standin", str(world), "--report", str(report),
                             "--json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)["rows"]}
    assert set(rows) == {"stand-in: max_speed alone", "stand-in: jpeg alone", "stand-in: every gap",
                         "stand-in: latency as measured (ms 60)"}
    # a 60 deg/s top speed stops the expert's grasp; JPEG cannot reach an expert that sees no pixels
    assert rows["stand-in: max_speed alone"]["successes"] == 0 and rows["stand-in: jpeg alone"]["successes"] == 2
    assert rows["stand-in: every gap"]["successes"] == 0
    # the report's findings ranked by what their gap's row cost: the measured row for latency, the
    # gap alone for the others; the finding that names no gap is not ranked
    ranked = json.loads(out)["findings_by_cost"]
    assert [f["gaps"] for f in ranked][0] == ["max_speed"] and ranked[0]["cost_points"] == 100.0
    assert {f["row"] for f in ranked} == {"stand-in: max_speed alone", "stand-in: jpeg alone",
                                          "stand-in: latency as measured (ms 60)"}
    assert all(f["cost_points"] == rows[f["row"]]["cost_points"] for f in ranked)
    assert [f["cost_points"] for f in ranked] == sorted((f["cost_points"] for f in ranked), reverse=True)
    code, out, err = run_cli(capsys, "compare-sim", "sensitivity", "--ckpt", "scripted", "--episodes", "1",
                             "--seed", "5000", "--max-steps", "60", "--standin", str(world), "--report", str(report),
                             "--gaps", "jpeg", "--json")
    assert code == 0, err  # only the rows asked for (no every-gap row, no other measured row)
    assert [r["name"] for r in json.loads(out)["rows"]] == ["stand-in: jpeg alone"]


def test_findings_are_costed_by_their_gap_less_what_the_networks_cost_alone():
    from so101_sim2real.compare.sensitivity import GapResult, rank_findings

    rows = [GapResult("stand-in: its networks, no gap", 16, 20, cost_points=20.0),
            GapResult("stand-in: period alone", 0, 20, cost_points=100.0),
            GapResult("stand-in: jpeg alone", 16, 20, cost_points=20.0),
            GapResult("stand-in: latency alone", 10, 20, cost_points=60.0),
            GapResult("stand-in: latency as measured (ms 60)", 14, 20, cost_points=40.0)]
    findings = [{"name": "JPEG blocks", "gaps": ["jpeg"]},
                {"name": "late", "gaps": ["latency"]},
                {"name": "mount or intrinsics", "gaps": ["camera_mount", "intrinsics"]},  # no row: not ranked
                {"name": "period", "gaps": ["period"]},
                {"name": "period", "gaps": ["period"]}]  # repeated: ranked once
    ranked = rank_findings(findings, rows)
    assert [(f.name, f.cost_points) for f in ranked] == [("period", 80.0), ("late", 20.0), ("JPEG blocks", 0.0)]
    assert ranked[1].row == "stand-in: latency as measured (ms 60)"  # the measured amount's row, not the world's
