"""Torch devices: the one check every command that runs a network makes before loading it."""

from __future__ import annotations

from so101_sim2real.errors import So101Error


def check_device(device: str, where: str = "@") -> None:
    """A torch device this machine has: ``cpu`` or ``cuda[:N]``; a one-line error otherwise."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise So101Error(f"{where}device {device}: not a torch device (cpu, cuda, cuda:1, ...)") from None
    if dev.type not in ("cpu", "cuda"):
        raise So101Error(f"{where}device {device}: use cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise So101Error(f"{where}device {device}: no CUDA device here; use @device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise So101Error(f"{where}device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
