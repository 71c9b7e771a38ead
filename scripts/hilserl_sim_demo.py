"""Sim-to-sim transfer: does HIL-SERL fine-tuning win back what a perturbed world takes away?

    python scripts/hilserl_sim_demo.py [--work hilserl_demo] [--episodes 150] [--json]

The user's story, end to end on the twin, through the toolkit's own code paths:

1. **A starting policy that works in the nominal twin**: behaviour cloning (encoder and
   actor of the DrQ-v2 architecture) on scripted demonstrations recorded there.
2. **The perturbed twin** stands in for the real arm (``configs/perturbed_twin.yaml``:
   100 ms control period, wrist camera moved by millimetres and degrees, ragged
   segmentation edges, noisy disparity): the policy's success drops.
3. **HIL-SERL** in the perturbed twin (``so101 hilserl train``'s ``train``): 20 scripted
   demos recorded there in the demo store, the scripted expert taking over when the
   policy stalls, the success reward.
4. **Autonomous success** (no noise, no interventions) on 20 held-out seeds before and
   after, and the curve (success and intervention rate per 10 episodes) as PNG + JSON.

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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from so101_sim2real.control.description import describe  # noqa: E402
from so101_sim2real.control.infer import InferOptions, run_infer  # noqa: E402
from so101_sim2real.hilserl.bc import behaviour_clone  # noqa: E402
from so101_sim2real.hilserl.curves import episode_rows  # noqa: E402
from so101_sim2real.hilserl.learner import LearnerConfig  # noqa: E402
from so101_sim2real.hilserl.replay import ReplayBuffer  # noqa: E402
from so101_sim2real.hilserl.rewards import SuccessReward  # noqa: E402
from so101_sim2real.hilserl.run import RunOptions, load_demos, train  # noqa: E402
from so101_sim2real.hilserl.trainer import TrainConfig  # noqa: E402
from so101_sim2real.policy.checkpoint import load_checkpoint, save_native  # noqa: E402
from so101_sim2real.policy.runtime import build_agent  # noqa: E402
from so101_sim2real.sim.perturb import Perturbation, load_perturbation  # noqa: E402

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
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(
        learner=LearnerConfig(batch_size=64, actor_lr=2e-4, bc_weight=1.0, std=0.1),
        warmup_steps=500, utd=1.0, min_utd=0.25, publish_every=5, capacity=50_000))


QUICK = Plan(bc_demos=3, bc_updates=20, bc_batch=16, demos=2, episodes=3, eval_episodes=2, max_steps=40,
             train=TrainConfig(learner=LearnerConfig(batch_size=16, actor_lr=1e-4, bc_weight=1.0),
                               warmup_steps=20, capacity=5_000))


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
    from fixtures import robobase_agent_state, robobase_cfg, write_robobase_snapshot

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


def plot(result: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result["curve"]
    x = np.arange(1, len(points) + 1) * 10
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=120)
    ax.plot(x, [p["success_rate"] for p in points], "o-", color="C0", lw=2, label="training success, helped or not")
    ax.plot(x, [p["unaided_success_rate"] for p in points], "^-", color="C1", lw=2,
            label="training success with no takeover (exploring)")
    ax.plot(x, [p["intervention_rate"] for p in points], "s-", color="C7", lw=2,
            label="share of steps under intervention")
    ax.axhline(result["before"]["perturbed"]["success_rate"], color="C3", ls="--",
               label="autonomous success before (20 held-out seeds)")
    ax.axhline(result["after"]["perturbed"]["success_rate"], color="C2", ls="--",
               label="autonomous success after (20 held-out seeds)")
    ax.set(xlabel="training episode (rates per 10 episodes)", ylabel="rate", ylim=(-0.02, 1.02),
           title="HIL-SERL in the perturbed twin (scripted helper, 20 demos)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("hilserl_demo"), help="folder for every stage's output")
    parser.add_argument("--perturb", type=Path, default=ROOT / "configs" / "perturbed_twin.yaml")
    parser.add_argument("--episodes", type=int, help="HIL-SERL training episodes (default 150)")
    parser.add_argument("--quick", action="store_true", help="a minutes-long smoke run of every stage")
    parser.add_argument("--fresh", action="store_true", help="delete --work first")
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
    run_dir = work / "run"
    log(f"4/5 HIL-SERL: {plan.episodes} episodes in the perturbed twin -> {run_dir}")

    def fine_tune() -> dict:
        done = len(episode_rows(run_dir)) if (run_dir / "run.yaml").is_file() else 0
        todo = plan.episodes - done
        if todo > 0:
            options = RunOptions(describe(ckpt=start, perturb=perturbation), intervene="scripted", reward="success",
                                 demos=(str(work / "demos_perturbed"),))

            def progress(record) -> None:
                log(f"  episode {record.episode}: {'success' if record.success else 'fail'} "
                    f"{record.steps} steps; updates {record.updates}, utd {record.utd:.2f}")

            report = train(run_dir, todo, None if done else options, plan.train, resume=bool(done),
                           on_episode=progress, max_steps=plan.max_steps)
            if report.interrupted:
                sys.exit("interrupted during fine-tuning; run again to resume it")
            return {"utd": report.utd, "counters": report.counters}
        return {}

    trained = stage("hilserl", fine_tune, work / "after_perturbed.json")  # done once it has been evaluated
    log("5/5 autonomous success after fine-tuning")
    after = {"perturbed": stage("eval_after", lambda: evaluate(run_dir / "policy", perturbation, plan,
                                                               work / "after_perturbed.json"),
                                work / "after_perturbed.json")}
    counters = json.loads((run_dir / "counters.json").read_text())
    result = {
        "perturbation": perturbation.describe(), "plan": dataclasses.asdict(plan), "before": before, "after": after,
        "gain_points": round(100 * (after["perturbed"]["success_rate"] - before["perturbed"]["success_rate"]), 1),
        "counters": counters, "utd": counters["updates"] / max(1, counters["env_steps"]), **trained,
        "curve": curve(run_dir), "seconds": timings, "total_minutes": round(sum(timings.values()) / 60, 1),
    }
    (work / "result.json").write_text(json.dumps(result, indent=2))
    plot(result, work / "curve.png")
    b, a = before["perturbed"], after["perturbed"]
    print(f"\nautonomous success, {plan.eval_episodes} held-out seeds")
    print(f"  nominal twin, start policy:   {before['nominal']['success_rate']:.0%}")
    print(f"  perturbed twin, before:       {b['success_rate']:.0%}")
    print(f"  perturbed twin, after:        {a['success_rate']:.0%}   ({result['gain_points']:+.0f} points)")
    print(f"HIL-SERL: {counters['episodes']} episodes, {counters['env_steps']} env steps, {counters['updates']} "
          f"updates (UTD {result['utd']:.2f})")
    print(f"stage seconds: {timings}")
    print(f"curve: {work / 'curve.png'}, numbers: {work / 'result.json'}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
