"""How a HIL-SERL run happens, as run.yaml keeps it: the options (where, how it sees, who intervenes,
what rewards), the training settings (--config, --set), and the one check of them all."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from so101_sim2real.control.description import RunDescription, check_description
from so101_sim2real.control.description import absolute_paths as description_paths
from so101_sim2real.errors import So101Error, did_you_mean
from so101_sim2real.hilserl.demos import check_demo_folder
from so101_sim2real.hilserl.learner import OBJECTIVES, PRECISIONS, LearnerConfig
from so101_sim2real.hilserl.trainer import TrainConfig
from so101_sim2real.perception.backends import usable_cores
from so101_sim2real.records import parse_sets, parse_yaml
from so101_sim2real.scheduling import idle_class
from so101_sim2real.spec import yaml_problem

INTERVENERS, REWARD_NAMES = ("scripted", "leader", "none"), ("success", "dense", "classifier")


@dataclass(frozen=True)
class RunOptions:
    """What the run is: where and how it happens (its :class:`RunDescription`: the starting
    checkpoint, the arm, the camera, the perception, the world, the period) and the sources of
    actions and rewards."""

    where: RunDescription = field(default_factory=RunDescription)
    intervene: str = "scripted"
    reward: str = "success"
    save_every: int = 5  # episodes between policy saves
    demos: tuple[str, ...] = ()  # recording folders loaded into the demo store at every start
    leader_port: str | None = None  # intervene 'leader': its serial port, or 'emulator' (with the scripted hand)
    leader_calibration: str | None = None  # a real leader's calibration id or .json
    classifier: str | None = None  # reward 'classifier': the folder 'so101 reward train' wrote
    # leader_port 'emulator': a hand script's grabs (as written, hand_script.py) instead of the grab at step 10
    hand: list | None = None

    @property
    def ckpt(self) -> str | None:
        return self.where.policy.ckpt

    @property
    def device(self) -> str:
        return self.where.policy.device

    def actor_threads(self, learner_threads: int | None) -> int | None:
        """The actor's CPU threads (perception's and the policy's): as given, else the cores a CPU
        learner leaves; None: torch's count."""
        given = self.where.perception.threads
        if given is None and learner_threads is not None and self.device == "cpu":
            return cores_left(learner_threads)
        return given


# The session's options that may name a file or folder (the description's are in its PATH_OPTIONS).
PATH_OPTIONS = ("classifier", "leader_calibration")


def absolute_paths(options: RunOptions) -> RunOptions:
    """``options`` with every path that exists from here made absolute; ids, ports and hub names stay."""
    def absolute(value: str | None) -> str | None:
        return str(Path(value).resolve()) if value and Path(value).exists() else value

    paths: dict[str, Any] = {name: absolute(getattr(options, name)) for name in PATH_OPTIONS}  # str | None each
    return dataclasses.replace(options, where=description_paths(options.where),
                               demos=tuple(str(absolute(d)) for d in options.demos), **paths)


def relative_paths(options: RunOptions) -> list[str]:
    """The files an older run.yaml names relative to where it started, which are not here."""
    named = [("ckpt", options.ckpt), ("classifier", options.classifier),
             ("seg_ckpt", options.where.perception.seg_ckpt), ("rig", options.where.camera.rig)]
    named += [("demos", folder) for folder in options.demos]
    return [f"{name} {value}" for name, value in named
            if value and not Path(value).is_absolute() and not Path(value).exists()]


