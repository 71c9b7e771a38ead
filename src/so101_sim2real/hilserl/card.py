"""A policy's model card for the hub, and its upload (``so101 models push``).

The card says what a user needs to run the policy and to trust it: the spec it acts under
(observation, state, action, period), where it came from (the sim checkpoint, then the
HIL-SERL run: episodes, interventions, reward, success early and late), the perception
networks it expects, and the MuJoCo version it was trained under. Its front matter follows the
hub's model cards as LeRobot writes them (license, pipeline_tag robotics, tags, datasets).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from safetensors import safe_open

from so101_sim2real.control.recording import Recording
from so101_sim2real.errors import So101Error
from so101_sim2real.hilserl.curves import metric_rows, status
from so101_sim2real.perception.hub import file_sha256
from so101_sim2real.policy.checkpoint import NATIVE_SPEC, NATIVE_WEIGHTS, load_checkpoint
from so101_sim2real.spec import Spec

CARD_FILE = "README.md"


@dataclass(frozen=True)
class CardFacts:
    """What the card states, gathered from the policy folder and the run folder around it."""

    policy: Path
    spec: Spec
    origin: dict[str, Any]  # the sim checkpoint it was converted from: file, format, counters
    run: dict[str, Any] | None  # the HIL-SERL run that wrote it (None: a converted sim policy)
    perception: dict[str, str | None]
    mujoco: str


def gather(policy: str | Path) -> CardFacts:
    """The facts of a native policy folder (``so101 convert`` or ``RUN/policy``)."""
    policy = Path(policy)
    if not (policy / NATIVE_WEIGHTS).is_file() or not (policy / NATIVE_SPEC).is_file():
        raise So101Error(f"{policy}: not a policy folder ({NATIVE_WEIGHTS} and {NATIVE_SPEC}); push RUN/policy or a "
                         f"'so101 convert' output")
    ckpt = load_checkpoint(policy)
    with safe_open(str(policy / NATIVE_WEIGHTS), "pt") as f:
        info = json.loads((f.metadata() or {}).get("so101", "{}"))
    origin = {"file": Path(str(info.get("source", "?"))).name, "format": info.get("source_format", "?"),
              "counters": ckpt.counters}
    run_dir = policy.parent
    run = _run_facts(run_dir) if (run_dir / "run.yaml").is_file() and policy.name == "policy" else None
    perception: dict[str, str | None] = {"kind": "sim", "seg_ckpt": None, "seg_sha256": None, "depth_model": None}
    if run is not None:
        where = run["options"]["where"]["perception"]
        seg = where.get("seg_ckpt")
        perception = {"kind": where.get("kind"), "seg_ckpt": Path(seg).name if seg else None,
                      "seg_sha256": file_sha256(Path(seg)) if seg and Path(seg).is_file() else None,
                      "depth_model": where.get("depth_model") if where.get("kind") == "real" else None}
    import mujoco

    return CardFacts(policy, ckpt.spec, origin, run, perception, mujoco.__version__)


def _run_facts(run_dir: Path) -> dict[str, Any]:
    facts = status(run_dir)
    rows = [r for r in metric_rows(run_dir) if not r.get("interrupted")]
    first, last = rows[:20], rows[-20:]

    def rate(block: list[dict]) -> float | None:
        return sum(bool(r["success"]) for r in block) / len(block) if block else None

    return {**facts, "success_first_20": rate(first), "success_last_20": rate(last),
            "intervention_share": _intervention_share(run_dir / "episodes"), "finished_episodes": len(rows)}


def _intervention_share(episodes: Path) -> float | None:
    """The share of the run's stored steps under intervention, from the episode files themselves (the
    metrics count one session's interventions, and a resumed run has several)."""
    if not (episodes / "recording.json").is_file():
        return None
    recording = Recording(episodes)
    flags = [recording.load(i).get("is_intervention") for i in range(len(recording.episodes))]
    kept = [f for f in flags if f is not None]
    total = sum(len(f) for f in kept)
    return float(sum(f.sum() for f in kept)) / total if total else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def model_card(facts: CardFacts, repo_id: str, dataset: str | None = None) -> str:
    """The card's text: YAML front matter, then what the policy is and how it was made."""
    spec, obs = facts.spec, facts.spec.observation
    front: dict[str, Any] = {"license": "apache-2.0", "library_name": "so101-sim2real", "pipeline_tag": "robotics",
                             "tags": ["robotics", "so101", "drqv2", "sim2real", "hil-serl", "reinforcement-learning"],
                             "model_name": "drqv2"}
    if dataset:
        front["datasets"] = [dataset]
    fields = ", ".join(f"{f.name} ({f.size})" for f in spec.state.fields)
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
        f"# {repo_id.split('/')[-1]}", "",
        f"A DrQ-v2 pixel policy for the SO-101 arm with a wrist camera: *{spec.episode.task}* "
        f"(spec `{spec.name}`). It runs with the so101-sim2real toolkit: `so101 infer --ckpt DIR`.", "",
        "## What it sees and does", "",
        "| | |", "|---|---|",
        f"| observation | {' + '.join(obs.channels)}, {obs.image_size[0]}x{obs.image_size[1]}, "
        f"{obs.frame_stack} frames ({obs.stack_order}), {obs.crop} crop of the {obs.source_size[1]}x"
        f"{obs.source_size[0]} camera |",
        f"| segmentation classes | {', '.join(obs.segmentation.classes)} (ids 0-{len(obs.segmentation.classes) - 1})"
        f" |" if obs.segmentation else "| segmentation | - |",
        f"| state | {spec.state.size}-D: {fields} |",
        f"| action | {spec.action.dim}-D {spec.action.type}, in [-1, 1], x {spec.action.xyz_scale_m} m per step |",
        f"| period | trained at {spec.control.period_s * 1000:.0f} ms per action |",
        f"| simulator | MuJoCo {spec.simulator.version or 'unknown'} (grasps on the edge of success differ between "
        f"versions); this card was made under MuJoCo {facts.mujoco} |", "",
        "## How it was made", "",
        f"- From simulation: `{facts.origin['file']}` ({facts.origin['format']}), "
        f"{_counters(facts.origin['counters'])}.",
    ]
    lines += _run_lines(facts.run)
    lines += ["", "## Perception it expects", ""]
    p = facts.perception
    if p["kind"] == "real":
        lines += [f"- Segmentation: `{p['seg_ckpt']}`" + (f" (sha256 `{p['seg_sha256'][:16]}...`)"
                                                           if p["seg_sha256"] else ""),
                  f"- Depth: `{p['depth_model']}` (disparity per the spec: {obs.disparity.rule}, "
                  f"{obs.disparity.normalise})" if obs.disparity else "- Depth: -",
                  "- The same networks it was fine-tuned with: other weights give other observations (check with "
                  "`so101 compare-sim`)."]
    else:
        lines += ["- The simulator's own segmentation and depth (trained in the twin): on a real arm it needs "
                  "segmentation and depth networks that reproduce them (`so101 perceive`)."]
    lines += ["", "## Files", "", f"- `{NATIVE_WEIGHTS}`: the actor, critics and encoder (safetensors)",
              f"- `{NATIVE_SPEC}`: the spec above, whole", ""]
    return "\n".join(lines)


