"""``so101 inspect`` and ``so101 convert``: what a checkpoint is, and the same weights without pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from so101_sim2real.cli.options import CkptOpt, RigOpt, SpecOpt, TrustOpt, _rig_geometry


def inspect(
    ckpt: CkptOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    trust_pickle: TrustOpt = False,
    spec: SpecOpt = None,
    rig: RigOpt = None,
) -> None:
    """Say what a checkpoint is: format, architecture, parameters, spec with sources, warnings,
    and the camera the twin sees through (--rig, or the sim's uncalibrated guess)."""
    from so101_sim2real.policy.checkpoint import load_checkpoint
    from so101_sim2real.policy.report import describe, render_text

    geometry = _rig_geometry(rig)
    report = describe(load_checkpoint(ckpt, trust_pickle=trust_pickle, spec_path=spec))
    report["camera"] = {"rig": str(rig) if rig else None, "calibrated": geometry.calibrated,
                        "describe": geometry.describe()}
    typer.echo(json.dumps(report, default=str) if as_json
               else render_text(report) + f"\n\ncamera: {geometry.describe()}")



def convert(
    ckpt: CkptOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder to write (weights.safetensors + spec.yaml).")],
    trust_pickle: TrustOpt = False,
    spec: SpecOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Write a checkpoint as safetensors + spec YAML: loading it needs no pickle at all."""
    from so101_sim2real.policy.checkpoint import load_checkpoint, save_native
    from so101_sim2real.policy.runtime import verify_same_actions

    source = load_checkpoint(ckpt, trust_pickle=trust_pickle, spec_path=spec)
    folder = save_native(source, out, overwrite=force)
    checked = verify_same_actions(source, load_checkpoint(folder))
    typer.echo(f"wrote {folder}/ (weights.safetensors, spec.yaml) from a {source.format} checkpoint")
    typer.echo(f"verified: identical actions on {checked} random observations")
    for w in source.warnings:
        typer.echo(f"  ! {w}")
