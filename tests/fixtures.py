"""Checkpoints written in the exact layouts users hold, with random weights.

The RoboBase snapshot comes from so101_sim2real.policy.example_snapshot (built key by key
as RoboBase registers its modules, independently of the toolkit's own networks, so that
reading it is a real test of the mapping); drqv2's is pickled from its own classes here.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from so101_sim2real.policy.example_snapshot import (  # noqa: F401 - the tests take them from here
    robobase_agent_state,
    robobase_cfg,
    write_robobase_snapshot,
)


def _drqv2_module() -> types.ModuleType:
    """facebookresearch/drqv2's network classes, as a module named ``drqv2``."""
    mod = types.ModuleType("drqv2")

    class Encoder(nn.Module):
        def __init__(self, obs_shape):
            super().__init__()
            self.repr_dim = 32 * 35 * 35
            self.convnet = nn.Sequential(nn.Conv2d(obs_shape[0], 32, 3, stride=2), nn.ReLU(),
                                         nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
                                         nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
                                         nn.Conv2d(32, 32, 3, stride=1), nn.ReLU())

        def forward(self, obs):
            return self.convnet(obs / 255.0 - 0.5).view(obs.shape[0], -1)

    class Actor(nn.Module):
        def __init__(self, repr_dim, action_dim, feature_dim, hidden_dim):
            super().__init__()
            self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
            self.policy = nn.Sequential(nn.Linear(feature_dim, hidden_dim), nn.ReLU(),
                                        nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                                        nn.Linear(hidden_dim, action_dim))

        def forward(self, obs):
            return torch.tanh(self.policy(self.trunk(obs)))

    class Critic(nn.Module):
        def __init__(self, repr_dim, action_dim, feature_dim, hidden_dim):
            super().__init__()
            self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
            self.Q1 = nn.Sequential(nn.Linear(feature_dim + action_dim, hidden_dim), nn.ReLU(),
                                    nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))
            self.Q2 = nn.Sequential(nn.Linear(feature_dim + action_dim, hidden_dim), nn.ReLU(),
                                    nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))

        def forward(self, obs, action):
            h = torch.cat([self.trunk(obs), action], dim=-1)
            return self.Q1(h), self.Q2(h)

    class DrQV2Agent:  # a plain object in drqv2.py, not an nn.Module
        def __init__(self, obs_shape, action_dim, feature_dim=50, hidden_dim=1024):
            self.encoder = Encoder(obs_shape)
            self.actor = Actor(self.encoder.repr_dim, action_dim, feature_dim, hidden_dim)
            self.critic = Critic(self.encoder.repr_dim, action_dim, feature_dim, hidden_dim)
            self.critic_target = Critic(self.encoder.repr_dim, action_dim, feature_dim, hidden_dim)
            self.critic_target.load_state_dict(self.critic.state_dict())
            self.stddev_schedule = "linear(1.0,0.1,500000)"

        def act_mean(self, obs):
            return self.actor(self.encoder(obs))

    for cls in (Encoder, Actor, Critic, DrQV2Agent):
        cls.__module__ = "drqv2"
        cls.__qualname__ = cls.__name__
        setattr(mod, cls.__name__, cls)
    return mod


def write_drqv2_snapshot(path: Path, action_dim: int = 4, seed: int = 0):
    """A facebookresearch/drqv2 snapshot (pickled agent object); returns the agent.

    The ``drqv2`` module is importable only while saving, as on a user's machine
    where that repository is not installed.
    """
    torch.manual_seed(seed)
    mod = _drqv2_module()
    sys.modules["drqv2"] = mod
    try:
        agent = mod.DrQV2Agent((9, 84, 84), action_dim, hidden_dim=64)
        torch.save({"agent": agent, "timer": None, "_global_step": 1000, "_global_episode": 5}, path)
    finally:
        del sys.modules["drqv2"]
    return agent


