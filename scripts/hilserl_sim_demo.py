"""Sim-to-sim transfer: does HIL-SERL fine-tuning win back what a perturbed world takes away?

    python scripts/hilserl_sim_demo.py [--work hilserl_demo] [--episodes 150] [--learners full frozen bc] [--json]

The user's story, end to end on the twin, through the toolkit's own code paths:

1. **A starting policy that works in the nominal twin**: behaviour cloning (encoder and
   actor of the DrQ-v2 architecture) on scripted demonstrations recorded there.
2. **The perturbed twin** stands in for the real arm (``configs/perturbed_twin.yaml``:
   100 ms control period, wrist camera moved by millimetres and degrees, ragged
   segmentation edges, noisy disparity): the policy's success drops.
3. **HIL-SERL** in the perturbed twin (``so101 hilserl train``'s ``train``) with the
   toolkit's defaults, no settings of this script's own (the pace is chosen at start for
   the machine): 20 scripted demos recorded there in the demo store, the scripted expert
   taking over when the policy stalls, the success reward. Three learners from the same
   start: the full DrQ-v2 update (``full``), the frozen encoder read from the feature
   cache (``frozen``), and the skeptic's control, behaviour cloning alone on the same
   demos and interventions at the full run's batch size and update budget (``bc``).
4. **Autonomous success** (no noise, no interventions) on 20 held-out seeds before and
   after each, the wall time of each fine-tuning, and the curves (success and
   intervention rate per 10 episodes) as PNG + JSON.

Every stage is cached in ``--work``, so an interrupted run picks up where it stopped;
``--fresh`` starts over. ``--quick`` is a minutes-long smoke run of the same stages.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from so101_sim2real.control.description import describe
from so101_sim2real.control.infer import InferOptions, run_infer
from so101_sim2real.hilserl.bc import behaviour_clone
from so101_sim2real.hilserl.curves import episode_rows
from so101_sim2real.hilserl.learner import LearnerConfig
from so101_sim2real.hilserl.replay import ReplayBuffer
from so101_sim2real.hilserl.rewards import SuccessReward
from so101_sim2real.hilserl.run import RunOptions, load_demos, train
from so101_sim2real.hilserl.run_folder import RunFolder
from so101_sim2real.hilserl.trainer import TrainConfig
from so101_sim2real.machine import describe_cpu
from so101_sim2real.policy.checkpoint import load_checkpoint, save_native
from so101_sim2real.policy.runtime import build_agent
from so101_sim2real.sim.perturb import Perturbation, load_perturbation

ROOT = Path(__file__).resolve().parents[1]
NOMINAL_DEMO_SEEDS, PERTURBED_DEMO_SEEDS, HELD_OUT_SEEDS = 1000, 2000, 5000


@dataclasses.dataclass(frozen=True)
class Plan:
    bc_demos: int = 60
    bc_updates: int = 1500
    bc_batch: int = 64
    bc_lr: float = 3e-4
    demos: int = 20
    episodes: int = 150
    eval_episodes: int = 20
    max_steps: int = 100
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)  # the defaults: nothing tuned here


# a smoke run: batch 16 so that 3 short episodes hold a batch
QUICK = Plan(bc_demos=3, bc_updates=20, bc_batch=16, demos=2, episodes=3, eval_episodes=2, max_steps=40,
             train=TrainConfig(learner=LearnerConfig(batch_size=16), warmup_steps=20, capacity=5_000))
LEARNERS = ("full", "frozen", "bc")


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def record_demos(folder: Path, count: int, seed: int, perturbation: Perturbation | None, max_steps: int) -> None:
    if (folder / "recording.json").is_file():
        return
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    summary = run_infer(InferOptions(describe(ckpt="scripted", perturb=perturbation), episodes=count, seed=seed,
                                     record=tmp, record_rgb=False, max_steps=max_steps))
    if summary.interrupted:
        sys.exit(f"interrupted while recording {folder.name}; run again to redo it")
    tmp.rename(folder)
    log(f"{folder.name}: {count} scripted demos, success {summary.to_dict()['success_rate']:.0%}")


def make_start_policy(work: Path, plan: Plan) -> Path:
    """Behaviour cloning on the nominal twin's scripted demos -> a native checkpoint with critics."""
    out = work / "start_policy"
    if out.is_dir():
        return out
    from so101_sim2real.policy.example_snapshot import robobase_agent_state, robobase_cfg, write_robobase_snapshot

    blank = work / "blank_snapshot.pt"
    write_robobase_snapshot(blank, robobase_agent_state(seed=0), robobase_cfg())
    ckpt = load_checkpoint(blank)
    spec, obs = ckpt.spec, ckpt.spec.observation
    buffer = ReplayBuffer(20_000, (len(obs.channels), *obs.image_size), spec.state.size, spec.action.dim,
                          obs.frame_stack, 3, 0.99, seed=0)
    load_demos((str(work / "demos_nominal"),), buffer, SuccessReward(), spec)
    agent = build_agent(ckpt)
    started = time.perf_counter()

    def progress(i: int, loss: float) -> None:
        if i % max(1, plan.bc_updates // 10) == 0:
            log(f"BC update {i}/{plan.bc_updates}: loss {loss:.4f} ({time.perf_counter() - started:.0f} s)")

    behaviour_clone(agent, buffer, plan.bc_updates, plan.bc_batch, plan.bc_lr, on_update=progress)
    weights = {k: v.detach().clone() for k, v in agent.state_dict().items()}
    save_native(dataclasses.replace(ckpt, weights=weights), out)
    blank.unlink()
    return out


def evaluate(ckpt: Path, perturbation: Perturbation | None, plan: Plan, cache: Path) -> dict:
    """Autonomous success: the policy's mean action, no interventions, held-out seeds."""
    if cache.is_file():
        return json.loads(cache.read_text())
    started = time.perf_counter()
    summary = run_infer(InferOptions(describe(ckpt=ckpt, perturb=perturbation), episodes=plan.eval_episodes,
                                     seed=HELD_OUT_SEEDS, max_steps=plan.max_steps))
    if summary.interrupted:
        sys.exit(f"interrupted while evaluating {ckpt}")
    episodes = summary.episodes
    result = {"success_rate": summary.to_dict()["success_rate"], "successes": sum(bool(e.success) for e in episodes),
              "episodes": len(episodes), "mean_length": float(np.mean([e.steps for e in episodes])),
              "seconds": time.perf_counter() - started}
    cache.write_text(json.dumps(result))
    return result


def curve(run_dir: Path, window: int = 10) -> list[dict]:
    """Success (helped or not, and with no takeover at all) and intervention rate per ``window``
    training episodes."""
    rows = [r for r in episode_rows(run_dir) if not r["interrupted"]]
    out = []
    for start in range(0, len(rows), window):
        chunk = rows[start:start + window]
        out.append({"episodes": f"{start + 1}-{start + len(chunk)}",
                    "success_rate": float(np.mean([r["success"] for r in chunk])),
                    "unaided_success_rate": float(np.mean([r["success"] and r["intervention_rate"] == 0
                                                           for r in chunk])),
                    "intervention_rate": float(np.mean([r["intervention_rate"] for r in chunk]))})
    return out


def learner_config(plan: Plan, learner: str, work: Path) -> TrainConfig:
    """The settings of one learner: the defaults (``full``), the frozen encoder (``frozen``), or
    behaviour cloning alone at the full run's batch and realised UTD (``bc``: the same budget)."""
    cfg = plan.train
    if learner == "frozen":
        return dataclasses.replace(cfg, learner=dataclasses.replace(cfg.learner, freeze_encoder=True))
    if learner == "bc":
        full = work / "run_full"
        if not (full / "counters.json").is_file():
            sys.exit("the bc learner takes the full run's budget: run the full learner first")
        run = RunFolder.open(full, check_world=False)
        utd = round(run.counters["updates"] / max(1, run.counters["env_steps"]), 3)
        batch = run.pace.batch_size if run.pace is not None else run.cfg.learner.batch_size
        return dataclasses.replace(cfg, learner=dataclasses.replace(cfg.learner, objective="bc", batch_size=batch),
                                   utd=utd, min_utd=utd)
    return cfg


def fine_tune(work: Path, plan: Plan, learner: str, start: Path, perturbation: Perturbation) -> dict:
    """One learner's HIL-SERL run (resumed where an earlier call stopped)."""
    run_dir = work / f"run_{learner}"
    done = len(episode_rows(run_dir)) if (run_dir / "run.yaml").is_file() else 0
    todo = plan.episodes - done
    if todo <= 0:
        return {}
    options = RunOptions(describe(ckpt=start, perturb=perturbation), intervene="scripted", reward="success",
                         demos=(str(work / "demos_perturbed"),))

    def progress(record) -> None:
        log(f"  {learner} episode {record.episode}: {'success' if record.success else 'fail'} "
            f"{record.steps} steps; updates {record.updates}, utd {record.utd:.2f}")

    report = train(run_dir, todo, None if done else options, learner_config(plan, learner, work), resume=bool(done),
                   on_episode=progress, max_steps=plan.max_steps, say=log,
                   on_start=lambda trainer: [log(f"  {line}") for line in trainer.start.notes if "pace" in line])
    if report.interrupted:
        sys.exit(f"interrupted during the {learner} fine-tuning; run again to resume it")
    return {"utd": report.utd, "counters": report.counters}


def plot(result: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=120)
    for i, (learner, row) in enumerate(result["learners"].items()):
        points = row["curve"]
        x = np.arange(1, len(points) + 1) * 10
        ax.plot(x, [p["unaided_success_rate"] for p in points], "o-", color=f"C{i}", lw=2,
                label=f"{learner}: training success with no takeover")
        ax.plot(x, [p["intervention_rate"] for p in points], ":", color=f"C{i}", lw=1.5,
                label=f"{learner}: share of steps under intervention")
        ax.axhline(row["after"]["success_rate"], color=f"C{i}", ls="--", lw=1,
                   label=f"{learner}: autonomous success after ({row['after']['successes']}/"
                         f"{row['after']['episodes']})")
    ax.axhline(result["before"]["perturbed"]["success_rate"], color="C7", ls="--",
               label="autonomous success before (20 held-out seeds)")
    ax.set(xlabel="training episode (rates per 10 episodes)", ylabel="rate", ylim=(-0.02, 1.02),
           title="HIL-SERL in the perturbed twin: full update, frozen encoder, BC alone")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=6.5, frameon=False)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("hilserl_demo"), help="folder for every stage's output")
    parser.add_argument("--perturb", type=Path, default=ROOT / "configs" / "perturbed_twin.yaml")
    parser.add_argument("--episodes", type=int, help="HIL-SERL training episodes (default 150)")
    parser.add_argument("--learners", nargs="+", choices=LEARNERS, default=list(LEARNERS),
                        help="which fine-tunings to run (bc needs full's budget: full runs first)")
    parser.add_argument("--quick", action="store_true", help="a minutes-long smoke run of every stage")
    parser.add_argument("--fresh", action="store_true", help="delete --work first")
    parser.add_argument("--start-only", action="store_true", help="stop once the starting policy is made (its "
                                                                  "folder, WORK/start_policy, printed last)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line at the end")
    args = parser.parse_args()
    plan = QUICK if args.quick else Plan()
    if args.episodes:
        plan = dataclasses.replace(plan, episodes=args.episodes)
    if args.fresh:
        shutil.rmtree(args.work, ignore_errors=True)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    perturbation = load_perturbation(args.perturb)
    timing_file = work / "timings.json"
    timings = json.loads(timing_file.read_text()) if timing_file.is_file() else {}

    def stage(name: str, fn, output: Path):
        """Run one stage; its seconds are kept from the run that did the work, not a cached rerun."""
        cached = output.exists()
        started = time.perf_counter()
        value = fn()
        if not cached or name not in timings:
            timings[name] = round(time.perf_counter() - started, 1)
            timing_file.write_text(json.dumps(timings, indent=2))
        return value

    log(f"1/5 starting policy: BC on {plan.bc_demos} scripted demos in the nominal twin")
    stage("nominal_demos", lambda: record_demos(work / "demos_nominal", plan.bc_demos, NOMINAL_DEMO_SEEDS, None,
                                                plan.max_steps), work / "demos_nominal")
    start = stage("bc", lambda: make_start_policy(work, plan), work / "start_policy")
    if args.start_only:
        print(start)
        return
    log("2/5 autonomous success before fine-tuning")
    before = {"nominal": stage("eval_nominal", lambda: evaluate(start, None, plan, work / "before_nominal.json"),
                               work / "before_nominal.json")}
    log(f"  nominal twin: {before['nominal']['successes']}/{before['nominal']['episodes']}")
    before["perturbed"] = stage("eval_before", lambda: evaluate(start, perturbation, plan,
                                                                work / "before_perturbed.json"),
                                work / "before_perturbed.json")
    log(f"  {perturbation.describe()}: {before['perturbed']['successes']}/{before['perturbed']['episodes']}")
    log(f"3/5 {plan.demos} scripted demos in the perturbed twin")
    stage("perturbed_demos", lambda: record_demos(work / "demos_perturbed", plan.demos, PERTURBED_DEMO_SEEDS,
                                                  perturbation, plan.max_steps), work / "demos_perturbed")
    learners = {}
    for learner in [name for name in LEARNERS if name in args.learners]:
        after_file = work / f"after_{learner}.json"
        log(f"4/5 HIL-SERL, {learner} learner: {plan.episodes} episodes in the perturbed twin")
        trained = stage(f"hilserl_{learner}", lambda learner=learner: fine_tune(work, plan, learner, start,
                                                                                perturbation), after_file)
        log(f"5/5 autonomous success after the {learner} fine-tuning")
        run_dir = work / f"run_{learner}"
        after = stage(f"eval_after_{learner}", lambda run_dir=run_dir, after_file=after_file: evaluate(
            run_dir / "policy", perturbation, plan, after_file), after_file)
        run = RunFolder.open(run_dir, check_world=False)
        counters = run.counters
        # what the start chose; all three set (bc): the batch it was given
        pace = run.pace.to_dict() if run.pace is not None else {"batch_size": run.cfg.learner.batch_size}
        learners[learner] = {
            "after": after, "counters": counters, "utd": counters["updates"] / max(1, counters["env_steps"]),
            "gain_points": round(100 * (after["success_rate"] - before["perturbed"]["success_rate"]), 1),
            "fine_tune_minutes": round(timings.get(f"hilserl_{learner}", 0.0) / 60, 1), "pace": pace,
            "curve": curve(run_dir), **trained}
    result = {"perturbation": perturbation.describe(), "cpu": describe_cpu(), "plan": dataclasses.asdict(plan),
              "before": before, "learners": learners, "seconds": timings,
              "total_minutes": round(sum(timings.values()) / 60, 1)}
    (work / "result.json").write_text(json.dumps(result, indent=2))
    plot(result, work / "curve.png")
    print(f"\nautonomous success, {plan.eval_episodes} held-out seeds ({describe_cpu()})")
    print(f"  nominal twin, start policy:   {before['nominal']['success_rate']:.0%}")
    print(f"  perturbed twin, before:       {before['perturbed']['success_rate']:.0%}")
    for learner, row in learners.items():
        pace = row["pace"] or {}
        print(f"  after {learner:<7} {row['after']['success_rate']:>5.0%} ({row['gain_points']:+.0f} points) in "
              f"{row['fine_tune_minutes']:.1f} min: {row['counters']['episodes']} episodes, "
              f"{row['counters']['env_steps']} env steps, {row['counters']['updates']} updates (UTD "
              f"{row['utd']:.2f}, batch {pace.get('batch_size', '-')})")
    print(f"stage seconds: {timings}")
    print(f"curves: {work / 'curve.png'}, numbers: {work / 'result.json'}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
