"""The policy as the control loop sees it: stacked frames + stacked state -> action.

``Policy.act`` takes exactly what the agent was trained on: frames
``(frames, channels, H, W)`` in the uint8 range, oldest first, and states
``(frames, state_size)``. It refuses, with the name of the bug, inputs that reproduce
the user's past mistakes (docs/reference.md section 7): a stack divided by 255, a stack
flattened before it arrived, real segmentation ids not mapped to sim ids, and a
state of the wrong size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from so101_sim2real.errors import CheckpointError, ObservationError
from so101_sim2real.policy.architecture import Architecture
from so101_sim2real.policy.checkpoint import Checkpoint, load_checkpoint
from so101_sim2real.policy.networks import DrQV2Agent
from so101_sim2real.spec import Spec


def build_agent(ckpt: Checkpoint, device: str | torch.device = "cpu") -> DrQV2Agent:
    """The agent with the checkpoint's weights loaded strictly, in eval mode."""
    agent = DrQV2Agent(ckpt.arch)
    agent.load_state_dict(ckpt.weights, strict=True)
    return agent.to(device).eval()


# Every SO-101 arm joint lies within +-pi (the wrist roll, the widest, spans about -2.7..2.8 rad);
# a little beyond covers calibration offsets. The gripper gets its spec range plus 20 degrees.
ARM_JOINT_BOUND_RAD = np.pi + 0.2
GRIPPER_MARGIN_RAD = np.deg2rad(20.0)


def _check_spec_fits(spec: Spec, arch: Architecture) -> None:
    """The spec's frames, channels, image, state and action against the network's shapes: a spec
    override the weights cannot follow is refused here, not deep inside a convolution."""
    obs = spec.observation
    said = (obs.frame_stack, len(obs.channels), tuple(obs.image_size))
    takes = (arch.frames, arch.channels_per_frame, tuple(arch.image_size))
    if said != takes:
        raise CheckpointError(f"the spec says {said[0]} frames x {said[1]} channels at {said[2][0]}x{said[2][1]}, "
                              f"the network takes {takes[0]} x {takes[1]} at {takes[2][0]}x{takes[2][1]}: its "
                              f"observation cannot be changed by the spec (observation.frame_stack, channels, "
                              f"image_size)")
    if arch.state_dim and spec.state.size != arch.state_dim_per_frame:
        raise CheckpointError(f"the spec's state has {spec.state.size} values per frame, the network takes "
                              f"{arch.state_dim_per_frame} (state.fields)")
    if spec.action.dim != arch.action_dim:
        raise CheckpointError(f"the spec's action has {spec.action.dim} values, the network outputs "
                              f"{arch.action_dim} (action.dim)")


