"""``so101 reward``: label recordings, train the reward classifier, evaluate it.

Thin commands over :mod:`so101_sim2real.reward.labels`, :mod:`~so101_sim2real.reward.classifier`
and :mod:`~so101_sim2real.reward.evaluate`: each parses, validates, calls the library and
prints the result.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional, cast

import typer

from so101_sim2real.cli import PLAIN
from so101_sim2real.errors import So101Error

if TYPE_CHECKING:
    from so101_sim2real.reward.classifier import Dataset, InputKind
    from so101_sim2real.reward.metrics import Metrics

reward_app = typer.Typer(
    help="The reward classifier: a small CNN that says whether a frame shows success (the cube grasped and "
         "lifted), to end episodes and give the reward on a real arm. Label recordings (label), train on them "
         "(train), score it on others (eval).",
    no_args_is_help=True,
    **PLAIN,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
LabelsOpt = Annotated[Optional[list[Path]], typer.Option("--labels", help="A labels file per recording, in the "
                                                                         "order of the recordings (repeatable); "
                                                                         "default: each recording's labels.json, "
                                                                         "else the twin's rule.")]
TargetOpt = Annotated[float, typer.Option("--target-precision", help="Also report the lowest threshold whose "
                                                                     "precision reaches this.")]


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _summary(metrics: Metrics) -> list[str]:
    c = metrics.confusion
    lines = [f"{metrics.frames} frames ({metrics.positives} success, {metrics.negatives} not) at threshold "
             f"{metrics.threshold:.2f}: balanced accuracy {_fmt(metrics.balanced_accuracy)}, precision "
             f"{_fmt(metrics.precision)}, recall {_fmt(metrics.recall)}, F1 {_fmt(metrics.f1)}, ROC AUC "
             f"{_fmt(metrics.roc_auc)}",
             f"confusion: {c['tp']} true positives, {c['fp']} false positives, {c['tn']} true negatives, "
             f"{c['fn']} false negatives"]
    if metrics.threshold_at_target_precision is None:
        lines.append(f"no threshold reaches precision {metrics.target_precision:.2f}")
    else:
        lines.append(f"precision {metrics.target_precision:.2f} from threshold "
                     f"{metrics.threshold_at_target_precision:.3f} (recall there "
                     f"{_fmt(metrics.recall_at_target_precision)})")
    return lines


def _datasets(recordings: list[Path], labels: list[Path] | None) -> list[Dataset]:
    from so101_sim2real.reward.classifier import Dataset

    labels = labels or []
    if labels and len(labels) != len(recordings):
        raise So101Error(f"--labels: {len(labels)} file(s) for {len(recordings)} recording(s); give one per "
                         f"recording, in the same order")
    return [Dataset(r, labels[i] if labels else None) for i, r in enumerate(recordings)]


@reward_app.command("label")
def label(
    recording: Annotated[Path, typer.Argument(help="A recording folder ('so101 infer --record DIR').")],
    episode: Annotated[Optional[int], typer.Option("--episode", help="The episode to label or draw (the number "
                                                                     "in episode_NNNN.npz).")] = None,
    first_success: Annotated[Optional[int], typer.Option("--first-success", help="The first row from which every "
                                                                                 "frame to the episode's end shows "
                                                                                 "success.")] = None,
    none: Annotated[bool, typer.Option("--none", help="No frame of --episode shows success.")] = False,
    twin: Annotated[bool, typer.Option("--twin", help="Label every episode of a twin recording by the "
                                                      "simulator's rule (a person's labels are kept).")] = False,
    sheet: Annotated[Optional[Path], typer.Option("--contact-sheet", help="Write a PNG grid of --episode's frames "
                                                                          "with their row numbers, to pick "
                                                                          "--first-success from.")] = None,
    every: Annotated[int, typer.Option("--every", help="With --contact-sheet: every Nth row.")] = 1,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="The labels file (default: labels.json in "
                                                                    "the recording).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Label a recording's episodes: where success starts, by hand or by the twin's rule.

    The labels file (labels.json in the recording, JSON a person can edit) gives per episode the
    first row from which the frames show success (null: none) and who said so (twin or person).
    Without an action, prints the labels. Examples:

      so101 reward label REC --twin

      so101 reward label REC --episode 3 --contact-sheet ep3.png

      so101 reward label REC --episode 3 --first-success 41    (or --none)
    """
    from so101_sim2real.control.recording import Recording
    from so101_sim2real.reward import labels as L
    from so101_sim2real.reward.evaluate import contact_sheet

    setting = first_success is not None or none
    actions = [name for name, given in (("--twin", twin), ("--first-success/--none", setting),
                                        ("--contact-sheet", sheet is not None)) if given]
    if len(actions) > 1:
        raise So101Error(f"{' and '.join(actions)}: one at a time")
    if first_success is not None and none:
        raise So101Error("--first-success and --none: one or the other")
    if (setting or sheet is not None) and episode is None:
        raise So101Error(f"{actions[0]}: needs --episode K")
    if episode is not None and not actions:
        raise So101Error("--episode: only with --first-success, --none or --contact-sheet")
    if twin and episode is not None:
        raise So101Error("--twin labels every episode; drop --episode")
    if sheet is None and every != 1:
        raise So101Error("--every: only with --contact-sheet")
    rec = Recording(recording)
    if sheet is not None:
        assert episode is not None  # checked above: --contact-sheet needs --episode
        path = contact_sheet(rec, episode, sheet, every=every, labels_file=labels)
        typer.echo(json.dumps({"contact_sheet": str(path)}) if as_json else f"wrote {path}")
        return
    if setting:
        assert episode is not None  # checked above: --first-success/--none need --episode
        entry = L.set_label(rec, episode, first_success, labels)
        path = L.labels_path(rec, labels)
        if as_json:
            typer.echo(json.dumps({"labels": str(path), **asdict(entry)}))
        else:
            what = "no success" if entry.first_success is None else f"success from row {entry.first_success}"
            typer.echo(f"episode {entry.episode}: {what} (person); wrote {path}")
        return
    if twin:
        result, kept = L.write_twin_labels(rec, labels)
        path = L.labels_path(rec, labels)
        if as_json:
            typer.echo(json.dumps({"labels": str(path), "episodes": len(result.episodes), "kept_person": kept}))
        else:
            successes = sum(e.first_success is not None for e in result.episodes.values())
            typer.echo(f"wrote {path}: {len(result.episodes)} episode(s), {successes} with success frames"
                       + (f"; kept {kept} label(s) by a person" if kept else ""))
        return
    current = L.labels_for(rec, labels)  # a twin recording without a file: what --twin would write
    if as_json:
        typer.echo(json.dumps({"labels": current.origin,
                               "episodes": [asdict(e) for _, e in sorted(current.episodes.items())]}))
        return
    for meta in rec.episodes:
        k = int(meta["index"])
        e = current.episodes.get(k)
        what = "unlabelled" if e is None else \
            f"no success ({e.source})" if e.first_success is None else \
            f"success from row {e.first_success} of {meta['steps']} ({e.source})"
        typer.echo(f"episode {k}: {what}")
    if current.origin == "twin":
        typer.echo(f"(the twin's rule; no labels file yet: --twin writes {L.labels_path(rec, labels)})")


