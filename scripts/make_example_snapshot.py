"""Write a RoboBase DrQ-v2 snapshot with random weights, in the user's exact layout.

    python scripts/make_example_snapshot.py example.pt [--rgb] [--leaked-state] [--best]

It lets every command be tried without a trained policy: the same 98 agent keys
(duplicated actor, RNN hidden_state buffers) and a pickled OmegaConf config as
RoboBase's ``1200000_snapshot.pt``. Needs the dev extra (omegaconf).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from so101_sim2real.policy.example_snapshot import robobase_agent_state, robobase_cfg, write_robobase_snapshot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the .pt file")
    parser.add_argument("--rgb", action="store_true", help="an RGB policy (3 channels per frame)")
    parser.add_argument("--leaked-state", action="store_true", help="a 21-D state per frame (cube position leaked)")
    parser.add_argument("--best", action="store_true", help="a best_snapshot.pt (has best_eval_reward)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        sys.exit(f"{args.out}: cannot create its folder ({exc.strerror})")
    agent = robobase_agent_state(c_in=9 if args.rgb else 6, state_dim=63 if args.leaked_state else 54, seed=args.seed)
    cfg = robobase_cfg(obs_type="rgb" if args.rgb else "seg_depth")
    write_robobase_snapshot(args.out, agent, cfg, best_eval_reward=359.08 if args.best else None)
    print(f"wrote {args.out} (random weights, RoboBase DrQ-v2 layout)")


if __name__ == "__main__":
    main()