class Policy:
    """A loaded DrQ-v2 actor that checks its inputs against the spec."""

    def __init__(self, ckpt: Checkpoint, device: str | torch.device = "cpu"):
        self.checkpoint = ckpt
        self.spec: Spec = ckpt.spec
        self.arch = ckpt.arch
        self.device = torch.device(device)
        _check_spec_fits(self.spec, self.arch)
        self.agent = build_agent(ckpt, self.device)
        obs = self.spec.observation
        self.frame_shape = (obs.frame_stack, len(obs.channels), *obs.image_size)
        self.state_shape = (obs.frame_stack, self.arch.state_dim_per_frame)
        self._seg_channel = obs.channels.index("seg") if "seg" in obs.channels else None

    @classmethod
    def load(cls, path: str | Path, trust_pickle: bool = False, spec_path: str | Path | None = None,
             device: str | torch.device = "cpu") -> Policy:
        return cls(load_checkpoint(path, trust_pickle=trust_pickle, spec_path=spec_path), device)

    # ----------------------------------------------------------------- input checks

    def check_frames(self, frames: np.ndarray) -> np.ndarray:
        """Validate a frame stack; returns it as float32 ``(frames * channels, H, W)``."""
        frames = np.asarray(frames)
        f, c, h, w = self.frame_shape
        if frames.shape != self.frame_shape:
            if frames.ndim == 3 and frames.shape == (f * c, h, w):
                raise ObservationError(
                    f"frames arrived pre-flattened as {frames.shape}; pass ({f}, {c}, {h}, {w}) oldest first "
                    f"(FrameStack.stacked()), the policy flattens it itself (the pre-flattened stack bug)"
                )
            raise ObservationError(f"frames have shape {frames.shape}, expected ({f}, {c}, {h}, {w}): "
                                   f"frames x channels {self.spec.observation.channels} x H x W")
        x = frames.astype(np.float32, copy=False)
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 255:
            raise ObservationError(f"frame values span [{lo:g}, {hi:g}], expected the uint8 range [0, 255]")
        if frames.dtype.kind == "f" and hi <= 1.0 and not np.all(x == np.round(x)):
            raise ObservationError(
                "frames look already divided by 255 (all values in [0, 1]); the encoder divides by 255 itself, "
                "so feed values in [0, 255] (the double normalisation bug: it makes actions constant)"
            )
        if self._seg_channel is not None:
            seg = x[:, self._seg_channel]
            n = len(self.spec.observation.segmentation.classes)
            if seg.max() >= n or not np.all(seg == np.round(seg)):
                raise ObservationError(
                    f"seg channel holds values up to {seg.max():g}, but the policy knows sim ids 0..{n - 1}; "
                    f"map real model ids with the spec's real_to_sim table (the seg ids 0-5 vs 0-4 bug)"
                )
        return x.reshape(f * c, h, w)

    def check_state(self, state: np.ndarray | None) -> np.ndarray | None:
        """Validate a state stack; returns it float32 ``(frames * state_size,)``."""
        f, s = self.state_shape
        if s == 0:
            return None
        if state is None:
            raise ObservationError(f"this policy needs a state of shape ({f}, {s}); got none")
        state = np.asarray(state, dtype=np.float32)
        if state.shape != (f, s):
            per_frame = state.shape[-1] if state.ndim == 2 else None
            hint = ""
            if per_frame == s + 3:
                hint = f" ({per_frame} per frame: a cube position leaked in; the robot cannot provide it)"
            elif state.ndim == 1 and state.size == f * s:
                hint = " (pass it unflattened, one row per frame, oldest first)"
            raise ObservationError(f"state has shape {state.shape}, expected ({f}, {s}){hint}")
        if not np.all(np.isfinite(state)):
            raise ObservationError("state holds NaN or infinite values")
        self._check_joint_units(state)
        return state.reshape(f * s)

    def _check_joint_units(self, state: np.ndarray) -> None:
        """Refuse joint positions no SO-101 joint can reach in radians: the degrees-for-radians
        mistake (90 for pi/2) and LeRobot's 0-100 gripper scale otherwise produce an action."""
        offset = 0
        for field in self.spec.state.fields:
            if field.name == "joint_pos":
                break
            offset += field.size
        else:
            return
        joints = state[:, offset:offset + field.size]
        arm, gripper = joints[:, :-1], joints[:, -1]
        if arm.size and np.abs(arm).max() > ARM_JOINT_BOUND_RAD:
            worst = float(arm.flat[np.abs(arm).argmax()])
            raise ObservationError(
                f"state joint_pos holds {worst:g}, beyond any SO-101 arm joint's range (|q| <= "
                f"{ARM_JOINT_BOUND_RAD:.2f} rad): joint positions look like degrees; the policy takes radians "
                f"(np.deg2rad)")
        g = self.spec.action.gripper
        lo, hi = g.low_rad - GRIPPER_MARGIN_RAD, g.high_rad + GRIPPER_MARGIN_RAD
        if gripper.size and (gripper.min() < lo or gripper.max() > hi):
            worst = float(gripper.max() if gripper.max() > hi else gripper.min())
            raise ObservationError(
                f"state gripper position {worst:g} lies outside its range [{g.low_rad:.2f}, {g.high_rad:.2f}] rad: "
                f"degrees, or LeRobot's 0-100 gripper scale? The policy takes the gripper joint in radians")

    # ------------------------------------------------------------------------ acting

    @torch.no_grad()
    def act(self, frames: np.ndarray, state: np.ndarray | None = None) -> np.ndarray:
        """Deterministic action (the actor mean), ``(action_dim,)`` in [-1, 1]."""
        obs = torch.from_numpy(self.check_frames(frames)).to(self.device).unsqueeze(0)
        st = self.check_state(state)
        st_t = None if st is None else torch.from_numpy(st).to(self.device).unsqueeze(0)
        return self.agent(obs, st_t)[0].cpu().numpy()


@torch.no_grad()
def verify_same_actions(a: Checkpoint, b: Checkpoint, samples: int = 4, seed: int = 0) -> int:
    """Check two checkpoints give bit-identical actions and Q values; returns the sample count."""
    agent_a, agent_b = build_agent(a), build_agent(b)
    gen = torch.Generator().manual_seed(seed)
    arch = a.arch
    obs = torch.randint(0, 256, (samples, arch.in_channels, *arch.image_size), generator=gen).float()
    state = torch.randn(samples, arch.state_dim, generator=gen) if arch.state_dim else None
    act_a, act_b = agent_a(obs, state), agent_b(obs, state)
    same = torch.equal(act_a, act_b)
    if same and agent_a.critic is not None:
        assert agent_b.critic is not None  # the same architecture: b converts a
        same = torch.equal(agent_a.critic(agent_a.features(obs, state), act_a),
                           agent_b.critic(agent_b.features(obs, state), act_b))
    if not same:
        raise CheckpointError(f"{b.path}: the converted policy does not reproduce {a.path}'s outputs")
    return samples