@reward_app.command("train")
def train(
    recordings: Annotated[list[Path], typer.Argument(help="Labelled recording folders.")],
    out: Annotated[Path, typer.Option("--out", help="The classifier folder to write (weights.safetensors + "
                                                    "classifier.yaml).")],
    input_kind: Annotated[str, typer.Option("--input", help="obs: the policy's frame (seg + disparity, which "
                                                            "lighting does not change); rgb: the camera image, "
                                                            "cropped and resized as the spec says (the "
                                                            "recordings need RGB).")] = "obs",
    labels: LabelsOpt = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training frames.")] = 25,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Frames per update.")] = 64,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 1e-3,
    heldout: Annotated[float, typer.Option("--heldout", help="Fraction of the episodes held out (whole "
                                                             "episodes) for the metrics.")] = 0.25,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split, the initial weights and the "
                                                     "batches.")] = 0,
    threshold: Annotated[float, typer.Option("--threshold", help="The threshold saved with the classifier and "
                                                                 "used for the metrics.")] = 0.5,
    target_precision: TargetOpt = 0.95,
    device: Annotated[str, typer.Option("--device", help="Torch device.")] = "cpu",
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train the reward classifier on labelled recordings, holding whole episodes out to score it.

    Each recording's labels come from --labels, its labels.json, or (twin recordings) the
    simulator's rule. The loss weighs success frames up by the class ratio; frames are shifted
    by up to 4 pixels (DrQ's augmentation). The folder is written in one rename.
    """
    from so101_sim2real.reward.classifier import TrainOptions, train_classifier

    opts = TrainOptions(epochs=epochs, batch_size=batch_size, lr=lr, heldout=heldout, seed=seed, threshold=threshold,
                        target_precision=target_precision, device=device)
    # Any string typer got: train_classifier checks it (after the other options, with a did-you-mean) and
    # refuses one that is not an InputKind, so the CLI passes it unchecked rather than repeat that check.
    result = train_classifier(_datasets(recordings, labels), out, cast("InputKind", input_kind), opts,
                              overwrite=force)
    if as_json:
        typer.echo(json.dumps({"out": str(result.folder), "train_frames": result.train_frames,
                               "train_positives": result.train_positives, "seconds": round(result.seconds, 1),
                               "heldout_episodes": [list(k) for k in result.heldout_episodes],
                               "metrics": result.metrics.to_dict() if result.metrics else None}))
        return
    typer.echo(f"trained on {result.train_frames} frames ({result.train_positives} success) in "
               f"{result.seconds:.0f} s; wrote {result.folder}/")
    if result.metrics is None:
        typer.echo("no episodes held out: no metrics (score it with 'so101 reward eval')")
        return
    typer.echo(f"held out {len(result.heldout_episodes)} episode(s):")
    for line in _summary(result.metrics):
        typer.echo("  " + line)


@reward_app.command("eval")
def evaluate(
    classifier: Annotated[Path, typer.Argument(help="A classifier folder from 'so101 reward train'.")],
    recordings: Annotated[list[Path], typer.Argument(help="Labelled recording folders to score it on.")],
    labels: LabelsOpt = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Threshold for the confusion matrix "
                                                                           "(default: the classifier's).")] = None,
    target_precision: TargetOpt = 0.95,
    mistakes: Annotated[Optional[Path], typer.Option("--mistakes", help="Write a PNG of the worst false positives "
                                                                        "and false negatives.")] = None,
    worst: Annotated[int, typer.Option("--worst", help="With --mistakes: frames of each kind.")] = 8,
    as_json: JsonOpt = False,
) -> None:
    """Score a classifier on labelled recordings: precision, recall, F1, balanced accuracy, ROC AUC,
    the confusion matrix, and the threshold that reaches a target precision."""
    from so101_sim2real.reward import evaluate as E
    from so101_sim2real.reward.classifier import load_classifier

    if threshold is not None and not 0.0 < threshold < 1.0:
        raise So101Error(f"--threshold {threshold}: a probability, 0 < t < 1")
    if not 0.0 < target_precision <= 1.0:
        raise So101Error(f"--target-precision {target_precision}: 0 < p <= 1")
    if worst < 1:
        raise So101Error("--worst must be at least 1")
    model = load_classifier(classifier)
    metrics = E.evaluate(model, _datasets(recordings, labels), threshold, target_precision, mistakes, worst)
    if as_json:
        typer.echo(json.dumps({**metrics.to_dict(), "mistakes": str(mistakes) if mistakes else None}))
        return
    for line in _summary(metrics):
        typer.echo(line)
    if mistakes:
        typer.echo(f"wrote {mistakes}")
