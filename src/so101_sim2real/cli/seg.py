"""``so101 seg``: fit the segmentation architecture to labelled frames (:mod:`~so101_sim2real.perception.seg_train`)."""

from __future__ import annotations

import json
from collections.abc import Sized
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import numpy as np
import typer

from so101_sim2real.cli import PLAIN
from so101_sim2real.cli.progress import _Progress
from so101_sim2real.errors import So101Error

if TYPE_CHECKING:
    from so101_sim2real.perception.label_folder import LabelledPictures
    from so101_sim2real.perception.seg_train import Labelled
    from so101_sim2real.sim.standin import StandIn
    from so101_sim2real.sim.standin_frames import LabelledFrames

# Half the draws carry a gap: a network that has seen the twin's own look beside each gap reads every
# world between the twin and the stand-in (one that only saw the wooden table calls the twin's floor background).
GAP_SHARE = 0.5

seg_app = typer.Typer(
    help="The segmentation network (EfficientViT-B0 + FPN, the user's architecture): fit it to labelled frames "
         "(train), and lay a recording's pictures out for a person to label (frames).",
    no_args_is_help=True,
    **PLAIN,
)


@seg_app.command("train")
def train(
    out: Annotated[Path, typer.Option("--out", help="The checkpoint to write (.ckpt, Lightning layout, read by "
                                                    "--seg-ckpt).")],
    standin: Annotated[Optional[Path], typer.Option("--standin", help="Learn from the twin's renders of this stand-in "
                                                                      "world, labelled by the simulator, its gaps "
                                                                      "randomised around their amounts "
                                                                      "(configs/standin.yaml).")] = None,
    labelled: Annotated[Optional[Path], typer.Option("--labelled", help="Learn from the pictures a person labelled: "
                                                                        "a folder of images/ and masks/ (so101 seg "
                                                                        "frames makes one from a recording). With "
                                                                        "--standin, about a quarter of each epoch; "
                                                                        "their held-out share picks the epoch.")
                                        ] = None,
    frames: Annotated[int, typer.Option("--frames", help="Frames to render (about 0.4 s each here).")] = 400,
    held_out: Annotated[float, typer.Option("--held-out", help="Share of the frames kept out of training, to "
                                                               "score it.")] = 0.2,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training frames.")] = 12,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    lr: Annotated[float, typer.Option("--lr", help="AdamW's learning rate (cosine decay to 0).")] = 2e-3,
    init: Annotated[Optional[Path], typer.Option("--init", help="Start from this segmentation checkpoint "
                                                                "instead of random weights.")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="The training curve and per-class IoU (default: "
                                                                "OUT with .png).")] = None,
    target_miou: Annotated[Optional[float], typer.Option("--target-miou", help="Keep the epoch whose held-out mean "
                                                                         "IoU is nearest this (e.g. 0.81, your "
                                                                         "network's), not the best: a stand-in's "
                                                                         "network should err as yours does.")] = None,
    gap_share: Annotated[float, typer.Option("--gap-share", help="Each draw of the world keeps each gap with this "
                                                                 "probability, so the network also reads the twin's "
                                                                 "own look and every gap alone (1: every frame has "
                                                                 "every gap).")] = GAP_SHARE,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="End with the report as one JSON line.")] = False,
) -> None:
    """Fit the segmentation network to labelled frames and score it per class on held-out ones: the twin's renders
    of a stand-in world (--standin), pictures a person labelled (--labelled), or both.

    Renders alone make a stand-in's network: it knows the stand-in's picture, not your camera's, and a real arm
    refuses it. With your own labelled pictures it is a network for your camera.

    so101 seg train --standin configs/standin.yaml --out standin-seg.ckpt, then so101 infer ... --standin
    configs/standin.yaml --perception real --seg-ckpt standin-seg.ckpt.

    so101 seg frames REC --out labels --seg-ckpt yours.ckpt; correct labels/masks/; so101 seg train --labelled
    labels --init yours.ckpt --out tuned.ckpt.
    """
    from so101_sim2real.perception.label_folder import read_labelled
    from so101_sim2real.perception.seg_train import (
        SegTrainConfig,
        class_iou,
        plot_training,
        save_checkpoint,
        train_segmentation,
    )
    from so101_sim2real.perception.segmentation import load_segmentation
    from so101_sim2real.sim.standin import load_standin
    from so101_sim2real.spec import default_spec

    if standin is None and labelled is None:
        raise So101Error("nothing to learn from: give --standin WORLD (the twin's renders), --labelled FOLDER (a "
                         "person's), or both")
    check_fit_options(frames, held_out, epochs, batch_size, lr, gap_share)
    if out.is_dir():
        raise So101Error(f"--out {out}: a folder; name the checkpoint file (e.g. {out / 'seg.ckpt'})")
    if target_miou is not None and not 0 < target_miou < 1:
        raise So101Error(f"--target-miou {target_miou}: a mean IoU between 0 and 1")
    world = load_standin(standin) if standin else None
    start = load_segmentation(init).net.train() if init else None  # a bad file fails before the renders
    classes = list(default_spec().observation.segmentation.real_classes)
    if start is not None and start.num_classes != len(classes):
        raise So101Error(f"--init {init}: {start.num_classes} classes; the spec's real class table has "
                         f"{len(classes)} ({', '.join(classes)})")
    pictures = read_labelled(labelled, classes) if labelled else None
    renders = rendered_frames(world, frames, held_out, seed, gap_share=gap_share) if world else None
    training, held = training_sets(renders, pictures.split(held_out, seed) if pictures else None)
    cfg = SegTrainConfig(epochs, batch_size, lr, seed=seed, target_miou=target_miou)
    steps = _Progress(epochs, "epoch")

    def scored(e: dict) -> None:
        steps.advance(f"epoch {e['epoch']:>3}: loss {e['loss']:.3f}, held-out mIoU {e['miou']:.3f} "
                      f"({e['seconds']:.0f} s)")

    net, report = train_segmentation(training, held, classes, cfg, init=start, on_epoch=scored,
                                     on_step=lambda s, n, loss: steps.note(f"step {s}/{n} loss {loss:.3f}"))
    steps.close()
    report.source = source(standin, frames, seed, gap_share, labelled, pictures)
    if pictures is not None:
        report.labelled_frames = len(pictures)
        report.train_frames = (len(renders[0]) if renders else 0) + len(pictures) - report.held_out_frames
        if renders is not None:  # the epoch was the person's pictures' pick: how it reads the renders too
            report.rendered_iou = class_iou(net, renders[1], classes)
            report.rendered_miou = float(np.mean(list(report.rendered_iou.values())))
    # a network is the user's own only when every picture it learned from is their camera's
    path = save_checkpoint(out, net, report, standin=pictures is None or bool(pictures.twin))
    picture = plot_training(report, plot or out.with_suffix(".png"))
    typer.echo(f"kept epoch {report.best_epoch}: " + ", ".join(f"{k} {v:.3f}" for k, v in report.per_class_iou.items())
               + f"; mean {report.miou:.3f} (the user's own network: val IoU 0.81"
               + ("" if target_miou is None else f"; the epoch nearest {target_miou:g} kept") + ")")
    if report.rendered_miou is not None:
        typer.echo(f"on the held-out renders: mean {report.rendered_miou:.3f}")
    typer.echo(f"wrote {path} and {picture}")
    if as_json:
        typer.echo(json.dumps(asdict(report)))


