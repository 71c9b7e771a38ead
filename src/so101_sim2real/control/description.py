"""Where and how a run happens, said once: the policy, the robot and its port, the camera and its
rig file, the perception and its backend, the world (the twin, or the perturbed twin), the period.

Every command that runs a policy or opens the arm (``infer``, ``hilserl train``, ``compare-sim
sensitivity``, ``perceive``) builds one :class:`RunDescription`, has :func:`check_description`
refuse what cannot work (one style of error, naming the command's options as ``@name``), and
hands it to :func:`~so101_sim2real.control.env.build_env`. A run folder keeps it whole
(``to_dict``/``from_dict``), so ``--resume`` reads back exactly what ran.

Options are named as on the command line (``@seg_ckpt`` is ``--seg-ckpt``); :data:`OPTIONS` maps
each to its place in the record, and :func:`describe` builds a record from those names.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from so101_sim2real.devices import check_device
from so101_sim2real.errors import So101Error, did_you_mean
from so101_sim2real.perception import DEFAULT_DEPTH_MODEL
from so101_sim2real.sim.perturb import Perturbation, perturbation_from_dict
from so101_sim2real.sim.standin import StandIn, standin_from_dict

if TYPE_CHECKING:
    from so101_sim2real.perception.real import RealModels

ROBOTS = ("sim", "so101")  # the twin, or the Feetech driver (on a serial port, or 'emulator')
PERCEPTIONS = ("sim", "real")  # the twin's rendered classes and depth, or the networks on camera RGB
EMULATOR_PORT = "emulator"
SCRIPTED = "scripted"  # the built-in expert as a policy: it reads the twin's cube, loads no checkpoint


@dataclass(frozen=True)
class PolicyChoice:
    """What acts: a checkpoint (or ``scripted``), the spec it runs under, and where torch runs it."""

    ckpt: str | None = None  # None: not chosen (an env needs no policy)
    spec: str | None = None  # a spec YAML to start from instead of the packaged one
    spec_sets: tuple[str, ...] = ()  # KEY=VALUE spec overrides for this run (not what the policy trained with)
    trust_pickle: bool = False
    device: str = "cpu"  # the policy's and the perception networks' torch device


@dataclass(frozen=True)
class RobotChoice:
    """Which arm: the twin (``sim``), or the Feetech driver (``so101``) on a serial port, on the pty
    of ``so101 emulate --twin``, or on an in-process twin (port ``emulator``)."""

    kind: str = "sim"
    port: str | None = None
    calibration: str | None = None  # a port's arm: an id from 'so101 calibrate joints', a .json, or 'twin'


@dataclass(frozen=True)
class CameraChoice:
    """What the run sees through: a port's camera, and the measured rig (lens, mount, joint offsets)."""

    source: str | None = None  # an index, a device, a video, an image folder, or 'twin'
    rig: str | None = None  # a rig.yaml or camera.yaml


@dataclass(frozen=True)
class PerceptionChoice:
    """How frames become the observation: the twin's own classes and depth, or the real networks."""

    kind: str = "sim"
    seg_ckpt: str | None = None
    depth_model: str = DEFAULT_DEPTH_MODEL
    profile: str = "fast"
    backend: str = "auto"
    overlap: bool | None = None  # on a serial port's arm: perceive the next frame while the loop acts (None: yes)
    threads: int | None = None  # the networks' CPU threads; None: torch's count (or what a learner leaves)


