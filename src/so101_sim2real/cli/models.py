"""``so101 models``: the model cache, filled where there is internet and read offline after."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from so101_sim2real.cli import PLAIN
from so101_sim2real.perception import DEFAULT_DEPTH_MODEL

models_app = typer.Typer(help="The model cache: download once where there is internet, run offline after.",
                         no_args_is_help=True, **PLAIN)
CacheOpt = Annotated[Optional[Path], typer.Option("--cache-dir", help="Model cache (default: the Hugging Face "
                                                                      "cache, HF_HUB_CACHE or HF_HOME).")]


@models_app.command("download")
def models_download(
    name: Annotated[str, typer.Argument(help="A hub repo id.")] = DEFAULT_DEPTH_MODEL,
    cache_dir: CacheOpt = None,
) -> None:
    """Fetch a model into the cache (default: Depth Anything V2 Small, the disparity model)."""
    from so101_sim2real.perception.hub import download

    typer.echo(f"downloading {name} ...")
    typer.echo(f"cached {name} at {download(name, cache_dir)}")


@models_app.command("add")
def models_add(
    folder: Annotated[Path, typer.Argument(help="A model folder (config.json + weights), e.g. copied from a "
                                                "machine with internet.")],
    name: Annotated[str, typer.Option("--name", help="The hub id to file it under.")] = DEFAULT_DEPTH_MODEL,
    cache_dir: CacheOpt = None,
) -> None:
    """Put a model folder into the cache under a hub id, for machines without internet."""
    from so101_sim2real.perception.hub import add_folder

    typer.echo(f"cached {name} at {add_folder(folder, name, cache_dir)}")


@models_app.command("example")
def models_example(
    out: Annotated[Path, typer.Option("--out", help="Folder to write.")] = Path("example-models"),
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Write example perception weights (random, clearly marked) to try perceive and infer --perception real.

    The real architectures (EfficientViT-B0 segmentation, Depth Anything V2 Small)
    with random weights, loaded exactly as your own are; the observation they give is
    noise. They are never filed under a hub id, and a real arm refuses them.
    """
    from so101_sim2real.perception.examples import write_example_models

    written = write_example_models(out, force=force)
    typer.echo(f"wrote example perception weights (random) to {written.folder}; try:")
    typer.echo(f"  so101 perceive IMAGE --seg-ckpt {written.seg_ckpt} --depth-model {written.depth_model}")
    typer.echo(f"  so101 infer --ckpt scripted -n 1 --perception real --seg-ckpt {written.seg_ckpt} "
               f"--depth-model {written.depth_model}")


@models_app.command("list")
def models_list(
    cache_dir: CacheOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list.")] = False,
) -> None:
    """Show the models in the cache, and whether the default depth model is among them."""
    from so101_sim2real.perception.hub import cache_dir as resolve_cache
    from so101_sim2real.perception.hub import cached_models

    models = cached_models(cache_dir)
    if as_json:
        typer.echo(json.dumps([{"repo_id": m.repo_id, "size_bytes": m.size_bytes, "files": m.files,
                                "path": str(m.path), "role": m.role} for m in models]))
        return
    typer.echo(f"cache: {resolve_cache(cache_dir)}")
    for m in models:
        typer.echo(f"  {m.repo_id:<48}{m.size_bytes / 1e6:>9.1f} MB {m.files:>4} files  {m.role}")
    if not any(m.repo_id == DEFAULT_DEPTH_MODEL for m in models):
        typer.echo(f"the default depth model is not cached: so101 models download {DEFAULT_DEPTH_MODEL}")


@models_app.command("push")
def models_push(
    policy: Annotated[Path, typer.Argument(help="A policy folder: RUN/policy of a HIL-SERL run, or a 'so101 convert' "
                                                "output.")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="OWNER/NAME on the hub.")],
    private: Annotated[bool, typer.Option("--private/--public", help="Who sees it (private unless you say).")] = True,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="A dataset repo id the card links to (the "
                                                                     "run's episodes: 'so101 export lerobot').")
                       ] = None,
    card: Annotated[Optional[Path], typer.Option("--card", help="Write the model card here; upload nothing.")
                    ] = None,
) -> None:
    """Upload a policy with a model card generated from its run (spec, training history, perception
    it expects, MuJoCo version). Needs internet and 'huggingface-cli login'; --card shows the card first."""
    from so101_sim2real.hilserl.card import gather, model_card, push

    facts = gather(policy)
    if card is not None:
        from so101_sim2real.files import write_file

        write_file(card, model_card(facts, repo_id, dataset))
        typer.echo(f"wrote the model card to {card} (nothing uploaded)")
        return
    url = push(facts, repo_id, private, dataset)
    typer.echo(f"pushed {policy} to {url} ({'private' if private else 'public'})")