@seg_app.command("frames")
def frames_for_labelling(
    recording: Annotated[Path, typer.Argument(help="A recording folder with camera images (so101 infer ... "
                                                   "--record DIR).")],
    out: Annotated[Path, typer.Option("--out", help="The folder to label: images/ written here, masks/ beside "
                                                    "them.")],
    every: Annotated[int, typer.Option("--every", help="One picture every this many ticks (neighbours look "
                                                       "alike).")] = 10,
    seg_ckpt: Annotated[Optional[Path], typer.Option("--seg-ckpt", help="Write this network's guesses to "
                                                                        "guesses/, for a person to correct into "
                                                                        "masks/ rather than paint from "
                                                                        "nothing.")] = None,
) -> None:
    """Pictures from a recording, laid out for a person to label: images/NAME.png and, with --seg-ckpt, the
    network's guess as guesses/NAME.png. A person saves each corrected mask as masks/NAME.png (class ids as
    grey or palette PNG, classes.txt; 0 = unlabeled, ignored): any labelling tool that writes class-id PNGs
    will do. A guess is never a label. Then: so101 seg train --labelled OUT.
    """
    from so101_sim2real.control.recording import Recording
    from so101_sim2real.perception.label_folder import Picture, write_pictures
    from so101_sim2real.perception.segmentation import load_segmentation

    if every < 1:
        raise So101Error(f"--every {every}: at least 1")
    if not recording.is_dir():
        raise So101Error(f"{recording}: no such recording folder")
    source = Recording(recording)
    model = load_segmentation(seg_ckpt) if seg_ckpt else None
    classes = list(source.spec.observation.segmentation.real_classes)
    if model is not None and model.num_classes != len(classes):
        raise So101Error(f"--seg-ckpt {seg_ckpt}: {model.num_classes} classes; the recording's spec has "
                         f"{len(classes)} ({', '.join(classes)})")
    where = source.description
    # a twin's picture (the sim, the in-process emulator, or 'emulate --twin'): a network that learns it is a
    # stand-in's, and keeps the mark a real arm refuses
    twin = where is not None and (where.robot.kind == "sim" or where.robot.port == "emulator"
                                  or where.robot.calibration == "twin")
    pictures = []
    for i in range(len(source.episodes)):
        arrays = source.load(i)
        if "rgb_jpeg" not in arrays:
            raise So101Error(f"{recording}: episode {i} holds no camera images (recorded without them)")
        for row in range(0, len(arrays["rgb_offsets"]) - 1, every):
            pictures.append(Picture(f"{recording.name}_e{i:03d}_t{row:04d}", source.rgb(arrays, row),
                                    {"recording": str(recording.resolve()), "episode": i, "tick": row, "twin": twin}))
    count = write_pictures(out, pictures, classes, guess=model.predict if model else None)
    typer.echo(f"wrote {count} pictures to {out / 'images'}" + (f" and the network's guesses to {out / 'guesses'}"
                                                              if model else "")
               + f"; save each labelled mask to {out / 'masks'} (class ids in {out / 'classes.txt'}), then so101 "
                 f"seg train --labelled {out}")


