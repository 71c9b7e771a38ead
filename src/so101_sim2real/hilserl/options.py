"""How a HIL-SERL run happens, as run.yaml keeps it: the options (where, how it sees, who intervenes,
what rewards), the training settings (--config, --set), and the one check of them all."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from so101_sim2real.control.env import RigRequest, check_request
from so101_sim2real.devices import check_device
from so101_sim2real.errors import So101Error, did_you_mean
from so101_sim2real.hilserl.learner import LearnerConfig
from so101_sim2real.hilserl.trainer import TrainConfig
from so101_sim2real.perception import DEFAULT_DEPTH_MODEL
from so101_sim2real.perception.backends import check_threads, usable_cores
from so101_sim2real.perception.real import RealModels
from so101_sim2real.records import parse_yaml
from so101_sim2real.sim.perturb import Perturbation
from so101_sim2real.spec import Spec

INTERVENERS, REWARD_NAMES = ("scripted", "leader", "none"), ("success", "dense", "classifier")


@dataclass(frozen=True)
class RunOptions:
    """What the run is: the starting checkpoint and the sources of actions and rewards."""

    ckpt: str
    intervene: str = "scripted"
    reward: str = "success"
    device: str = "cpu"
    save_every: int = 5  # episodes between policy saves
    demos: tuple[str, ...] = ()  # recording folders loaded into the demo store at every start
    perturbation: Perturbation | None = None  # the perturbed twin instead of the nominal one
    leader_port: str | None = None  # intervene 'leader': its serial port, or 'emulator' (with the scripted hand)
    leader_calibration: str | None = None  # a real leader's calibration id or .json
    classifier: str | None = None  # reward 'classifier': the folder 'so101 reward train' wrote
    # Where the actor runs, as `so101 infer` takes it: the twin, or the driver on an arm
    # ('emulator': the emulated twin arm; a serial port: a real arm with its camera and the
    # real perception).
    robot: str = "sim"
    port: str | None = None
    calibration: str | None = None
    camera: str | None = None
    perception: str = "sim"
    seg_ckpt: str | None = None
    depth_model: str = DEFAULT_DEPTH_MODEL
    profile: str = "fast"
    backend: str = "auto"  # where the perception networks run (RealModels.backend)
    overlap: bool = True  # on an arm: perceive the next frame while the loop acts (RealModels.overlap)
    perception_threads: int | None = None  # the networks' CPU threads; None: the cores the learner leaves
    # The control period on the driver (an arm, or the emulated one): None measures at each start
    # what the machine sustains for a whole tick; the twin keeps the trained one (or --perturb's).
    period_s: float | None = None
    rig: str | None = None  # a rig.yaml or camera.yaml: the twin's camera, or the arm's lens and joint offsets
    # leader_port 'emulator': a hand script's grabs (as written, hand_script.py) instead of the grab at step 10
    hand: list | None = None

    def rig_request(self, wait_for_operator: Callable[[str], None] | None = None,
                    learner_threads: int | None = None) -> RigRequest:
        """Where the actor runs; ``learner_threads``: the learner's CPU budget, which the real
        perception's default thread count leaves free."""
        models = RealModels(self.seg_ckpt, self.depth_model, self.profile, self.device, backend=self.backend,
                            overlap=self.overlap, threads=self.actor_threads(learner_threads))
        return RigRequest(self.robot, self.port, self.calibration, self.camera, self.perception, models,
                          self.perturbation, wait_for_operator=wait_for_operator, rig=self.rig)

    def actor_threads(self, learner_threads: int | None) -> int | None:
        """The actor's CPU threads (perception's and the policy's): as given, else the cores a CPU
        learner leaves; None: torch's count."""
        if self.perception_threads is None and learner_threads is not None and self.device == "cpu":
            return cores_left(learner_threads)
        return self.perception_threads


# The options that may name a file or folder; each is stored absolute when it names one that exists.
# A run.yaml written before that holds them as typed: they resolve against the folder a command
# runs in, so resume such a run from the folder it started in (or make them absolute in run.yaml).
PATH_OPTIONS = ("ckpt", "classifier", "calibration", "leader_calibration", "camera", "seg_ckpt", "depth_model",
                "rig")


