"""Actor latency at batch 1: p50 / p95, on CPU and on GPU where one is present.

    python scripts/bench_policy.py [--ckpt PATH] [--threads 2] [--iters 300] [--json]

Without --ckpt it benchmarks the user's seg+depth policy shape (docs/reference.md section 1:
3 frames x 2 channels at 84x84, 18-D state, 256-256 MLP, 4-D action) with random
weights. Two rows per device: ``act`` is the full Policy.act path (input checks,
numpy <-> torch), ``forward`` is the network alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from so101_sim2real.control.timing import p50_p95
from so101_sim2real.policy.architecture import (
    STATE,
    VIEW,
    Architecture,
    ConvLayer,
    HeadArch,
    Hints,
    derive_architecture,
)
from so101_sim2real.policy.checkpoint import Checkpoint, load_checkpoint
from so101_sim2real.policy.networks import DrQV2Agent, Encoder
from so101_sim2real.policy.runtime import Policy
from so101_sim2real.spec import default_spec


def users_policy_shape() -> Checkpoint:
    """A random-weight checkpoint of the user's policy shape, through the real code path."""
    spec = default_spec()
    obs = spec.observation
    convs = (ConvLayer(obs.frame_stack * len(obs.channels), 32, 3, 2),) + (ConvLayer(32, 32, 3, 1),) * 3
    feature_dim = Encoder(convs)(torch.zeros(1, convs[0].in_channels, *obs.image_size)).shape[1]
    actor = HeadArch(inputs=((VIEW, feature_dim), (STATE, obs.frame_stack * spec.state.size)), bottleneck=50,
                     layer_norm=True, tanh=True, hidden=(256, 256), extra_input=0, out_features=spec.action.dim)
    hints = Hints(frames=obs.frame_stack, image_size=obs.image_size)
    weights = DrQV2Agent(Architecture(obs.image_size, obs.frame_stack, convs[0].in_channels, convs, feature_dim,
                                      actor.inputs[1][1], spec.action.dim, actor, None, 0, False)).state_dict()
    arch = derive_architecture(weights, hints)  # the same reading a user's checkpoint gets
    return Checkpoint(path=Path("<users-policy-shape, random weights>"), format="native", weights=dict(weights),
                      hints=hints, arch=arch, spec=spec, provenance={})


def _time(fn, iters: int, warmup: int, sync=lambda: None) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return p50_p95(np.array(times) * 1e3)


def bench(ckpt: Checkpoint, device: str, iters: int, warmup: int) -> list[dict]:
    policy = Policy(ckpt, device)
    f, c, h, w = policy.frame_shape
    rng = np.random.default_rng(0)
    frames = np.stack([rng.integers(0, len(ckpt.spec.observation.segmentation.classes), (f, h, w)),
                       rng.integers(0, 256, (f, h, w))], axis=1).astype(np.uint8) if c == 2 else \
        rng.integers(0, 256, (f, c, h, w)).astype(np.uint8)
    state = rng.standard_normal(policy.state_shape).astype(np.float32) if policy.state_shape[1] else None
    obs_t = torch.from_numpy(policy.check_frames(frames)).to(device)[None]
    st = policy.check_state(state)
    st_t = None if st is None else torch.from_numpy(st).to(device)[None]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rows = []
    with torch.no_grad():
        p50, p95 = _time(lambda: policy.act(frames, state), iters, warmup, sync)
        rows.append({"device": device, "path": "act", "p50_ms": p50, "p95_ms": p95})
        p50, p95 = _time(lambda: policy.agent(obs_t, st_t), iters, warmup, sync)
        rows.append({"device": device, "path": "forward", "p50_ms": p50, "p95_ms": p95})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, help="a checkpoint to benchmark instead of the user's policy shape")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (this project's machines have 2)")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.ckpt) if args.ckpt else users_policy_shape()
    rows = bench(ckpt, "cpu", args.iters, args.warmup)
    if torch.cuda.is_available():
        rows += bench(ckpt, "cuda", args.iters, args.warmup)
    info = {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "threads": args.threads,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "policy": str(ckpt.path), "params_actor": sum(t.numel() for k, t in ckpt.weights.items()
                                                          if k.startswith(("encoder.", "actor.")))}
    if args.json:
        print(json.dumps({"info": info, "rows": rows}))
        return
    print(f"actor latency, batch 1  (torch {info['torch']}, {args.threads} CPU threads, GPU: {info['gpu'] or 'none'}, "
          f"encoder+actor {info['params_actor']:,} params)")
    print(f"{'device':<8} {'path':<8} {'p50 ms':>8} {'p95 ms':>8}")
    for r in rows:
        print(f"{r['device']:<8} {r['path']:<8} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f}")
    if not torch.cuda.is_available():
        print("(no GPU present: GPU rows skipped)")


if __name__ == "__main__":
    main()