def training_sets(renders: tuple[LabelledFrames, LabelledFrames] | None,
                  pictures: tuple[LabelledPictures, LabelledPictures] | None) -> tuple[Labelled, Labelled]:
    """(training, held-out) from the renders' and the person's (training, held-out) splits: both mixed for
    training; the person's held-out pictures pick the epoch, since their camera is the one that counts."""
    from so101_sim2real.perception.seg_train import mixed

    if renders is None:
        assert pictures is not None  # the command asks for one of the two
        return pictures
    if pictures is None:
        return renders
    return mixed(renders[0], pictures[0]), pictures[1]


def check_fit_options(frames: int, held_out: float, epochs: int, batch_size: int, lr: float,
                      gap_share: float = 1.0) -> None:
    """What fitting a network to rendered frames needs of its options, refused in one line."""
    if frames < 5 or not 0 < held_out < 1 or epochs < 1 or batch_size < 1 or lr <= 0:
        raise So101Error("--frames at least 5, --held-out in (0, 1), --epochs, --batch-size at least 1, --lr "
                         "positive")
    if not 0 < gap_share <= 1:
        raise So101Error(f"--gap-share {gap_share}: a probability above 0, at most 1")
    if frames - max(1, round(frames * held_out)) < 1:
        raise So101Error(f"--held-out {held_out} of {frames} frames leaves none to train on")


def source(standin: Path | None, frames: int, seed: int, gap_share: float, labelled: Path | None = None,
           pictures: Sized | None = None) -> str:
    """Where a network learned, as its report says it."""
    parts = []
    if standin is not None:
        parts.append(f"twin renders of a stand-in world ({standin}), {frames} frames, seed {seed}, each gap in "
                     f"{gap_share:.0%} of the draws")
    if labelled is not None:
        parts.append(f"{len(pictures or ())} pictures a person labelled ({labelled})")
    return "; ".join(parts)


def rendered_frames(world: StandIn, frames: int, held_out: float, seed: int, with_depth: bool = False,
                    gap_share: float = 1.0) -> tuple[LabelledFrames, LabelledFrames]:
    """The stand-in's labelled renders (a bar while they render), split into training and held-out."""
    from so101_sim2real.sim.standin_frames import standin_frames
    from so101_sim2real.spec import default_spec

    rendering = _Progress(frames, "frame")

    def rendered(_count: int) -> None:
        rendering.bar.update(1)

    made = standin_frames(default_spec(), world, frames, seed=seed, on_frame=rendered, with_depth=with_depth,
                          keep=gap_share)
    rendering.close()
    training, held = made.split(held_out, seed)
    typer.echo(f"{len(training)} training and {len(held)} held-out frames of the {world.summary()}", err=True)
    return training, held