@dataclass(frozen=True)
class RunDescription:
    """Where and how one run happens. Built once (:func:`describe`, or read back from a run folder)."""

    policy: PolicyChoice = field(default_factory=PolicyChoice)
    robot: RobotChoice = field(default_factory=RobotChoice)
    camera: CameraChoice = field(default_factory=CameraChoice)
    perception: PerceptionChoice = field(default_factory=PerceptionChoice)
    world: Perturbation | None = None  # the twin only: the perturbed twin, a stand-in for the real arm
    standin: StandIn | None = None  # the twin only: the stand-in world (sim/standin.py), its gaps named
    period_s: float | None = None  # an arm: the control period (None: measured, what the machine sustains)

    @property
    def real_port(self) -> bool:
        """An arm on a serial port (a real one, or ``so101 emulate --twin``'s pty)."""
        return self.robot.kind == "so101" and self.robot.port != EMULATOR_PORT

    @property
    def scripted(self) -> bool:
        return self.policy.ckpt == SCRIPTED

    def models(self, threads: int | None = None) -> RealModels:
        """The real perception's networks and how they run; ``threads``: the count to use when
        @perception_threads is not given (None: torch's)."""
        from so101_sim2real.perception.real import RealModels

        p = self.perception
        return RealModels(p.seg_ckpt, p.depth_model, p.profile, self.policy.device, self.policy.trust_pickle,
                          p.backend, p.overlap is not False, p.threads if p.threads is not None else threads)

    def options(self) -> dict[str, Any]:
        """The record as its options (``{"seg_ckpt": ..., ...}``), the names the command line uses."""
        return {name: _get(self, place) for name, place in OPTIONS.items()}

    def given(self) -> list[str]:
        """The options that differ from their defaults, as ``@name``."""
        default = RunDescription(policy=PolicyChoice(self.policy.ckpt)).options()
        return [f"@{name}" for name, value in self.options().items() if name != "ckpt" and value != default[name]]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML and JSON (tuples as lists)."""
        data = dataclasses.asdict(self)
        data["policy"]["spec_sets"] = list(self.policy.spec_sets)
        if self.world is not None:
            data["world"] = {k: list(v) if isinstance(v, tuple) else v for k, v in data["world"].items()}
        data["standin"] = None if self.standin is None else self.standin.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str) -> RunDescription:
        """A record from :meth:`to_dict`'s data; a wrong key or type is one line naming it."""
        if not isinstance(data, dict):
            raise So101Error(f"{source}: expected a mapping, got {data!r}")
        parts: dict[str, Any] = {}
        for key, value in data.items():
            where = f"{source}.{key}"
            if key == "world":
                parts[key] = None if value is None else perturbation_from_dict(value, where)
            elif key == "standin":
                parts[key] = None if value is None else standin_from_dict(value, where)
            elif key == "period_s":
                parts[key] = None if value is None else _typed(value, float, where)
            elif key in _PARTS:
                parts[key] = _part(_PARTS[key], value, where)
            else:
                raise So101Error(f"{where}: unknown{did_you_mean(key, [*_PARTS, 'world', 'standin', 'period_s'])}")
        return cls(**parts)


_PARTS = {"policy": PolicyChoice, "robot": RobotChoice, "camera": CameraChoice, "perception": PerceptionChoice}

# Each option's place in the record: (part, field), or the record's own field.
OPTIONS: dict[str, tuple[str, ...]] = {
    "ckpt": ("policy", "ckpt"), "spec": ("policy", "spec"), "set_spec": ("policy", "spec_sets"),
    "trust_pickle": ("policy", "trust_pickle"), "device": ("policy", "device"),
    "robot": ("robot", "kind"), "port": ("robot", "port"), "calibration": ("robot", "calibration"),
    "camera": ("camera", "source"), "rig": ("camera", "rig"),
    "perception": ("perception", "kind"), "seg_ckpt": ("perception", "seg_ckpt"),
    "depth_model": ("perception", "depth_model"), "profile": ("perception", "profile"),
    "backend": ("perception", "backend"), "overlap": ("perception", "overlap"),
    "perception_threads": ("perception", "threads"),
    "perturb": ("world",), "standin": ("standin",), "period": ("period_s",),
}
# Options that name a file or folder: a run folder keeps them absolute (where they exist from here).
PATH_OPTIONS = ("ckpt", "spec", "calibration", "camera", "rig", "seg_ckpt", "depth_model")


def describe(**options: Any) -> RunDescription:
    """A record from options named as on the command line (``describe(ckpt="p.pt", robot="so101",
    port="/dev/ttyACM0", ...)``); paths may be :class:`~pathlib.Path`; omitted ones take defaults."""
    parts: dict[str, dict[str, Any]] = {name: {} for name in _PARTS}
    top: dict[str, Any] = {}
    for name, value in options.items():
        if name not in OPTIONS:
            raise TypeError(f"describe(): unknown option {name!r}")
        if isinstance(value, Path):
            value = str(value)
        if name == "set_spec":
            value = tuple(value or ())
        place = OPTIONS[name]
        if len(place) == 2:
            parts[place[0]][place[1]] = value
        else:
            top[place[0]] = value
    return RunDescription(**{name: cls(**parts[name]) for name, cls in _PARTS.items()}, **top)


def with_options(description: RunDescription, **options: Any) -> RunDescription:
    """``description`` with some options replaced (named as in :func:`describe`)."""
    return describe(**{**description.options(), **options})


