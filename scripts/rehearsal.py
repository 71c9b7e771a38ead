"""The rehearsed day: the whole real-arm session through the command line, on the stand-in world.

    python scripts/rehearsal.py [--work rehearsal] [--quick] [--policy P --seg-ckpt S --depth-model D] [--json]

Every step is a `so101` command run as a person types it (a subprocess, its output in
WORK/logs/), on the stand-in world (configs/standin.yaml) as the arm:

1. **calibrate**: the joints, the camera, the rig and the mount, on the emulated arm with
   the stand-in's camera (`calibrate ... --standin`).
2. **before**: the starting policy's autonomous success on 20 held-out seeds.
3. **compare**: episodes recorded, `compare-sim` on each and `compare-sim sensitivity
   --report`; the fix that needs no retraining (the measured rig: lens and joint zeros) is
   applied and success measured again.
4. **reward**: episodes labelled by a "person" (the stand-in's task rule, a limited number
   of them), `reward train`, `reward eval` on held-out episodes.
5. **hilserl**: `hilserl train --intervene leader` with the emulated leader and a watching
   person (configs/rehearsal_person.yaml: late, imperfect, limited), `--reward classifier`,
   the learner's defaults.
6. **after**: `hilserl status`, `hilserl plot`, and `infer --ckpt RUN/policy` on the same 20
   held-out seeds.
7. **report**: WORK/report.json and WORK/report.html.

What the day starts from is the user's, not the day's: a sim policy (the transfer
benchmark's BC start policy, `scripts/hilserl_sim_demo.py --start-only`) and their
perception networks (here the stand-in's: `so101 seg train` and `so101 depth fit`). Without
--policy / --seg-ckpt / --depth-model they are made first, in WORK/assets, timed apart.

Each stage is kept under a key of everything that made it (its code and commands, the
toolkit's own code, the world, the inputs' files and the stages before it): an interrupted
rehearsal resumes at the first stage whose key changed (delete WORK/stages/NAME.json to redo
one). --quick runs the same stages in minutes
(two episodes where the day has twenty) to check the pipeline, not the numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = 5000  # the held-out seeds, as every benchmark here uses them
RECORD_SEEDS, REWARD_SEEDS, REWARD_HELD_SEEDS = 6000, 7000, 7500


@dataclass(frozen=True)
class Plan:
    """How much of everything the day does."""

    eval_episodes: int = 20
    max_steps: int = 100
    compare_episodes: int = 2
    sensitivity_episodes: int = 2
    sensitivity_gaps: int | None = None  # rows for the first this many gaps compare-sim named (None: all it named)
    demo_steps: int = 100  # a person's demonstrations: long enough to lift the cube
    labelled: int = 6  # a person labels this many episodes of the policy and as many of their own demos
    held_labelled: int = 3
    hilserl_episodes: int = 60
    seg_frames: int = 400
    seg_epochs: int = 12
    depth_frames: int = 300
    depth_epochs: int = 10
    bc_quick: bool = False


QUICK = Plan(eval_episodes=2, max_steps=12, compare_episodes=1, sensitivity_episodes=1, sensitivity_gaps=1,
             demo_steps=90, labelled=1, held_labelled=1,
             hilserl_episodes=2, seg_frames=8, seg_epochs=1, depth_frames=8, depth_epochs=1, bc_quick=True)


@dataclass
class StageRecord:
    """A stage done: its key, how long it took when it ran, what it said."""

    name: str
    key: str
    seconds: float
    outputs: dict = field(default_factory=dict)


class Day:
    """The rehearsal's folder: its stages' records, logs and outputs."""

    def __init__(self, work: Path, world: Path, plan: Plan):
        self.work, self.world, self.plan = work, world, plan
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "HF_LEROBOT_CALIBRATION": str(work / "calibration")}
        self.records: dict[str, StageRecord] = {}
        toolkit = Path(importlib.util.find_spec("so101_sim2real").origin).parent  # type: ignore[union-attr,arg-type]
        constants = [HELD_OUT, RECORD_SEEDS, REWARD_SEEDS, REWARD_HELD_SEEDS]
        self._chain = _digest([json.dumps(asdict(plan), sort_keys=True), json.dumps(constants), _file_digest(world),
                               _file_digest(toolkit, "*.py")])
        entry = shutil.which("so101")  # the command a person types; the module where it is not on PATH
        self._command = [entry] if entry else [sys.executable, "-m", "so101_sim2real"]

    def stage(self, name: str, builder, *args, inputs: tuple[Path, ...] = ()) -> StageRecord:  # noqa: ANN001
        """``builder(day, *args)(so101)`` -> its outputs (a dict), unless a record with the same key is
        there. The key is the stage's code and the helpers' (its commands), the inputs' files and the
        stages before it, so a changed earlier stage redoes every later one."""
        code = [inspect.getsource(f) for f in (builder, *HELPERS)]
        key = _digest([self._chain, name, *code, *(str(a) for a in args), *(_file_digest(p) for p in inputs)])
        path = self.work / "stages" / f"{name}.json"
        if path.is_file():
            record = StageRecord(**json.loads(path.read_text()))
            if record.key == key:
                say(f"{name}: kept from before ({record.seconds:.0f} s when it ran)")
                self.records[name], self._chain = record, key
                return record
        say(f"{name} ...")
        started = time.perf_counter()
        outputs = builder(self, *args)(lambda *argv: self.so101(name, *argv))
        record = StageRecord(name, key, round(time.perf_counter() - started, 1), outputs)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record), indent=1))
        tmp.replace(path)  # a kill mid-write leaves the old record or the new one
        say(f"{name}: {record.seconds:.0f} s")
        self.records[name], self._chain = record, key
        return record

    def so101(self, stage: str, *argv: str | Path | int) -> str:
        """One command as a person types it; its output in the stage's log; a failure stops the day."""
        args = [str(a) for a in argv]
        log = self.logs / f"{stage}.log"
        with log.open("a") as out:
            out.write(f"$ so101 {' '.join(args)}\n")
            out.flush()
            done = subprocess.run([*self._command, *args], cwd=self.work, env=self.env, stdout=subprocess.PIPE,
                                  stderr=out, text=True)
            out.write(done.stdout)
        if done.returncode != 0:
            sys.exit(f"so101 {' '.join(args[:3])} ... failed ({done.returncode}); see {log}")
        return done.stdout


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _file_digest(path: Path, pattern: str = "*") -> str:
    """A file's bytes, or a folder's files' (matching ``pattern``) names and bytes."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob(pattern) if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def fresh(day: Day, *names: str) -> None:
    """A stage redone records into clean folders, as a person picks a new one."""
    for name in names:
        shutil.rmtree(day.work / name, ignore_errors=True)


def last_json(stdout: str) -> dict:
    """The JSON line a command ends with (``--json``); one line and a stop where there is none."""
    try:
        return json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        sys.exit(f"a command ended without its JSON line: {stdout.strip()[-200:]!r}; see the stage's log")


# ---------------------------------------------------------------------------------------------- the assets


def assets(day: Day, args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """(policy, seg, depth): given, or made once in WORK/assets (the user's before the day; not timed in it).
    --quick makes random ones of the real layouts (`so101 models example`, an example snapshot): its day
    checks the pipeline, not what the networks see."""
    work, plan, folder = day.work, day.plan, day.work / "assets"
    given_assets = (("--policy", args.policy), ("--seg-ckpt", args.seg_ckpt), ("--depth-model", args.depth_model))
    for option, given in given_assets:
        if given and not Path(given).exists():
            sys.exit(f"{option} {given}: no such file or folder (leave it out to make one in {folder})")
    if plan.bc_quick and not (args.policy or args.seg_ckpt or args.depth_model):
        return _example_assets(day, folder)
    policy = Path(args.policy).resolve() if args.policy else folder / "sim" / "start_policy"
    seg = Path(args.seg_ckpt).resolve() if args.seg_ckpt else folder / "seg.ckpt"
    depth = Path(args.depth_model).resolve() if args.depth_model else folder / "depth"
    if not policy.is_dir():
        say("the sim policy: BC on scripted demos in the nominal twin (scripts/hilserl_sim_demo.py --start-only)")
        cmd = [sys.executable, str(ROOT / "scripts" / "hilserl_sim_demo.py"), "--work", str(folder / "sim"),
               "--start-only", *(["--quick"] if plan.bc_quick else [])]
        if subprocess.run(cmd, cwd=work, env=day.env, stdout=subprocess.DEVNULL).returncode != 0:
            sys.exit("the sim policy could not be made (scripts/hilserl_sim_demo.py --start-only failed; its "
                     "messages are above)")
    if not seg.is_file():
        day.so101("assets", "seg", "train", "--standin", day.world, "--out", seg, "--frames", plan.seg_frames,
                  "--epochs", plan.seg_epochs, "--target-miou", "0.81")
    if not depth.is_dir():
        day.so101("assets", "depth", "fit", "--standin", day.world, "--out", depth, "--frames", plan.depth_frames,
                  "--epochs", plan.depth_epochs)
    return policy, seg, depth


def _example_assets(day: Day, folder: Path) -> tuple[Path, Path, Path]:
    """Random weights in the user's layouts: a RoboBase snapshot and the example perception networks."""
    policy, models = folder / "example.pt", folder / "example-models"
    if not policy.is_file():
        cmd = [sys.executable, str(ROOT / "scripts" / "make_example_snapshot.py"), str(policy)]
        if subprocess.run(cmd, cwd=day.work, stdout=subprocess.DEVNULL).returncode != 0:
            sys.exit("scripts/make_example_snapshot.py failed; its messages are above")
    if not (models / "depth").is_dir():
        day.so101("assets", "models", "example", "--out", models)
    return policy, models / "segmentation.ckpt", models / "depth"


# ---------------------------------------------------------------------------------------------- the stages


def calibrate(day: Day, seg: Path):  # noqa: ANN201
    def run(so101) -> dict:  # noqa: ANN001
        w = day.world
        fresh(day, "calibration")  # a stage redone calibrates anew (joints refuses to overwrite an arm's file)
        so101("calibrate", "joints", "--port", "emulator", "--id", "rehearsal_arm")
        camera = last_line(so101("calibrate", "camera", "--camera", "twin", "--standin", w, "--out", "camera.yaml"))
        rig = so101("calibrate", "rig", "--port", "emulator", "--standin", w, "--camera-model", "camera.yaml",
                    "--out", "rig.yaml")
        align = so101("calibrate", "align", "--port", "emulator", "--standin", w, "--rig", "rig.yaml", "--seg-ckpt",
                      seg, "--out", "aligned.yaml")
        return {"camera": camera, "rig": last_line(rig), "align": last_line(align), "rig_file": "aligned.yaml"}
    return run


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else ""


def success_on_held_out(day: Day, so101, ckpt: Path | str, perception: list, rig: bool) -> dict:  # noqa: ANN001
    """The policy's autonomous success on the held-out seeds, no interventions."""
    plan = day.plan
    fixes = ["--rig", "aligned.yaml"] if rig else []
    out = so101("infer", "--ckpt", ckpt, "--standin", day.world, *perception, *fixes, "-n", plan.eval_episodes,
                "--seed", HELD_OUT, "--max-steps", plan.max_steps, "--json")
    result = last_json(out)
    return {"successes": round(result["success_rate"] * plan.eval_episodes), "episodes": plan.eval_episodes,
            "success_rate": result["success_rate"], "mean_length": result.get("mean_length")}


def compare(day: Day, policy: Path, perception: list):  # noqa: ANN201
    def run(so101) -> dict:  # noqa: ANN001
        plan = day.plan
        fresh(day, "rec", *(f"compare{i}" for i in range(plan.compare_episodes)))
        so101("infer", "--ckpt", policy, "--standin", day.world, *perception, "-n", plan.compare_episodes, "--seed",
              RECORD_SEEDS, "--max-steps", plan.max_steps, "--record", "rec")
        named = []
        for i in range(plan.compare_episodes):
            report = last_json(so101("compare-sim", "rec", "--episode", i, "--out", f"compare{i}", "--json"))
            named.append([{"name": f["name"], "gaps": f.get("gaps") or []} for f in report["findings"]])
        world_gaps = set(yaml.safe_load(day.world.read_text()).get("gaps") or {})
        gaps = [g for g in dict.fromkeys(g for f in named[0] for g in f["gaps"]) if g in world_gaps]
        gaps = gaps[:plan.sensitivity_gaps]
        only = ["--gaps", ",".join(gaps)] if gaps else []  # the rows of what it named (each row: episodes)
        sensitivity = last_json(so101("compare-sim", "sensitivity", "--ckpt", policy, "--standin", day.world,
                                      *perception[2:], "--report", "compare0/report.json", *only, "--episodes",
                                      plan.sensitivity_episodes, "--seed", HELD_OUT, "--max-steps", plan.max_steps,
                                      "--json"))
        fixed = success_on_held_out(day, so101, policy, perception, rig=True)
        return {"findings": named, "findings_by_cost": sensitivity.get("findings_by_cost", []),
                "sensitivity_rows": sensitivity["rows"], "after_fixes": fixed}
    return run


def reward(day: Day, policy: Path, perception: list):  # noqa: ANN201
    def run(so101) -> dict:  # noqa: ANN001
        plan, w, rig = day.plan, day.world, ["--rig", "aligned.yaml"]
        sets = {"labelled": (plan.labelled, REWARD_SEEDS), "held": (plan.held_labelled, REWARD_HELD_SEEDS)}
        for name, (count, seed) in sets.items():
            # the policy's own episodes (mostly failures) and a person's demonstrations (the expert's successes)
            for who, ckpt in (("policy", policy), ("demo", "scripted")):
                folder = f"{name}_{who}"
                fresh(day, folder)
                steps = plan.demo_steps if who == "demo" else plan.max_steps
                so101("infer", "--ckpt", ckpt, "--standin", w, *perception, *rig, "-n", count, "--seed",
                      seed + (100 if who == "demo" else 0), "--max-steps", steps, "--record", folder,
                      "--no-record-rgb")
                so101("reward", "label", folder, "--twin")  # the task's rule plays the person who labels
        trained = last_json(so101("reward", "train", "labelled_policy", "labelled_demo", "--out", "classifier",
                                  "--force", "--json"))
        scored = last_json(so101("reward", "eval", "classifier", "held_policy", "held_demo", "--json"))
        return {"train": _metrics(trained), "held_out": _metrics(scored),
                "episodes_labelled": 2 * (plan.labelled + plan.held_labelled)}
    return run


def _metrics(report: dict) -> dict:
    """The scores of a ``reward train`` or ``reward eval`` report ({} where it held nothing out to score)."""
    keep = ("precision", "recall", "f1", "balanced_accuracy", "roc_auc", "threshold", "confusion")
    found = report.get("metrics", report) or {}
    return {k: found[k] for k in keep if k in found}


def hilserl(day: Day, policy: Path, perception: list):  # noqa: ANN201
    def run(so101) -> dict:  # noqa: ANN001
        plan = day.plan
        person = ROOT / "configs" / "rehearsal_person.yaml"
        fresh(day, "run")  # a stage redone starts its run afresh
        so101("hilserl", "train", "--ckpt", policy, "--out", "run", "--standin", day.world, *perception, "--rig",
              "aligned.yaml", "--reward", "classifier", "--classifier", "classifier", "--intervene", "leader",
              "--leader-port", "emulator", "--leader-calibration", "twin", "--hand", person, "--demos", "labelled_demo",
              "--episodes", plan.hilserl_episodes, "--max-steps", plan.max_steps)
        status = last_json(so101("hilserl", "status", "run", "--json"))
        so101("hilserl", "plot", "run", "--out", "curve.png")
        return {"status": {k: status[k] for k in ("counters", "utd", "success_rate_last_20",
                                                  "intervention_rate_last_20", "takeovers", "classifier")},
                "curve": "curve.png", "per_10": per_ten(day.work / "run" / "metrics.jsonl")}
    return run


def per_ten(metrics: Path) -> list[dict]:
    """Success, the takeover share of steps and the classifier's false successes, per 10 episodes."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    out = []
    for first in range(0, len(rows), 10):
        block = rows[first:first + 10]
        steps = sum(r["steps"] for r in block)
        interventions = block[-1]["interventions"] - (rows[first - 1]["interventions"] if first else 0)
        out.append({"episodes": f"{first + 1}-{first + len(block)}",
                    "success": sum(bool(r["success"]) for r in block) / len(block),
                    "task_success": sum(bool(r.get("task_success")) for r in block) / len(block),
                    "takeover_share": interventions / max(1, steps),
                    "false_successes": sum(bool(r["success"]) and r.get("task_success") is False for r in block)})
    return out


def before(day: Day, policy: Path, perception: list):  # noqa: ANN201
    def run(so101) -> dict:  # noqa: ANN001
        return success_on_held_out(day, so101, policy, perception, rig=False)
    return run


def after(day: Day, perception: list):  # noqa: ANN201
    def run(so101) -> dict:  # noqa: ANN001
        return success_on_held_out(day, so101, "run/policy", perception, rig=True)
    return run


HELPERS = (success_on_held_out, fresh, last_json, last_line, per_ten, _metrics)


# ---------------------------------------------------------------------------------------------- the report


def report(day: Day, assets_s: float) -> dict:
    r = {name: asdict(rec) for name, rec in day.records.items()}
    day_s = sum(rec.seconds for rec in day.records.values())
    hil = day.records["hilserl"].outputs
    last = [row for row in hil["per_10"]][-2:]
    result = {"plan": asdict(day.plan), "world": str(day.world), "stages": r, "day_seconds": day_s,
              "assets_seconds": assets_s, "before": day.records["before"].outputs,
              "after_fixes": day.records["compare"].outputs["after_fixes"], "after": day.records["after"].outputs,
              "classifier": day.records["reward"].outputs, "session": hil["status"],
              "takeover_share_last_20": (sum(b["takeover_share"] for b in last) / len(last)) if last else None,
              "named_by_compare_sim": sorted({g for episode in day.records["compare"].outputs["findings"]
                                              for f in episode for g in f["gaps"]})}
    (day.work / "report.json").write_text(json.dumps(result, indent=1))
    (day.work / "report.html").write_text(page(result))
    return result


def page(r: dict) -> str:
    """One offline page: the before/after table, each stage's time and numbers, the curve, the takeover
    share and the classifier's false successes per 10 episodes, what compare-sim named."""
    e = html.escape
    rows = "".join(f"<tr><td>{e(name)}</td><td>{s['seconds']:.0f} s</td><td>{e(_said(name, s['outputs']))}</td></tr>"
                   for name, s in r["stages"].items())
    table = "".join(f"<tr><td>{e(label)}</td><td>{v['successes']}/{v['episodes']}</td></tr>"
                    for label, v in (("before", r["before"]), ("after the fixes (rig)", r["after_fixes"]),
                                     ("after HIL-SERL", r["after"])))
    blocks = "".join(f"<tr><td>{b['episodes']}</td><td>{b['success']:.0%}</td><td>{b['task_success']:.0%}</td>"
                     f"<td>{b['takeover_share']:.1%}</td><td>{b['false_successes']}</td></tr>"
                     for b in r["stages"]["hilserl"]["outputs"]["per_10"])
    judge = r["session"].get("classifier") or {}
    false_rate = judge["false_successes"] / judge["episodes"] if judge.get("episodes") else None
    held = r["classifier"]["held_out"]
    costs = "".join(f"<li>{e(json.dumps(f))}</li>" for f in r["stages"]["compare"]["outputs"]["findings_by_cost"])
    share = r["takeover_share_last_20"]
    return f"""<!doctype html><meta charset="utf-8"><title>The rehearsed day</title>
<style>body{{font-family:sans-serif;max-width:60em}} td,th{{padding:2px 10px;text-align:left}}</style>
<h1>The rehearsed day on {e(r['world'])}</h1>
<p>The day took {r['day_seconds'] / 60:.1f} min (the user's assets before it: {r['assets_seconds'] / 60:.1f} min).</p>
<h2>Autonomous success on {r['before']['episodes']} held-out seeds</h2><table>{table}</table>
<h2>Each stage</h2><table><tr><th>stage</th><th>time</th><th>what it found</th></tr>{rows}</table>
<h2>The session</h2><img src="curve.png" width="720">
<table><tr><th>episodes</th><th>success (the classifier's)</th><th>success (the task's rule)</th>
<th>takeover share of steps</th><th>false successes</th></tr>{blocks}</table>
<p>Takeover share of steps, last 20 episodes: {'-' if share is None else f'{share:.1%}'}.
The classifier during the session, against the task's rule: {e(json.dumps(judge))}
(false-success rate {'-' if false_rate is None else f'{false_rate:.1%}'}); on held-out labelled episodes:
{e(json.dumps(held))}.</p>
<h2>What compare-sim named</h2><p>{e(', '.join(r['named_by_compare_sim']) or 'nothing')}</p>
<p>Ranked by what each costs the policy (sensitivity rows):</p><ol>{costs}</ol>
"""


def _said(name: str, outputs: dict) -> str:
    """A stage's numbers in a line."""
    if name == "calibrate":
        return "; ".join(str(outputs[k]) for k in ("camera", "rig", "align"))
    if name in ("before", "after"):
        return f"{outputs['successes']}/{outputs['episodes']} autonomous successes"
    if name == "compare":
        fixed = outputs["after_fixes"]
        return f"{len(outputs['sensitivity_rows'])} sensitivity rows; with the rig: {fixed['successes']}/" \
               f"{fixed['episodes']}"
    if name == "reward":
        held = outputs["held_out"]
        return f"{outputs['episodes_labelled']} episodes labelled; held out: precision {held.get('precision')}, " \
               f"recall {held.get('recall')}"
    if name == "hilserl":
        st = outputs["status"]
        return f"{st['counters']['episodes']} episodes, {st['counters']['env_steps']} steps, " \
               f"{st['counters']['updates']} updates, {st['takeovers']} takeovers"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("rehearsal"))
    parser.add_argument("--world", type=Path, default=ROOT / "configs" / "standin.yaml")
    parser.add_argument("--policy", help="the sim policy (a 'so101 convert' folder with critics)")
    parser.add_argument("--seg-ckpt", help="the segmentation network (default: made by seg train)")
    parser.add_argument("--depth-model", help="the depth network (default: made by depth fit)")
    parser.add_argument("--quick", action="store_true", help="the same stages in minutes: the pipeline, not the "
                                                             "numbers")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    plan = QUICK if args.quick else Plan()
    if not args.world.is_file():
        sys.exit(f"--world {args.world}: no such stand-in world (configs/standin.yaml is the default)")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    day = Day(work, args.world.resolve(), plan)
    started = time.perf_counter()
    policy, seg, depth = assets(day, args)
    assets_s = time.perf_counter() - started
    perception = ["--perception", "real", "--seg-ckpt", seg, "--depth-model", depth]
    inputs = (policy, seg, depth)
    day.stage("calibrate", calibrate, seg, inputs=inputs)
    day.stage("before", before, policy, perception, inputs=inputs)
    day.stage("compare", compare, policy, perception, inputs=inputs)
    day.stage("reward", reward, policy, perception, inputs=inputs)
    day.stage("hilserl", hilserl, policy, perception, inputs=inputs + (ROOT / "configs" / "rehearsal_person.yaml",))
    day.stage("after", after, perception, inputs=inputs)
    result = report(day, assets_s)
    if args.json:
        print(json.dumps(result))
        return
    print(f"the rehearsed day: {result['day_seconds'] / 60:.1f} min; success before {result['before']['successes']}/"
          f"{result['before']['episodes']}, after the fixes {result['after_fixes']['successes']}, after HIL-SERL "
          f"{result['after']['successes']}; report: {work / 'report.html'}")


if __name__ == "__main__":
    main()