def absolute_paths(options: RunOptions) -> RunOptions:
    """``options`` with every path that exists from here made absolute; ids, ports and hub names stay."""
    def absolute(value: str | None) -> str | None:
        return str(Path(value).resolve()) if value and Path(value).exists() else value

    return dataclasses.replace(options, demos=tuple(absolute(d) for d in options.demos),
                               **{name: absolute(getattr(options, name)) for name in PATH_OPTIONS})


def relative_paths(options: RunOptions) -> list[str]:
    """The files an older run.yaml names relative to where it started, which are not here."""
    named = [(name, getattr(options, name)) for name in ("ckpt", "classifier", "seg_ckpt", "rig")]
    named += [("demos", folder) for folder in options.demos]
    return [f"{name} {value}" for name, value in named
            if value and not Path(value).is_absolute() and not Path(value).exists()]


def cores_left(learner_threads: int) -> int:
    """The CPU cores this process may use, less the learner's: perception's thread budget beside
    a learner (two perception threads beside it on 2 cores, its p95 grew 18-48%)."""
    return max(1, usable_cores() - learner_threads)


def plain_data(data: dict[str, Any]) -> dict[str, Any]:
    """Tuples as lists, for YAML."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def read_fields(cls: type, data: Any, source: str, path: str = "") -> dict[str, Any]:
    """``data`` checked against dataclass ``cls``: known keys only, numbers as numbers.

    Errors read ``SOURCE: path.key: what is wrong``.
    """
    if not isinstance(data, dict):
        raise So101Error(f"{source}: {path or 'top level'}: expected a mapping, got {data!r}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in data.items():
        where = f"{source}: {path}{key}"
        if key not in names:
            raise So101Error(f"{where}: unknown setting{did_you_mean(key, names)}")
        default = names[key].default  # MISSING (no default) or a nested config: no check here
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise So101Error(f"{where}: expected true or false, got {value!r}")
        elif isinstance(default, (int, float)):
            value = _number(value, type(default), where)
        out[key] = value
    return out


def _number(value: Any, kind: type, where: str) -> int | float:
    if isinstance(value, str):  # YAML 1.1 reads 2e-5 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            raise So101Error(f"{where}: expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise So101Error(f"{where}: expected a number, got {value!r}")
    if kind is int and not float(value).is_integer():
        raise So101Error(f"{where}: expected a whole number, got {value!r}")
    if value < 0:
        raise So101Error(f"{where}: expected a number >= 0, got {value!r}")
    return kind(value)


def config_from_dict(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """A :class:`TrainConfig` from plain data (a YAML file's), with one-line errors for typos."""
    fields = read_fields(TrainConfig, data, source)
    learner = LearnerConfig(**read_fields(LearnerConfig, fields.pop("learner", {}) or {}, source, "learner."))
    cfg = TrainConfig(learner=learner, **fields)
    if cfg.learner.batch_size < 1 or cfg.capacity < 1 or cfg.n_step < 1 or cfg.publish_every < 1:
        raise So101Error(f"{source}: batch_size, capacity, n_step and publish_every must be at least 1")
    if not 0 < cfg.gamma <= 1:
        raise So101Error(f"{source}: gamma: expected a number in (0, 1], got {cfg.gamma}")
    if cfg.learner.critic_updates_per_actor < 1 or cfg.learner_threads < 1:
        raise So101Error(f"{source}: critic_updates_per_actor and learner_threads must be at least 1")
    return cfg


def apply_sets(cfg: TrainConfig, sets: list[str]) -> TrainConfig:
    """``--set learner.actor_lr=1e-5`` style overrides."""
    data = dataclasses.asdict(cfg)
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep:
            raise So101Error(f"@set {item!r}: expected KEY=VALUE, e.g. learner.actor_lr=1e-5")
        node, parts = data, key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise So101Error(f"@set {key}: unknown setting '{part}'")
            node = node[part]
        try:
            node[parts[-1]] = parse_yaml(raw)
        except yaml.YAMLError:
            raise So101Error(f"@set {item!r}: the value is not valid YAML") from None
    return config_from_dict(data, "@set")


def hand_grabs(options: RunOptions, where: str = "@") -> list:
    """The hand script's grabs on the emulated leader (none without one), checked."""
    if options.hand is None:
        return []
    if options.leader_port != "emulator":
        raise So101Error(f"{where}hand: moves the emulated leader: only with @intervene leader @leader_port emulator "
                         f"(for a leader on a pty, give the script to 'so101 emulate --leader --hand')")
    from so101_sim2real.leader.hand_script import parse_hand_script

    return parse_hand_script(options.hand, f"{where}hand", twin=True)


def check_period(options: RunOptions, spec: Spec) -> None:
    """An arm's step limit is per tick: a period shorter than the trained one would move it faster."""
    if options.period_s is not None and options.period_s < spec.control.period_s:
        raise So101Error(f"@period {options.period_s}: shorter than the {spec.control.period_s * 1e3:.0f} ms the "
                         f"policy trained at; the arm's step limit is per tick, so it would move faster than trained")


def check_options(options: RunOptions, source: str = "") -> None:
    where = f"{source}: options." if source else "@"
    if options.rig is not None and not isinstance(options.rig, str):
        raise So101Error(f"{where}rig: expected the path of a rig.yaml or camera.yaml, got {options.rig!r}")
    request = options.rig_request()
    check_request(request)
    check_threads(options.perception_threads, f"{where}perception_threads")
    if options.perception_threads is not None and options.perception != "real":
        raise So101Error(f"{where}perception_threads: only with @perception real (the twin renders its own "
                         f"observation)")
    if options.period_s is not None and not 0.005 <= options.period_s <= 1.0:
        raise So101Error(f"{where}period {options.period_s}: a control period in seconds, 0.005 to 1")
    if options.period_s is not None and options.robot == "sim":
        raise So101Error(f"{where}period: only on @robot so101; the twin keeps the trained period (@perturb "
                         f"changes it)")
    if request.real_port and options.intervene == "scripted":
        raise So101Error(f"{where}intervene scripted: the scripted expert reads the twin's cube; on a real arm a "
                         f"person takes over: @intervene leader @leader_port PORT (or none)")
    if request.real_port and options.intervene == "leader" and options.leader_port == "emulator":
        raise So101Error(f"{where}leader_port emulator: the scripted hand guides toward the twin's cube; a real arm "
                         f"needs a real leader (@leader_port PORT @leader_calibration ID)")
    if request.real_port and options.reward != "classifier":
        raise So101Error(f"{where}reward {options.reward}: a real arm has no simulator to say success; use @reward "
                         f"classifier @classifier DIR (the person's s and f keys work too)")
    for folder in options.demos:
        if not (Path(folder) / "recording.json").is_file():
            raise So101Error(f"{where}demos {folder}: not a recording (no recording.json); make demos with "
                             f"'so101 infer --ckpt scripted --record {folder}'")
    if options.intervene not in INTERVENERS:
        raise So101Error(f"{where}intervene {options.intervene}: choose {', '.join(INTERVENERS)}")
    if options.intervene == "leader" and not options.leader_port:
        raise So101Error(f"{where}intervene leader needs @leader_port (the leader arm's serial port, or 'emulator' "
                         f"for an emulated leader moved by a scripted hand)")
    if options.intervene != "leader" and (options.leader_port or options.leader_calibration):
        raise So101Error(f"{where}leader_port and leader_calibration: only with @intervene leader")
    hand_grabs(options, where)
    if options.intervene == "leader" and options.leader_port != "emulator":
        if not options.leader_calibration:
            raise So101Error(f"{where}leader_port {options.leader_port}: the leader needs its calibration: "
                             f"@leader_calibration ID (from 'so101 calibrate joints --arm leader') or a .json")
        if options.leader_port.startswith("/") and not Path(options.leader_port).exists():
            raise So101Error(f"{where}leader_port {options.leader_port}: no such serial port; find the leader's "
                             f"with 'so101 motors find-port'")
    if options.reward not in REWARD_NAMES:
        raise So101Error(f"{where}reward {options.reward}: choose {', '.join(REWARD_NAMES)}")
    if options.reward == "classifier" and not options.classifier:
        raise So101Error(f"{where}reward classifier needs @classifier DIR (written by 'so101 reward train')")
    if options.classifier and options.reward != "classifier":
        raise So101Error(f"{where}classifier: only with @reward classifier")
    if options.classifier and not (Path(options.classifier) / "classifier.yaml").is_file():
        raise So101Error(f"{where}classifier {options.classifier}: not a reward classifier folder (no "
                         f"classifier.yaml); train one with 'so101 reward train RECORDING --out DIR'")
    if options.save_every < 1:
        raise So101Error(f"{where}save_every: must be at least 1")
    check_device(options.device, where)
