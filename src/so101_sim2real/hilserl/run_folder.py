"""A HIL-SERL run folder: what a run needs to be inspected, used and resumed after any stop.

    RUN_DIR/
      run.yaml          where the run happens (its run description), the session's options and the
                        training config (editable: a resume uses the new values and says which changed;
                        "auto" settings stay auto), and the learner's pace the latest start chose
                        for this machine (``pace:``, hilserl/pace.py)
      counters.json     env steps, updates, episodes, the next seed (written after every episode)
      policy/           the fine-tuned policy in the native format (so101 infer / inspect read it),
                        rewritten every ``save_every`` episodes and at the end
      episodes/         the replay buffer, one episode file per finished episode, in the --record
                        format plus the rows the learner needs (state, learner reward, flags)
      metrics.jsonl     one line per episode: counters, UTD, losses, Q, the learner's pace
      tensorboard/      the same numbers as TensorBoard event files (tensorboard --logdir RUN_DIR)
      optimisers.safetensors  the AdamW moments and steps, saved with the policy

Every file is written to a temporary name and renamed, so a ``kill -9`` at any moment
loses at most the episode in progress (and the updates since the last policy save).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from so101_sim2real.control.description import EMULATOR_PORT, RunDescription, describe, with_options
from so101_sim2real.control.recording import Recorder, Recording
from so101_sim2real.errors import So101Error
from so101_sim2real.files import write_file
from so101_sim2real.hilserl.learner import Learner
from so101_sim2real.hilserl.options import (
    RunOptions,
    absolute_paths,
    check_options,
    config_from_dict,
    read_fields,
    relative_paths,
)
from so101_sim2real.hilserl.pace import PaceChoice
from so101_sim2real.hilserl.replay import ReplayBuffer, Step
from so101_sim2real.hilserl.trainer import TrainConfig
from so101_sim2real.records import parse_yaml
from so101_sim2real.sim.perturb import perturbation_from_dict
from so101_sim2real.spec import Spec, yaml_problem

# run.yaml before the run description: these options (their old names) said where the run happened
_OLD_WHERE = {"ckpt": "ckpt", "device": "device", "robot": "robot", "port": "port", "calibration": "calibration",
              "camera": "camera", "perception": "perception", "seg_ckpt": "seg_ckpt", "depth_model": "depth_model",
              "profile": "profile", "backend": "backend", "overlap": "overlap",
              "perception_threads": "perception_threads", "period_s": "period", "rig": "rig",
              "perturbation": "perturb"}
RUN_FILE, COUNTERS_FILE, POLICY_DIR, EPISODES_DIR = "run.yaml", "counters.json", "policy", "episodes"
RIG_FILE = "rig.yaml"  # the run's own copy of --rig
METRICS_FILE, OPTIMISERS_FILE, TENSORBOARD_DIR = "metrics.jsonl", "optimisers.safetensors", "tensorboard"



def read_options(data: dict[str, Any], source: str) -> RunOptions:
    """run.yaml's ``where`` and ``options``; a run.yaml written before the run description (where
    and how in ``options``, flat) reads as it always did."""
    session = data.get("options", {})
    if not isinstance(session, dict):
        raise So101Error(f"{source}: options: expected a mapping, got {session!r}")
    if "where" in data:
        where = RunDescription.from_dict(data["where"], f"{source}: where")
    else:
        old = {key: session.pop(key) for key in list(session) if key in _OLD_WHERE}
        if not isinstance(old.get("ckpt"), str):
            raise So101Error(f"{source}: options.ckpt: missing (the checkpoint the run started from)")
        if old.get("perturbation") is not None:
            old["perturbation"] = perturbation_from_dict(old["perturbation"], f"{source}: options.perturbation")
        checked = read_fields(_OldWhere, old, source, "options.")
        if checked.get("overlap") is True:  # the default then; "not given" now
            checked["overlap"] = None
        # the old code kept options a run did not use; the description refuses them, so they go
        if checked.get("perception", "sim") != "real":
            for key in ("seg_ckpt", "depth_model", "profile", "backend", "overlap", "perception_threads"):
                checked.pop(key, None)
        if checked.get("robot") != "so101" or checked.get("port") in (None, EMULATOR_PORT):
            checked.pop("overlap", None)
        where = describe(**{_OLD_WHERE[key]: value for key, value in checked.items()})
    fields = read_fields(RunOptions, session, source, "options.")
    if "where" in fields:
        raise So101Error(f"{source}: options.where: unknown setting (where is its own section)")
    return RunOptions(where=where, **{**fields, "demos": tuple(str(d) for d in fields.get("demos", ()) or ())})


@dataclasses.dataclass
class _OldWhere:
    """The types of an old run.yaml's where-options, for :func:`read_fields`'s checks."""

    ckpt: str = ""
    device: str = "cpu"
    robot: str = "sim"
    port: str | None = None
    calibration: str | None = None
    camera: str | None = None
    perception: str = "sim"
    seg_ckpt: str | None = None
    depth_model: str = ""
    profile: str = "fast"
    backend: str = "auto"
    overlap: bool = True
    perception_threads: int | None = None
    period_s: float | None = None
    rig: str | None = None
    perturbation: Any = None


class RunFolder:
    """A run folder on disk; see the module docstring for its layout."""

    def __init__(self, path: Path, options: RunOptions, cfg: TrainConfig, counters: dict[str, int],
                 pace: PaceChoice | None = None):
        self.path, self.options, self.cfg, self.counters = path, options, cfg, counters
        self.pace = pace  # what the latest start chose for what cfg leaves auto (None: nothing to choose yet)

    @classmethod
    def create(cls, path: str | Path, options: RunOptions, cfg: TrainConfig) -> RunFolder:
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise So101Error(f"@out {path}: exists and is not a folder")
        if path.exists() and any(path.iterdir()):
            hint = " (continue it with @resume)" if (path / RUN_FILE).is_file() else ""
            raise So101Error(f"@out {path}: the folder exists and is not empty{hint}")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise So101Error(f"@out {path}: cannot create the run folder ({exc.strerror})") from None
        options = absolute_paths(options)  # a resume from another folder finds them
        if rig := options.where.camera.rig:  # the run keeps its own copy: a rig file edited later cannot change it
            from so101_sim2real.geometry.rig_file import read_rig

            copy = read_rig(rig).save(path / RIG_FILE)
            options = dataclasses.replace(options, where=with_options(options.where, rig=str(copy.resolve())))
        run = cls(path, options, cfg, {"env_steps": 0, "updates": 0, "episodes": 0, "next_seed": 0})
        run.write_config()
        run.write_counters()
        return run

    @classmethod
    def open(cls, path: str | Path, check_world: bool = True) -> RunFolder:
        """A run folder, its files checked; ``check_world`` False (status, plot: reading only) does not ask
        whether its arm's ports, cameras and files are there now."""
        path = Path(path)
        if not (path / RUN_FILE).is_file():
            raise So101Error(f"{path}: not a HIL-SERL run folder (no {RUN_FILE}); start one with @out")
        try:
            data = parse_yaml((path / RUN_FILE).read_text()) or {}
            counters = json.loads((path / COUNTERS_FILE).read_text())
        except yaml.YAMLError as exc:
            raise So101Error(f"{path / RUN_FILE}: {yaml_problem(exc)}") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise So101Error(f"{path}: unreadable run files ({exc})") from None
        if not isinstance(data, dict):
            raise So101Error(f"{path / RUN_FILE}: expected a mapping")
        options = read_options(data, str(path / RUN_FILE))
        try:
            if check_world:
                check_options(options, str(path / RUN_FILE))
        except So101Error as exc:
            if not relative_paths(options):
                raise
            raise So101Error(f"{exc.args[0]} (this run.yaml names {', '.join(relative_paths(options))} relative to "
                             f"the folder the run started in: resume from there, or make them absolute in "
                             f"run.yaml)") from None
        cfg = config_from_dict(data.get("config", {}), str(path / RUN_FILE))
        pace = None if data.get("pace") is None else PaceChoice.from_dict(data["pace"], f"{path / RUN_FILE}: pace")
        keys = ("env_steps", "updates", "episodes", "next_seed")
        if not isinstance(counters, dict) or any(not isinstance(counters.get(k), int) or counters[k] < 0
                                                 for k in keys):
            raise So101Error(f"{path / COUNTERS_FILE}: expected whole numbers >= 0 for {', '.join(keys)}")
        return cls(path, options, cfg, {k: counters[k] for k in keys}, pace)

    def write_config(self) -> None:
        session = {f.name: getattr(self.options, f.name) for f in dataclasses.fields(self.options) if f.name != "where"}
        data = {"where": self.options.where.to_dict(), "options": {**session, "demos": list(self.options.demos)},
                "config": dataclasses.asdict(self.cfg)}
        if self.pace is not None:
            data["pace"] = self.pace.to_dict()
        write_file(self.path / RUN_FILE, yaml.safe_dump(data, sort_keys=False))

    def write_counters(self) -> None:
        write_file(self.path / COUNTERS_FILE, json.dumps(self.counters, indent=2))

    def append_metrics(self, row: dict[str, Any]) -> None:
        """One JSON line; a line cut by a kill is skipped by readers."""
        with open(self.path / METRICS_FILE, "a") as f:
            f.write(json.dumps(row) + "\n")

    @property
    def policy_dir(self) -> Path:
        return self.path / POLICY_DIR

    def save_optimisers(self, learner: Learner) -> None:
        """The three AdamW states as flat tensors plus their param groups as JSON metadata."""
        tensors, groups = {}, {}
        with learner.lock:  # between updates: moments and step counts from one update, never torn
            for name, opt in learner.optimisers().items():
                state = opt.state_dict()
                groups[name] = copy.deepcopy(state["param_groups"])
                for idx, slots in state["state"].items():
                    for key, value in slots.items():
                        tensors[f"{name}.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
        tmp = self.path / f".{OPTIMISERS_FILE}.tmp"
        save_file(tensors, str(tmp), metadata={"param_groups": json.dumps(groups)})
        os.replace(tmp, self.path / OPTIMISERS_FILE)

    def load_optimisers(self, learner: Learner) -> bool:
        """Restore the AdamW states saved with the policy, if there are any; True when it did."""
        path = self.path / OPTIMISERS_FILE
        if not path.is_file():
            return False
        try:
            with safe_open(str(path), "pt") as f:
                groups = json.loads(f.metadata()["param_groups"])
                flat = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
            raise So101Error(f"{path}: unreadable optimiser state ({exc}); delete it to resume without it") from None
        for name, opt in learner.optimisers().items():
            state: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in flat.items():
                owner, idx, slot = key.split(".", 2)
                if owner == name:
                    state.setdefault(int(idx), {})[slot] = value.to(learner.device) if slot != "step" else value
            opt.load_state_dict({"state": state, "param_groups": groups[name]})
            for group in opt.param_groups:  # the settings are the run's, which a resume may have changed
                group["lr"], group["weight_decay"] = learner.lr_of(name), learner.cfg.weight_decay
        return True

    def recorder(self, spec: Spec, period_s: float) -> Recorder:
        """The episodes as a recording (compare-sim reads it): of the robot the run drives."""
        return Recorder(self.path / EPISODES_DIR, spec, self.options.where.robot.kind, "hilserl", period_s,
                        with_rgb=False, append=True, description=self.options.where.to_dict())

    def load_episodes(self, buffer: ReplayBuffer) -> int:
        """Every finished episode back into the buffer (interventions into the demo store too).

        The counters are brought up to the episode files: a kill between an episode's file
        and the counters' write loses neither that episode nor its seed.
        """
        folder = self.path / EPISODES_DIR
        if not (folder / "recording.json").is_file():
            return 0
        recording, rows = Recording(folder), 0
        recorded = recording.episodes
        c = self.counters
        c["episodes"] = max(c["episodes"], len(recorded))
        c["env_steps"] = max(c["env_steps"], sum(e["steps"] for e in recorded))
        seeds = [e["seed"] for e in recorded if e["seed"] is not None]
        c["next_seed"] = max(c["next_seed"], max(seeds, default=-1) + 1)
        for i in range(len(recording.episodes)):
            arrays = recording.load(i)
            buffer.begin_episode()
            n = len(arrays["action"])
            for t in range(n):
                ends = bool(arrays["ends"][t])
                buffer.add(Step(arrays["obs"][t], arrays["state"][t], arrays["action"][t],
                                float(arrays["learner_reward"][t]), bool(arrays["terminated"][t]),
                                ends and not bool(arrays["terminated"][t]), bool(arrays["is_intervention"][t])))
            buffer.end_episode()
            rows += n
        return rows