def _counters(counters: dict[str, Any]) -> str:
    steps, episodes = counters.get("_main_loop_iterations"), counters.get("_global_env_episode")
    return f"{steps} training iterations, {episodes} episodes" if steps is not None else "no training counters kept"


def _run_lines(run: dict[str, Any] | None) -> list[str]:
    if run is None:
        return ["- Not fine-tuned: the policy as converted from simulation."]
    opts, c = run["options"], run["counters"]
    where = opts["where"]
    world = ("a real arm" if where["robot"]["kind"] == "so101" and where["robot"].get("port") not in (None, "emulator")
             else "the stand-in world" if where.get("standin") else "the perturbed twin" if where.get("world")
             else "the twin")
    judged = run.get("classifier")
    lines = [f"- Fine-tuned with HIL-SERL on {world}: {run['finished_episodes']} episodes, {c['env_steps']} steps, "
             f"{c['updates']} updates (UTD {run['utd']:.2f}), reward `{opts['reward']}`, interventions "
             f"`{opts['intervene']}` on {_pct(run['intervention_share'])} of the steps"
             + (f", {run['takeovers']} leader takeovers" if run.get("takeovers") is not None else "") + ".",
             f"- Success during the session (with interventions): first 20 episodes {_pct(run['success_first_20'])}, "
             f"last 20 {_pct(run['success_last_20'])}."]
    if judged:
        lines.append(f"- The reward classifier against the task's rule: {judged['false_successes']} false successes "
                     f"and {judged['missed']} missed in {judged['episodes']} episodes.")
    return lines


def _network_errors() -> tuple[type[BaseException], ...]:
    """What an upload raises when the hub cannot be reached or refuses: OSError (requests' errors and
    huggingface_hub's HTTP errors), and the HTTP client's own where it is httpx (newer hubs)."""
    errors: list[type[BaseException]] = [OSError]
    for name in ("httpx", "httpx2"):
        try:
            errors.append(__import__(name).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def push(facts: CardFacts, repo_id: str, private: bool = True, dataset: str | None = None,
         api: Callable[[], Any] | None = None) -> str:
    """Upload the policy folder and its card to the hub as ``repo_id`` (private unless told); the URL."""
    if "/" not in repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise So101Error(f"@repo_id {repo_id}: expected OWNER/NAME, e.g. alice/so101-lift-cube")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi
    hub = api()
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "policy"
        shutil.copytree(facts.policy, staged)
        (staged / CARD_FILE).write_text(model_card(facts, repo_id, dataset))
        try:
            url = hub.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            # a repo that was there keeps its visibility through create_repo: say it again
            if hasattr(hub, "update_repo_settings"):
                hub.update_repo_settings(repo_id=repo_id, repo_type="model", private=private)
            else:  # huggingface_hub before 0.25
                hub.update_repo_visibility(repo_id, private=private, repo_type="model")  # type: ignore[union-attr]
            hub.upload_folder(folder_path=str(staged), repo_id=repo_id, repo_type="model",
                              commit_message="so101 models push: policy and model card")
        except _network_errors() as exc:
            raise So101Error(f"cannot upload to the hub ({str(exc).splitlines()[0][:160]}); check the internet and "
                             f"'huggingface-cli login'") from None
    return str(url)
