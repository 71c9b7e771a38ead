"""Leader-arm takeover against the scripted hand: detection latency and false triggers.

    python scripts/bench_takeover.py [--episodes 20] [--period 0.02] [--json]

The follower is the sim twin held to the control period in real time; the leader is an
emulated STS3215 arm on a pseudo-terminal, following the follower on its motors until the
scripted hand grabs it at a random step of every other episode. The policy is either the
scripted expert (smooth, purposeful motion) or random actions (the jerkiest a policy can
be: every tick a new direction at full step). Reported: ticks from the grab to the
detected takeover, takeovers that started while no hand was on the leader, per 1000
ticks, and how long after the hand let go control came back.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np


class _Pilot:
    """A stand-in policy (expert or random) with the leader intervener on top; logs every tick."""

    name, needs_pixels = "bench", False

    def __init__(self, kind: str, rig, intervener, hand, seed: int):
        from so101_sim2real.sim.scripted import ScriptedExpert

        self.kind, self.intervener, self.hand = kind, intervener, hand
        self.expert = ScriptedExpert(rig.twin)
        self.rng = np.random.default_rng(seed)
        self.episode, self.log = -1, []

    def reset(self, obs) -> None:
        self.episode += 1
        self.expert.reset()
        self.intervener.reset(self.episode)

    def act(self, obs) -> np.ndarray:
        if self.kind == "expert":
            action = self.expert.act(obs.proprio.tcp_pos, obs.ee_target).astype(np.float32)
        else:
            action = self.rng.uniform(-1, 1, 4).astype(np.float32)
        override = self.intervener.act(obs, action)
        self.log.append((self.episode, self.hand.holding, self.intervener.in_control))
        return action if override is None else override


def _run(kind: str, episodes: int, period: float, seed: int) -> dict:
    from so101_sim2real.control.env import sim_env
    from so101_sim2real.control.runner import Runner
    from so101_sim2real.leader.arm import open_leader
    from so101_sim2real.leader.hand import HandConfig
    from so101_sim2real.spec import default_spec

    spec = default_spec()
    spec = dataclasses.replace(spec, control=dataclasses.replace(spec.control, substeps=round(
        period / spec.control.physics_timestep_s)))
    rig = sim_env(spec, with_camera=False)
    session = open_leader("emulator", None, rig, spec, seed=seed)
    hand = session.intervener.leader.hand
    grabs = np.random.default_rng(seed).integers(10, 40, episodes)
    pilot = _Pilot(kind, rig, session.intervener, hand, seed)

    def next_episode(result) -> None:  # every other episode the hand helps, from a random step
        i = result.index + 1
        if i < episodes:
            hand.cfg = dataclasses.replace(hand.cfg, grab_at_step=int(grabs[i]), help_prob=1.0 if i % 2 == 0 else 0.0,
                                           prob_decay=1.0)

    hand.cfg = HandConfig(grab_at_step=int(grabs[0]), help_prob=1.0, prob_decay=1.0, max_steps=40)
    try:
        Runner(rig, pilot, realtime=True, max_steps=120, on_episode=next_episode).run(list(range(episodes)))
    finally:
        session.close()
        rig.close()
    return _measure(pilot.log, period)


def _measure(log: list[tuple[int, bool, bool]], period: float) -> dict:
    latencies, false_starts, handbacks, free_ticks = [], 0, [], 0
    for episode in sorted({e for e, _, _ in log}):
        rows = [(holding, control) for e, holding, control in log if e == episode]
        grab = next((i for i, (holding, _) in enumerate(rows) if holding), None)
        for i, (holding, control) in enumerate(rows):
            started = control and (i == 0 or not rows[i - 1][1])
            free_ticks += not holding and not control
            if started and not holding and (grab is None or i < grab):
                false_starts += 1
        if grab is not None:
            seen = next((i for i in range(grab, len(rows)) if rows[i][1]), None)
            if seen is not None:
                latencies.append(seen - grab)
            let_go = next((i for i in range(grab, len(rows)) if not rows[i][0]), None)
            back = None if let_go is None else next((i for i in range(let_go, len(rows)) if not rows[i][1]), None)
            if back is not None:
                handbacks.append((back - let_go) * period)
    return {"grabs": len(latencies), "latency_ticks_p50": float(np.median(latencies)) if latencies else None,
            "latency_ticks_max": max(latencies) if latencies else None,
            "latency_ms_p50": float(np.median(latencies)) * period * 1e3 if latencies else None,
            "false_triggers": false_starts, "free_ticks": free_ticks,
            "false_per_1000_ticks": 1000 * false_starts / max(free_ticks, 1),
            "handback_s_p50": float(np.median(handbacks)) if handbacks else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--period", type=float, default=0.02, help="control period, s (0.02 as trained, 0.1 real)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {kind: _run(kind, args.episodes, args.period, args.seed) for kind in ("expert", "random")}
    if args.json:
        print(json.dumps({"period_s": args.period, **results}))
        return
    print(f"leader takeover vs the scripted hand, {args.episodes} episodes per policy, "
          f"period {args.period * 1e3:.0f} ms")
    print(f"{'policy':<8}{'grabs':>6}{'latency p50':>13}{'max':>5}{'ticks free':>12}{'false/1000 ticks':>18}"
          f"{'hand-back p50':>15}")
    for kind, r in results.items():
        lat = "n/a" if r["latency_ticks_p50"] is None else f"{r['latency_ticks_p50']:.0f} tick"
        back = "n/a" if r["handback_s_p50"] is None else f"{r['handback_s_p50']:.2f} s"
        print(f"{kind:<8}{r['grabs']:>6}{lat:>13}{r['latency_ticks_max'] or 0:>5}{r['free_ticks']:>12}"
              f"{r['false_per_1000_ticks']:>12.1f} ({r['false_triggers']}){back:>15}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
