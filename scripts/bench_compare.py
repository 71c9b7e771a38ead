"""compare-sim on twin recordings with known mismatches: what it names, its numbers, its runtime.

    python scripts/bench_compare.py [--steps 40] [--json]

Each row is a recording made on the twin (the scripted expert, or a wandering pilot for
the axis check) with one mismatch injected the way it happens on a real rig: class ids
not remapped (+1), disparity stretched as a crop's min-max would, the camera moved
8 mm / 4 deg, the twin run at a 100 ms period, the controller's x and y swapped. A clean recording
must give no finding. The last row is the replay's runtime per 100 ticks (seg and
disparity rendered per tick, no video), measured on the clean recording.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


class _Wander:
    """x, y and z at three frequencies: every axis commanded on its own."""

    name, needs_pixels = "wander", False

    def reset(self, obs) -> None:  # noqa: ANN001
        self.t = 0

    def act(self, obs) -> np.ndarray:  # noqa: ANN001
        self.t += 1
        return np.array([np.sin(self.t / 3), np.sin(self.t / 5 + 1), 0.6 * np.sin(self.t / 7 + 2), 1.0], np.float32)


def _record(folder: Path, steps: int, perturbation=None, wander: bool = False, swap: bool = False) -> Path:  # noqa: ANN001
    from so101_sim2real.control.env import sim_env
    from so101_sim2real.control.pilots import ScriptedPilot
    from so101_sim2real.control.recording import Recorder
    from so101_sim2real.control.runner import Runner
    from so101_sim2real.spec import default_spec

    rig = sim_env(default_spec(), perturbation=perturbation)
    if swap:
        command = rig.controller.command
        rig.controller.command = lambda action, q: command(np.asarray(action)[[1, 0, 2, 3]], q)
    try:
        rec = Recorder(folder, rig.spec, "sim", "bench", rig.period_s, with_rgb=False)
        Runner(rig, _Wander() if wander else ScriptedPilot(rig.twin), recorder=rec, max_steps=steps).run([0])
    finally:
        rig.close()
    return folder


def _edit(folder: Path, key: str, fn) -> Path:  # noqa: ANN001
    path = folder / "episode_0000.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[key] = fn(arrays[key])
    np.savez_compressed(path, **arrays)
    return folder


def _stretch(obs: np.ndarray) -> np.ndarray:
    out = obs.copy()
    out[:, 1] = np.clip((out[:, 1].astype(float) - 30) * 1.6, 0, 255).astype(np.uint8)
    return out


def _cases(root: Path, steps: int) -> dict[str, Path]:
    from so101_sim2real.sim.perturb import Perturbation

    clean = _record(root / "clean", steps)

    def copy(name: str) -> Path:
        return Path(shutil.copytree(clean, root / name))

    return {
        "clean": clean,
        "ids not remapped (+1)": _edit(copy("ids"), "obs", lambda o: np.concatenate([o[:, :1] + 1, o[:, 1:]], axis=1)),
        "disparity crop-normalised": _edit(copy("disp"), "obs", _stretch),
        "camera 8 mm / 4 deg": _record(root / "camera", steps, Perturbation(camera_shift_mm=(8.0, 0.0, 0.0),
                                                                             camera_tilt_deg=(4.0, 0.0, 0.0))),
        "100 ms period": _record(root / "period", steps, Perturbation(period_s=0.1)),
        "x and y swapped": _record(root / "swap", steps, wander=True, swap=True),
    }


def _row(name: str, folder: Path) -> dict:
    from so101_sim2real.compare.replay import replay
    from so101_sim2real.control.recording import Recording

    t0 = time.perf_counter()
    report = replay(Recording(folder))
    seconds = time.perf_counter() - t0
    iou = {k: v for k, v in report.segmentation.iou.items() if v is not None}
    return {"case": name, "ticks": report.ticks, "seconds": seconds,
            "findings": [f.name for f in report.findings], "evidence": [f.evidence for f in report.findings],
            "min_iou": min(iou.values()) if iou else None, "agreement": report.segmentation.agreement,
            "spearman": report.disparity.spearman, "rel_error": report.disparity.rel_error,
            "p50_ms": report.timing.p50_s and report.timing.p50_s * 1e3,
            "shift_px": max((s.magnitude for s in report.finger_shifts), default=None),
            "axis_r2": report.motion and [report.motion.r2_identity, report.motion.r2_best]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="ticks per recording")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [_row(name, folder) for name, folder in _cases(Path(tmp), args.steps).items()]
    clean = rows[0]
    per_100 = 100.0 * clean["seconds"] / clean["ticks"]
    if args.json:
        print(json.dumps({"rows": rows, "seconds_per_100_ticks": per_100}, default=float))
        return

    def num(v, fmt: str = ".3f") -> str:  # noqa: ANN001
        return "-" if v is None else format(v, fmt)

    print(f"{'case':<28}{'ticks':>6}{'min IoU':>9}{'agree':>7}{'rho':>7}{'err':>7}{'p50 ms':>8}{'shift px':>9}"
          "  findings")
    for r in rows:
        print(f"{r['case']:<28}{r['ticks']:>6}{num(r['min_iou']):>9}{num(r['agreement']):>7}{num(r['spearman']):>7}"
              f"{num(r['rel_error']):>7}{num(r['p50_ms'], '.0f'):>8}{num(r['shift_px'], '.1f'):>9}  "
              f"{'; '.join(r['findings']) or 'none'}")
    print(f"replay: {per_100:.1f} s per 100 ticks (clean recording, {clean['ticks']} ticks, no video)")


if __name__ == "__main__":
    main()
