"""``so101 compare-sim sensitivity``: the gap budget, one perturbation of the twin at a time."""

import json

import numpy as np
import pytest

from fixtures import run_cli
from so101_sim2real.compare.sensitivity import Gap, LatePilot, default_gaps, read_report, sensitivity
from so101_sim2real.control.description import describe
from so101_sim2real.control.infer import InferOptions
from so101_sim2real.sim.perturb import Perturbation


def test_the_scripted_expert_ranks_a_large_period_change_above_a_1_mm_camera_shift():
    # The expert reads the cube from the sim, so a moved camera costs it nothing. A slower period
    # does not either (targets are positions and episodes count ticks: 100 and 200 ms succeed),
    # so the large change is a faster one: at 4 ms the arm cannot reach a tick's target in time.
    opts = InferOptions(describe(ckpt="scripted"), episodes=3, max_steps=60)
    gaps = [Gap("camera shift 1 mm", Perturbation(camera_shift_mm=(1.0, 0.0, 0.0))),
            Gap("period 4 ms", Perturbation(period_s=0.004))]
    rep = sensitivity(opts, gaps)
    assert rep.nominal.success == 1.0
    assert [r.name for r in rep.rows] == ["period 4 ms", "camera shift 1 mm"]
    assert rep.rows[0].cost_points > rep.noise_points and rep.rows[1].cost_points == 0


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
    recorded = [g for g in gaps if "recorded p50" in g.name]
    assert len(recorded) == 1 and recorded[0].perturbation.period_s == 0.083
    lag = [g for g in gaps if "recorded lag" in g.name]
    assert len(lag) == 1 and lag[0].latency_ticks == 3
    assert all("5.0 px" in g.name for g in gaps if g.name.startswith("camera"))
    assert len(default_gaps(0.02)) == len(gaps) - 2


def test_measured_gaps_are_matched_on_the_twins_frames():
    from so101_sim2real.compare.gap_match import measured_gaps
    from so101_sim2real.spec import default_spec

    matches = {m.name: m for m in measured_gaps(default_spec(), {"iou": {"cube": 0.6, "static_finger": 0.8,
                                                                         "moving_finger": None},
                                                                 "rel_error": 0.05, "finger_shift": (3.0, 0.0)})}
    assert set(matches) == {"seg erosion", "cube pixels missed", "disparity noise", "camera tilt"}, matches
    # edge flips alone cannot bring the thin classes down to 0.7 (even p=1 leaves ~0.88): no row for them
    assert abs(matches["cube pixels missed"].achieved - 0.6) < 0.05
    assert 0.3 < matches["cube pixels missed"].perturbation.cube_dropout < 0.5
    assert abs(matches["disparity noise"].achieved - 0.05) < 0.02
    tilt = matches["camera tilt"]
    assert tilt.achieved == pytest.approx(3.0, abs=0.3) and abs(tilt.perturbation.camera_tilt_deg[1]) > 0.5
    near = {m.name: m for m in measured_gaps(default_spec(), {"iou": {"static_finger": 0.93}})}
    assert abs(near["seg edge flips"].achieved - 0.93) < 0.05, near


@pytest.mark.slow
def test_the_json_has_every_row_with_its_cost_against_the_nominal_twin(capsys, tmp_path):
    code, out, err = run_cli(capsys, "compare-sim", "sensitivity", "--ckpt", "scripted", "--episodes", "2",
                             "--max-steps", "40", "--json", "--out", str(tmp_path / "s"))
    assert code == 0, err
    rep = json.loads(out)
    names = {r["name"] for r in rep["rows"]}
    assert names == {g.name for g in default_gaps(0.02)}
    nominal = rep["nominal"]["success"]
    for row in rep["rows"]:
        assert row["episodes"] == 2 and 0.0 <= row["success"] <= 1.0
        assert row["cost_points"] == pytest.approx(100 * (nominal - row["success"]))
    costs = [r["cost_points"] for r in rep["rows"]]
    assert costs == sorted(costs, reverse=True)
    assert json.loads((tmp_path / "s" / "sensitivity.json").read_text()) == rep
    assert (tmp_path / "s" / "sensitivity.png").stat().st_size > 0


def _not_a_report(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"episodes": 3, "success_rate": 1.0}))  # an infer --json summary
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
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, args, expected):
    code, out, err = run_cli(capsys, "compare-sim", "sensitivity", *args(tmp_path))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and expected in err, err