def ctrl_c_works() -> None:
    """``preexec_fn`` for a child that a test stops with Ctrl-C (SIGINT): a parent started in the
    background (a CI job, ``cmd &``) passes SIGINT on ignored, and Python then never raises
    KeyboardInterrupt. Restore the default so the child installs its handler."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``so101 ARGS`` in-process through the console entry point: (exit code, stdout, stderr)."""
    from so101_sim2real.cli.app import main

    try:
        main(list(args))
        code = 0  # a command that finished returns
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def write_lightning_seg_ckpt(path, num_classes: int = 6, input_size=(480, 640), seed: int = 0, prefix: str = "model.",
                             net=None):
    """A segmentation checkpoint as PyTorch Lightning writes it: ``hyper_parameters`` is an
    ``AttributeDict`` from Lightning's own module, which this environment does not have, so a
    stand-in of the same module and name is pickled (the bytes Lightning writes)."""
    import sys
    import types

    import torch

    from so101_sim2real.perception.segmentation import SegmentationNet

    module_name = "lightning.fabric.utilities.data"
    attribute_dict = type("AttributeDict", (dict,), {"__module__": module_name})
    module = types.ModuleType(module_name)
    module.AttributeDict = attribute_dict
    saved = {name: sys.modules.get(name) for name in ("lightning", "lightning.fabric", "lightning.fabric.utilities",
                                                       module_name)}
    sys.modules.update({name: types.ModuleType(name) for name in saved})
    sys.modules[module_name] = module
    try:
        torch.manual_seed(seed)
        net = net if net is not None else SegmentationNet(num_classes).eval()
        hparams = attribute_dict(num_classes=num_classes, img_height=input_size[0], img_width=input_size[1],
                                 lr=1e-3, backbone="efficientvit_b0")
        torch.save({"epoch": 41, "global_step": 5000, "pytorch-lightning_version": "2.4.0",
                    "state_dict": {f"{prefix}{k}": v for k, v in net.state_dict().items()},
                    "hyper_parameters": hparams, "hparams_name": "kwargs",
                    "callbacks": {"ModelCheckpoint{'monitor': 'val_iou'}": {"best_model_score": torch.tensor(0.811),
                                                                            "best_model_path": "best.ckpt"}},
                    "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}]}, path)
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
    return net


def write_depth_folder(path, net=None):
    """Depth Anything V2 Small (random weights unless ``net``), saved the way a downloaded model is laid out."""
    from transformers import DepthAnythingForDepthEstimation
    from transformers.utils import logging

    from so101_sim2real.perception.depth import small_config

    logging.disable_progress_bar()  # its bar would land in the stderr of whichever test made the folder
    torch.manual_seed(0)
    net = net if net is not None else DepthAnythingForDepthEstimation(small_config()).eval()
    net.save_pretrained(path)
    return net


def twin_views(seeds=range(6)):
    """The twin's wrist camera at seeded resets: RGB, sim class ids and metric depth, per seed."""
    from so101_sim2real.sim.camera import SimCamera
    from so101_sim2real.sim.task import LiftCubeTask
    from so101_sim2real.spec import default_spec

    spec = default_spec()
    task = LiftCubeTask(spec)
    camera = SimCamera(task.model, task.data, spec.observation)
    try:
        views = []
        for seed in seeds:
            task.reset(seed)
            views.append((camera.read().rgb, camera.seg_ids(), camera.depth_m()))
        return views
    finally:
        camera.close()


def fit_to_twin(views, seed: int = 0):
    """The real architectures with outputs of real structure: random backbones, and the heads fitted
    for half a minute to the twin's own labels on its rendered RGB (the segmentation head to the
    classes at the fast profile's crop input, the depth head to the normalised disparity at its
    full-frame input). Random weights give near-tied logits and shapeless disparity, where a
    precision change moves the observation more than it would on a trained network."""
    import torch.nn.functional as F
    from transformers import DepthAnythingForDepthEstimation

    from so101_sim2real.observation import center_crop_box
    from so101_sim2real.perception.depth import PATCH, input_size, small_config
    from so101_sim2real.perception.segmentation import SegmentationNet, to_tensor
    from so101_sim2real.spec import default_spec

    torch.manual_seed(seed)
    cpu = torch.device("cpu")
    spec = default_spec()
    height, width = views[0][0].shape[:2]
    rows, cols = center_crop_box(height, width, spec.observation.crop)
    seg = SegmentationNet(6).eval()
    with torch.no_grad():  # the features before the head, once: only the head learns
        feats, labels = [], []
        for rgb, ids, _ in views:
            x = to_tensor(np.ascontiguousarray(rgb[rows, cols]), (192, 192), cpu, "bilinear")
            top = seg.output_convs[0](seg.fpn(x))
            feats.append(top)
            real = torch.from_numpy(ids[rows, cols].astype(np.int64) + 1)[None, None].float()  # sim k = real k + 1
            labels.append(F.interpolate(real, size=top.shape[-2:], mode="nearest")[0, 0].long())
        feats, labels = torch.cat(feats), torch.stack(labels)
    opt = torch.optim.Adam(seg.seg_head.parameters(), lr=1e-2)
    for _ in range(300):
        loss = F.cross_entropy(seg.seg_head(feats), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    depth = DepthAnythingForDepthEstimation(small_config()).eval()
    size = input_size(height, width, 140)
    ph, pw = size[0] // PATCH, size[1] // PATCH
    with torch.no_grad():
        necks, targets = [], []
        for rgb, _, metres in views:
            out = depth.backbone.forward_with_filtered_kwargs(to_tensor(rgb, size, cpu, "bicubic"))
            necks.append(depth.neck(out.feature_maps, ph, pw))
            disparity = 1.0 / (torch.from_numpy(metres) + 1e-3)
            targets.append((disparity - disparity.min()) / (disparity.max() - disparity.min()))
    opt = torch.optim.Adam(depth.head.parameters(), lr=3e-3)
    for _ in range(60):
        for neck, target in zip(necks, targets, strict=True):
            pred = F.interpolate(depth.head(neck, ph, pw)[:, None], size=target.shape, mode="bilinear",
                                 align_corners=False)[0, 0]
            loss = F.mse_loss(pred, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return seg.eval(), depth.eval()


def robobase_reference_actor(sd, obs, state, prefix: str = "actor.actor_model."):
    """RoboBase's DrQ-v2 actor forward, written straight from the snapshot's keys (not the toolkit's
    networks): ``obs`` (B, C, 84, 84) in [0, 255], ``state`` (B, D); ``prefix``: which of the two
    registrations of the actor to read."""
    x = obs / 255.0 - 0.5
    for i, stride in zip((0, 3, 6, 9), (2, 1, 1, 1), strict=True):
        x = F.relu(F.conv2d(x, sd[f"encoder.convs_per_cam.0.{i}.weight"], sd[f"encoder.convs_per_cam.0.{i}.bias"],
                            stride=stride))
    p = prefix

    def bottleneck(name, v):
        m = f"{p}input_preprocess_modules.{name}"
        v = F.linear(v, sd[f"{m}.0.weight"], sd[f"{m}.0.bias"])
        v = F.layer_norm(v, (v.shape[-1],), sd[f"{m}.1.weight"], sd[f"{m}.1.bias"])
        return torch.tanh(v)

    h = torch.cat([bottleneck("fused_view_feats", x.flatten(1)), bottleneck("low_dim_obs", state)], dim=-1)
    for i in (0, 3):
        h = F.relu(F.linear(h, sd[f"{p}main_mlp.{i}.weight"], sd[f"{p}main_mlp.{i}.bias"]))
    return torch.tanh(F.linear(h, sd[f"{p}out_mlp.0.weight"], sd[f"{p}out_mlp.0.bias"]))