def thread_layout(options: RunOptions, learner_threads: int) -> tuple[str, str | None]:
    """What a session says about its threads: the actor's and the learner's on the cores this
    process may use, and a warning when a given @perception_threads and the learner ask for more
    than there are (the actor's tail grows: docs/actor_period.md)."""
    cores, actor = usable_cores(), options.actor_threads(learner_threads)
    where = "in the OS's idle class" if idle_class() else "at the lowest priority"
    if options.device != "cpu":
        return f"threads: actor {actor or torch.get_num_threads()}, learner on {options.device} {where}; " \
               f"{cores} cores", None
    shown = actor or torch.get_num_threads()
    note = f"threads: actor {shown} (policy and perception), learner {learner_threads} {where}, on {cores} cores"
    given = options.where.perception.threads
    if given is None or given + learner_threads <= cores:
        return note, None
    return note, (f"@perception_threads {given} and the learner's {learner_threads} ask for more than the {cores} "
                  f"cores here: the control period's tail grows; leave @perception_threads out or lower it to "
                  f"{cores_left(learner_threads)}")


def cores_left(learner_threads: int) -> int:
    """The CPU cores this process may use, less the learner's: perception's thread budget beside
    a learner (two perception threads beside it on 2 cores, its p95 grew 18-48%)."""
    return max(1, usable_cores() - learner_threads)


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
        elif default is None and (kind := _optional_number(names[key])) is not None:
            value = None if value is None or value == "auto" else _number(value, kind, where, "or auto")
        out[key] = value
    return out


def _optional_number(f: dataclasses.Field) -> type | None:
    """int or float for a field declared ``int | None`` or ``float | None`` (None: auto, unset), else None."""
    kinds = {part.strip() for part in str(f.type).split("|")} - {"None"}
    return {"int": int, "float": float}.get(kinds.pop()) if len(kinds) == 1 else None


def _number(value: Any, kind: type, where: str, alternative: str = "") -> int | float:
    expected = f"expected a number{' ' + alternative if alternative else ''}"
    if isinstance(value, str):  # YAML 1.1 reads 2e-5 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            raise So101Error(f"{where}: {expected}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise So101Error(f"{where}: {expected}, got {value!r}")
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
    batch = 1 if cfg.learner.batch_size is None else cfg.learner.batch_size  # None: chosen at start
    if batch < 1 or cfg.capacity < 1 or cfg.n_step < 1 or cfg.publish_every < 1:
        raise So101Error(f"{source}: batch_size, capacity, n_step and publish_every must be at least 1")
    if not 0 < cfg.gamma <= 1:
        raise So101Error(f"{source}: gamma: expected a number in (0, 1], got {cfg.gamma}")
    if cfg.learner.critic_updates_per_actor < 1 or cfg.learner_threads < 1:
        raise So101Error(f"{source}: critic_updates_per_actor and learner_threads must be at least 1")
    if cfg.utd is not None and cfg.min_utd is not None and cfg.min_utd > cfg.utd:
        raise So101Error(f"{source}: min_utd {cfg.min_utd:g} is above the utd cap {cfg.utd:g}: the actor would wait "
                         f"for updates the cap forbids")
    for name, value, allowed in (("precision", cfg.learner.precision, PRECISIONS),
                                 ("objective", cfg.learner.objective, OBJECTIVES)):
        if value not in allowed:
            raise So101Error(f"{source}: learner.{name}: expected one of {', '.join(allowed)}, got {value!r}")
    return cfg


def apply_sets(cfg: TrainConfig, sets: list[str]) -> TrainConfig:
    """``--set learner.actor_lr=1e-5`` style overrides."""
    data = dataclasses.asdict(cfg)
    for key, value in parse_sets(sets, "@set", "learner.actor_lr=1e-5"):
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise So101Error(f"@set {key}: unknown setting '{part}'")
            node = node[part]
        node[parts[-1]] = value
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


