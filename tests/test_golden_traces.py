"""The twin against the user's own training simulator: its golden traces, replayed.

The traces (``tests/data/golden``, see its README) were recorded by running the user's
environment unmodified. Everything here goes through the product's code path: the
twin's reset, controller, IK, safety clamp, physics, scoring and privileged
perception. Contact outcomes (the scripted grasps) are judged against the trace of the
MuJoCo version installed here, and so are the observations (MuJoCo 3.17 renders the
far floor differently from 3.4.0); contact-free motion against every trace.
"""

import json
from pathlib import Path

import mujoco
import numpy as np
import pytest

from so101_sim2real.compare import golden as F
from so101_sim2real.errors import So101Error
from so101_sim2real.spec import default_spec

GOLDEN = Path(__file__).parent / "data" / "golden"
TRACES = {path.name: F.load_trace(path) for path in sorted(GOLDEN.glob("*.npz"))}
INSTALLED = [name for name, t in TRACES.items() if t.matches_installed]
SEQUENCES = [(name, s.key) for name, t in TRACES.items() for s in t.sequences]
FREE = [(n, k) for n, k in SEQUENCES if not k.startswith("scripted")]
GRASPS = [(n, k) for n, k in SEQUENCES if k.startswith("scripted") and n in INSTALLED]


pytestmark = pytest.mark.slow  # whole runs on the twin, subprocesses: `pytest -m "not slow"` skips them


def test_the_pinned_mujoco_has_its_trace():
    assert len(TRACES) == 2
    assert default_spec().simulator.version == mujoco.__version__ == "3.4.0"  # pyproject pins what training used
    assert INSTALLED == ["pick101_golden_dev_mujoco340.npz"]


@pytest.fixture(scope="module")
def replayer():
    r = F.TwinReplayer(observe=True)
    yield r
    r.close()


@pytest.fixture(scope="module")
def replays(replayer):
    """Every sequence replayed once (with observations), shared by the checks below."""
    cache: dict[tuple[str, str], F.SequenceReport] = {}

    def get(name: str, key: str) -> F.SequenceReport:
        if (name, key) not in cache:
            trace = TRACES[name]
            cache[name, key] = replayer.replay(trace, next(s for s in trace.sequences if s.key == key))
        return cache[name, key]

    return get


@pytest.mark.parametrize("name", list(TRACES))
def test_resets_of_seeds_0_to_19_land_where_training_started(replayer, name):
    report = replayer.resets(TRACES[name])
    assert report.seeds == 20
    assert report.ok  # the 1e-4 rad / 1e-4 m
    assert report.max_joint_err <= 1e-7 and report.max_cube_err <= 1e-7  # what is achieved: a regression shows


@pytest.mark.parametrize(("name", "key"), FREE)
def test_random_actions_follow_every_joint_at_every_step(replays, name, key):
    r = replays(name, key)
    assert r.max_joint_err <= 1e-4, r.failures
    assert r.max_state_err <= 1e-3
    assert r.success_step is None and r.success_flags_equal


@pytest.mark.parametrize(("name", "key"), GRASPS)
def test_scripted_grasps_lift_the_cube_as_in_training(replays, name, key):
    r = replays(name, key)
    tol = F.CUBE_TOL[r.kind]
    assert r.max_cube_err <= tol
    assert r.max_state_err <= 1e-3
    if r.kind == "scriptedA":
        assert r.success_step == r.trace_success_step is not None  # success at the same step
    else:
        assert r.success_flags_equal
    assert r.ok, r.failures


@pytest.mark.parametrize(("name", "key"), [(n, k) for n, k in SEQUENCES if n in INSTALLED])
def test_observations_match_the_training_pipeline(replays, name, key):
    obs = replays(name, key).obs
    assert obs is not None and obs.steps >= 17
    assert min(obs.class_iou.values()) >= 0.99, obs.class_iou
    assert obs.seg_agreement >= 0.995
    assert obs.disparity_mae <= 1.0


def test_grasp_b_is_a_success_under_the_training_mujoco_only(replays):
    """The edge case that makes the MuJoCo version a recorded fact."""
    under_340 = TRACES["pick101_golden_dev_mujoco340.npz"]
    under_317 = TRACES["pick101_golden_dev.npz"]
    key = "scriptedB_seed0"
    assert next(s for s in under_340.sequences if s.key == key).first_success == 62
    assert next(s for s in under_317.sequences if s.key == key).first_success is None
    assert replays("pick101_golden_dev_mujoco340.npz", key).success_step == 62


def test_a_numpy_2_trace_is_replayed_with_its_float32_gripper_arithmetic():
    # Under NumPy 2 the recording env computed (a + 1) / 2 in float32; stick-slip friction
    # grows that rounding beyond the tolerance, so the replay must reproduce it exactly.
    g = default_spec().action.gripper
    actions = np.random.default_rng(0).uniform(-1, 1, (200, 4)).astype(np.float32)
    differs = 0
    for a in actions:
        assert F.as_recorded(a, "1.26.4")[3] == float(a[3])  # NumPy 1: float64, as the twin computes
        half = np.float32(np.float32(a[3]) + np.float32(1)) / np.float32(2)
        as_numpy2 = float(half) * (g.high_rad - g.low_rad) + g.low_rad
        assert g.to_rad(F.as_recorded(a, "2.4.6")[3]) == as_numpy2
        differs += g.to_rad(float(a[3])) != as_numpy2
    assert differs > 20


def test_a_file_that_is_not_a_trace_is_one_clear_error(tmp_path):
    with pytest.raises(So101Error, match="no such trace file"):
        F.load_trace(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(So101Error, match="not a readable .npz"):
        F.load_trace(bad)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(So101Error, match="not a golden trace"):
        F.load_trace(other)


@pytest.mark.parametrize("damage", ["no numpy version", "odd numpy version", "no resets/seeds", "no obs_step",
                                    "short qpos"])
def test_a_damaged_trace_is_one_clear_error(tmp_path, damage):
    source = next(iter(TRACES.values()))
    arrays = dict(source.arrays)
    meta = {"mujoco": source.mujoco, "numpy": source.numpy,
            "sequences": [{"key": s.key, "seed": s.seed, "kind": s.kind, "steps": s.steps,
                           "first_success": s.first_success} for s in source.sequences]}
    key = source.sequences[0].key
    if damage == "no numpy version":
        del meta["numpy"]
    elif damage == "odd numpy version":
        meta["numpy"] = "dev"
    elif damage == "no resets/seeds":
        del arrays["resets/seeds"]
    elif damage == "no obs_step":
        del arrays[f"{key}/obs_step"]
    else:
        arrays[f"{key}/qpos"] = arrays[f"{key}/qpos"][:-3]
    path = tmp_path / "damaged.npz"
    np.savez(path, _meta=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(So101Error, match="not a golden trace"):
        F.load_trace(path)


def test_twin_fidelity_script_prints_json_and_refuses_a_bad_path(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).parent.parent / "scripts" / "twin_fidelity.py"
    trace = GOLDEN / "pick101_golden_dev_mujoco340.npz"
    proc = subprocess.run([sys.executable, str(script), "--traces", str(trace), "--no-obs", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["mujoco"] == "3.4.0"
    sequences = report["traces"][0]["sequences"]
    assert len(sequences) == 18 and all(s["ok"] for s in sequences)
    proc = subprocess.run([sys.executable, str(script), "--traces", str(tmp_path / "none.npz")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().endswith("no such trace file")
    assert "Traceback" not in proc.stderr