def absolute_paths(description: RunDescription) -> RunDescription:
    """Every relative path option that exists from here made absolute; ids, ports, hub names, camera
    indices and ``twin`` stay (a file named ``0`` here does not turn camera 0 into a file)."""
    def absolute(value: Any) -> Any:
        if not isinstance(value, str) or not value or value.isdigit() or value == "twin" or os.path.isabs(value):
            return value
        return os.path.abspath(value) if Path(value).exists() else value

    return with_options(description, **{name: absolute(description.options()[name]) for name in PATH_OPTIONS})


def option_namer(source: str = "") -> Callable[[str], str]:
    """How errors name an option: ``@port`` (the command line shows ``--port``), or its key in a
    file (``where.robot.port``; the message then starts with the file, once)."""
    if not source:
        return lambda name: f"@{name}"
    return lambda name: "where." + ".".join(OPTIONS[name])


def check_description(d: RunDescription, source: str = "") -> None:
    """Every combination that cannot work, refused before anything loads or moves. Errors name the
    command's options (``@port``), or with ``source`` (a run.yaml) its keys (``run.yaml:
    where.robot.port ...``)."""
    try:
        _check(d, source)
    except So101Error as exc:
        if not source:
            raise
        raise So101Error(f"{source}: {exc.args[0]}") from None


def _check(d: RunDescription, source: str) -> None:
    n = option_namer(source)
    robot, camera, perception = d.robot, d.camera, d.perception
    if robot.kind not in ROBOTS:
        raise So101Error(f"{n('robot')} {robot.kind}: unknown; robots: {', '.join(ROBOTS)}")
    _check_idle(d, n)
    unused = [n(name) for name, value in (("port", robot.port), ("camera", camera.source),
                                                   ("calibration", robot.calibration)) if value]
    if robot.kind == "sim" and unused:
        raise So101Error(f"{', '.join(unused)}: only for {n('robot')} so101 (the twin has its own arm and camera)")
    if robot.kind == "so101" and not robot.port:
        raise So101Error(f"{n('robot')} so101 needs {n('port')} (the arm's serial port, or 'emulator' for the driver "
                         f"on the twin)")
    if d.scripted and d.real_port:
        raise So101Error(f"{n('ckpt')} scripted: the scripted expert reads the cube's position from the twin; a real "
                         f"arm runs a policy ({n('ckpt')} PATH)")
    if perception.kind not in PERCEPTIONS:
        raise So101Error(f"{n('perception')} {perception.kind}: unknown; choose {' or '.join(PERCEPTIONS)}")
    if d.standin is not None and d.real_port:
        raise So101Error(f"{n('standin')} builds its world on the sim twin: with {n('robot')} sim, or {n('port')} "
                         f"emulator; an emulated arm on a pty carries it from its own side "
                         f"('so101 emulate --twin --standin FILE')")
    if d.standin is not None and not d.scripted and perception.kind != "real":
        raise So101Error(f"{n('standin')}: a policy sees the stand-in through {n('perception')} real {n('seg_ckpt')} "
                         f"PATH (networks on its rendered RGB); the twin's own segmentation and depth would skip "
                         f"every gap of its picture")
    if d.standin is not None and d.world is not None:
        raise So101Error(f"{n('standin')} and {n('perturb')}: one world at a time (the stand-in has every gap the "
                         f"perturbed twin has, named)")
    if d.real_port:
        _check_arm(d, n)
    if d.world is not None and robot.kind != "sim":
        raise So101Error(f"{n('perturb')} changes the sim twin; it works with {n('robot')} sim only")
    if camera.rig is not None and not isinstance(camera.rig, str):
        raise So101Error(f"{n('rig')}: expected the path of a rig.yaml or camera.yaml, got {camera.rig!r}")
    if camera.rig:
        from so101_sim2real.geometry.rig_file import read_rig

        read_rig(camera.rig)  # a typo is refused before anything loads
    from so101_sim2real.perception.backends import check_threads

    check_threads(perception.threads, n("perception_threads"))
    if perception.threads is not None and perception.kind != "real":
        raise So101Error(f"{n('perception_threads')}: only with {n('perception')} real (the twin renders its own "
                         f"observation)")
    _check_period(d, n)
    check_device(d.policy.device, n("device").removesuffix("device"))