def check_options(options: RunOptions, source: str = "") -> None:
    """Every combination that cannot work; ``source`` (a run.yaml) names its keys instead of options."""
    where = f"{source}: options." if source else "@"
    check_description(options.where, source)
    if options.where.scripted:
        raise So101Error(f"{where}ckpt: a HIL-SERL run starts from a checkpoint with critics, not the scripted "
                         f"expert")
    real_port = options.where.real_port
    if real_port and options.intervene == "scripted":
        raise So101Error(f"{where}intervene scripted: the scripted expert reads the twin's cube; on a real arm a "
                         f"person takes over: @intervene leader @leader_port PORT (or none)")
    if real_port and options.intervene == "leader" and options.leader_port == "emulator":
        raise So101Error(f"{where}leader_port emulator: the scripted hand guides toward the twin's cube; a real arm "
                         f"needs a real leader (@leader_port PORT @leader_calibration ID)")
    if real_port and options.reward != "classifier":
        raise So101Error(f"{where}reward {options.reward}: a real arm has no simulator to say success; use @reward "
                         f"classifier @classifier DIR (the person's s and f keys work too)")
    for folder in options.demos:
        check_demo_folder(folder, where)
    if options.intervene not in INTERVENERS:
        raise So101Error(f"{where}intervene {options.intervene}: choose {', '.join(INTERVENERS)}")
    if options.intervene == "leader" and not options.leader_port:
        raise So101Error(f"{where}intervene leader needs @leader_port (the leader arm's serial port, or 'emulator' "
                         f"for an emulated leader moved by a scripted hand)")
    if options.intervene != "leader" and (options.leader_port or options.leader_calibration):
        raise So101Error(f"{where}leader_port and leader_calibration: only with @intervene leader")
    hand_grabs(options, where)
    if options.intervene == "leader" and options.leader_port != "emulator":
        assert options.leader_port is not None  # @intervene leader without @leader_port was refused above
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


def new_run_options(where: RunDescription, resume: bool, folder: str | Path, typed: list[str] | None = None,
                    **session: Any) -> RunOptions | None:
    """A new run's options from the command line (None when resuming: the run keeps its own).

    ``where`` (its ckpt None when not given) and ``session`` (intervene, leader_port,
    leader_calibration, reward, classifier, demos, hand: None when not given) are refused
    when they cannot be: with @resume, anything given. ``typed``: the options as the person
    typed them (a default typed out counts too); without it, those away from their defaults."""
    if resume and where.policy.ckpt:
        raise So101Error("@resume continues the run's own policy; drop @ckpt")
    given = typed if typed is not None else where.given() + [f"@{name}" for name, value in session.items() if value]
    if resume and given:
        raise So101Error(f"{', '.join(given)}: a resumed run keeps its own (see {folder}/run.yaml; edit it to "
                         f"change them)")
    if resume:
        return None
    if not where.policy.ckpt:
        raise So101Error("a new run needs @ckpt (or @resume to continue the run in @out)")
    hand = session.pop("hand", None)
    if hand is not None:  # the grabs as the run keeps them (in run.yaml), checked now
        from so101_sim2real.leader.hand_script import load_hand_script

        hand = [grab.to_dict() for grab in load_hand_script(hand, twin=True)]
    intervene = session.pop("intervene", None) or "scripted"
    reward = session.pop("reward", None) or "success"
    demos = tuple(str(d) for d in session.pop("demos", None) or ())
    # what is left: leader_port, leader_calibration, classifier (str | None each)
    rest: dict[str, Any] = {name: None if value is None else str(value) for name, value in session.items()}
    return RunOptions(where, intervene=intervene, reward=reward, demos=demos, hand=hand, **rest)


def settings(config: Path | None, sets: list[str], base: Callable[[], TrainConfig]) -> TrainConfig | None:
    """The training settings from @config and @set (None: neither given); ``base`` gives what
    @set changes when there is no @config (a new run's defaults, or a resumed run's own)."""
    cfg = None
    if config is not None:
        try:
            data = parse_yaml(config.read_text()) or {}
        except OSError as exc:
            raise So101Error(f"@config {config}: cannot read it ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise So101Error(f"@config {config}: {yaml_problem(exc)}") from None
        cfg = config_from_dict(data, str(config))
    if sets:
        cfg = apply_sets(cfg or base(), sets)
    return cfg
