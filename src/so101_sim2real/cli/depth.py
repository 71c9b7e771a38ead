"""``so101 depth``: fit the Depth Anything architecture to a stand-in's disparity.

A thin command over :mod:`~so101_sim2real.perception.depth_fit`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from so101_sim2real.cli import PLAIN
from so101_sim2real.cli.progress import _Progress
from so101_sim2real.cli.seg import GAP_SHARE, check_fit_options, rendered_frames, source
from so101_sim2real.errors import So101Error

depth_app = typer.Typer(
    help="Depth Anything V2 Small fitted to a stand-in world's disparity (fit): a stand-in's depth, never real "
         "depth.",
    no_args_is_help=True,
    **PLAIN,
)


@depth_app.command("fit")
def fit(
    out: Annotated[Path, typer.Option("--out", help="The model folder to write (save_pretrained layout, read by "
                                                    "--depth-model).")],
    standin: Annotated[Path, typer.Option("--standin", help="Learn from the twin's renders of this stand-in "
                                                            "world and their depth, its gaps randomised around "
                                                            "their amounts (configs/standin.yaml).")],
    frames: Annotated[int, typer.Option("--frames", help="Frames to render (about 0.4 s each here).")] = 300,
    held_out: Annotated[float, typer.Option("--held-out", help="Share of the frames kept out, to score it.")] = 0.2,
    epochs: Annotated[int, typer.Option("--epochs")] = 8,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    lr: Annotated[float, typer.Option("--lr", help="AdamW's learning rate (cosine decay to 0).")] = 1e-4,
    init: Annotated[Optional[str], typer.Option("--init", help="Start from this Depth Anything folder or cached hub "
                                                               "id instead of random weights.")] = None,
    gap_share: Annotated[float, typer.Option("--gap-share", help="Each draw of the world keeps each gap with this "
                                                                 "probability, so the network also reads the twin's "
                                                                 "own look and every gap alone (1: every frame has "
                                                                 "every gap).")] = GAP_SHARE,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="End with the report as one JSON line.")] = False,
) -> None:
    """Fit Depth Anything V2 Small to the twin's disparity in a stand-in world and score it on held-out frames
    (rank correlation, error in 8-bit levels). The folder is marked as a stand-in's: a real arm refuses it.

    so101 depth fit --standin configs/standin.yaml --out standin-depth, then ... --standin configs/standin.yaml
    --perception real --seg-ckpt standin-seg.ckpt --depth-model standin-depth.
    """
    from so101_sim2real.perception.depth import load_depth
    from so101_sim2real.perception.depth_fit import DepthFitConfig, fit_depth, save_depth
    from so101_sim2real.sim.standin import load_standin

    check_fit_options(frames, held_out, epochs, batch_size, lr, gap_share)
    if out.is_file():
        raise So101Error(f"--out {out}: a file; name a folder for the model")
    world = load_standin(standin)
    start = load_depth(init, option="init").net.train() if init else None  # a bad source fails before the renders
    training, held = rendered_frames(world, frames, held_out, seed, with_depth=True, gap_share=gap_share)
    assert training.depth_m is not None and held.depth_m is not None  # rendered with_depth
    steps = _Progress(epochs, "epoch")

    def scored(e: dict) -> None:
        steps.advance(f"epoch {e['epoch']:>3}: loss {e['loss']:.4f}, held-out Spearman {e['spearman']:.3f}, "
                      f"median error {e['error_levels']:.1f} levels ({e['seconds']:.0f} s)")

    net, report = fit_depth(training.rgb, training.depth_m, held.rgb, held.depth_m,
                            DepthFitConfig(epochs, batch_size, lr, seed=seed), init=start, on_epoch=scored,
                            on_step=lambda s, n, loss: steps.note(f"step {s}/{n} loss {loss:.4f}"))
    steps.close()
    report.source = source(standin, frames, seed, gap_share)
    from transformers.utils import logging

    logging.disable_progress_bar()  # a bar for one shard says nothing
    path = save_depth(out, net, report)
    typer.echo(f"best epoch {report.best_epoch}: held-out Spearman {report.spearman:.3f}, median error "
               f"{report.error_levels:.1f} levels; wrote {path} (a stand-in's depth: a real arm refuses it)")
    if as_json:
        typer.echo(json.dumps(asdict(report)))