def _check_idle(d: RunDescription, n: Callable[[str], str]) -> None:
    """Options that would do nothing where the run happens are refused, not silently ignored."""
    nominal = PerceptionChoice()
    p = d.perception
    by_field = {place[1]: name for name, place in OPTIONS.items() if place[0] == "perception"}
    idle = [n(by_field[f.name]) for f in dataclasses.fields(p)
            if f.name != "kind" and getattr(p, f.name) != getattr(nominal, f.name)]
    if p.kind != "real" and idle:
        raise So101Error(f"{', '.join(idle)}: only with {n('perception')} real (the default, sim, renders the twin's "
                         f"own segmentation and depth)")
    if not d.real_port and p.overlap != nominal.overlap:
        raise So101Error(f"{n('overlap')}: only for an arm on a serial port (the twin's camera renders in the loop's "
                         f"own thread, so it cannot run ahead)")
    if d.scripted and d.policy.trust_pickle:
        raise So101Error(f"{n('trust_pickle')}: only for a {n('ckpt')} file (the scripted expert loads none)")


def _check_arm(d: RunDescription, n: Callable[[str], str]) -> None:
    """An arm on a serial port: each missing piece named, before any network loads."""
    port = d.robot.port
    if not d.robot.calibration:
        raise So101Error(f"{n('port')} {port}: the arm needs its calibration: {n('calibration')} ID (from 'so101 "
                         f"calibrate joints'), a calibration .json, or 'twin' for 'so101 emulate --twin'")
    if not d.camera.source:
        raise So101Error(f"{n('port')} {port}: a real arm sees through {n('camera')}: an index (0), a device "
                         f"(/dev/video2) or a video file")
    if d.perception.kind != "real":
        raise So101Error(f"{n('camera')} {d.camera.source}: a camera image needs {n('perception')} real "
                         f"{n('seg_ckpt')} PATH (the twin's own segmentation and depth exist only in sim; {n('port')} "
                         f"emulator runs the driver on the twin)")
    if not d.perception.seg_ckpt:
        raise So101Error(f"{n('perception')} real needs {n('seg_ckpt')} PATH: the EfficientViT segmentation "
                         f"checkpoint your Lightning training wrote (e.g. outputs/efficientvit_seg/best.ckpt)")
    assert port is not None  # _check_arm runs on a serial port only
    if Path(port).is_dir():
        raise So101Error(f"{n('port')} {port}: that is a folder, not a serial port (they look like /dev/ttyACM0; "
                         f"'so101 motors find-port' finds the arm's)")
    if port.startswith("/") and not Path(port).exists():
        raise So101Error(f"{n('port')} {port}: no such serial port; plug in the arm's USB adapter, or find it with "
                         f"'so101 motors find-port'")


def _check_period(d: RunDescription, n: Callable[[str], str]) -> None:
    if d.period_s is None:
        return
    if d.robot.kind != "so101":
        raise So101Error(f"{n('period')}: only for {n('robot')} so101 (the twin runs at the spec's period, or "
                         f"{n('perturb')}'s, or {n('standin')}'s)")
    if not 0.005 <= d.period_s <= 2.0:  # NaN fails this too
        raise So101Error(f"{n('period')} {d.period_s}: seconds per tick, between 0.005 and 2")


def check_trained_period(d: RunDescription, trained_period_s: float, source: str = "") -> None:
    """An arm's step limit is per tick: a period shorter than the trained one would move it faster."""
    n = option_namer(source)
    if d.period_s is not None and d.period_s < trained_period_s:
        head = f"{source}: " if source else ""
        raise So101Error(f"{head}{n('period')} {d.period_s}: shorter than the {trained_period_s * 1e3:.0f} ms the "
                         f"policy trained at; the arm's step limit is per tick, so it would move faster than trained")


def _get(d: RunDescription, place: tuple[str, ...]) -> Any:
    value: Any = d
    for name in place:
        value = getattr(value, name)
    return value


def _part(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise So101Error(f"{where}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in data.items():
        if key not in fields:
            raise So101Error(f"{where}.{key}: unknown{did_you_mean(key, fields)}")
        if key == "spec_sets":
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise So101Error(f"{where}.{key}: expected a list of KEY=VALUE, got {value!r}")
            value = tuple(value)
        elif key in ("trust_pickle", "overlap") and value is not None:
            value = _typed(value, bool, f"{where}.{key}")
        elif value is not None and key == "threads":
            value = _typed(value, int, f"{where}.{key}")
        elif value is not None and not isinstance(value, str):
            value = str(value) if isinstance(value, int) and key in ("source", "port") else value
            if not isinstance(value, str):
                raise So101Error(f"{where}.{key}: expected text, got {value!r}")
        out[key] = value
    return cls(**out)


def _typed(value: Any, kind: type, where: str) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise So101Error(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise So101Error(f"{where}: expected a number, got {value!r}")
    if kind is int and not float(value).is_integer():
        raise So101Error(f"{where}: expected a whole number, got {value!r}")
    return kind(value)
