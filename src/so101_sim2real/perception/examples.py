"""Example perception weights: the real architectures with random weights, marked as such.

``so101 models example`` writes them so that ``so101 perceive`` and ``so101 infer
--perception real`` can be tried before one has trained a segmentation network or
downloaded Depth Anything. They load through exactly the code path real weights take
(a Lightning-style checkpoint, a ``save_pretrained`` folder), but carry a mark that the
loaders read: every command that uses them says so, ``models list`` calls them examples,
``models add`` will not file them under an official hub id, and an arm on a serial port
refuses them (a policy fed noise should not drive real joints).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from so101_sim2real.errors import So101Error
from so101_sim2real.files import share_like_the_user, writable_folder, write_folder
from so101_sim2real.perception import EXAMPLE_MARK
from so101_sim2real.spec import SOURCE_SIZE, default_spec

NOTE = "random weights written by 'so101 models example': for trying the workflow, not for a robot"
SEG_FILE = "segmentation.ckpt"
DEPTH_DIR = "depth"


@dataclass(frozen=True)
class ExampleModels:
    """Where the example weights were written."""

    folder: Path
    seg_ckpt: Path
    depth_model: Path


def write_example_models(out: str | Path, force: bool = False, seed: int = 0) -> ExampleModels:
    """EfficientViT-B0 + FPN and Depth Anything V2 Small with seeded random weights, under ``out``."""
    folder = Path(out).expanduser()
    check_out(folder, force)
    import torch  # seconds to import: after the checks
    from transformers import DepthAnythingForDepthEstimation
    from transformers.utils import logging

    from so101_sim2real.perception.depth import small_config
    from so101_sim2real.perception.segmentation import SegmentationNet

    def write(staging: Path) -> None:
        torch.manual_seed(seed)
        classes = len(default_spec().observation.segmentation.real_classes)
        seg = SegmentationNet(classes).eval()
        torch.save({"state_dict": {f"model.{k}": v for k, v in seg.state_dict().items()},
                    "hyper_parameters": {"num_classes": classes, "img_height": SOURCE_SIZE[0],
                                         "img_width": SOURCE_SIZE[1]},
                    EXAMPLE_MARK: NOTE}, staging / SEG_FILE)
        logging.disable_progress_bar()  # a bar for one 99 MB shard says nothing
        config = small_config()
        setattr(config, EXAMPLE_MARK, NOTE)
        DepthAnythingForDepthEstimation(config).eval().save_pretrained(staging / DEPTH_DIR)
        for weights in (staging / DEPTH_DIR).glob("*.safetensors"):
            share_like_the_user(weights)
        (staging / "README.md").write_text(f"# Example perception weights\n\n{NOTE}.\n\n"
                                           f"- `{SEG_FILE}`: EfficientViT-B0 + FPN segmentation, {classes} classes\n"
                                           f"- `{DEPTH_DIR}/`: Depth Anything V2 Small (transformers layout)\n")

    # one rename swaps the old folder for the new: a kill or a failure leaves the old one whole
    write_folder(folder, write, overwrite=True)
    return ExampleModels(folder, folder / SEG_FILE, folder / DEPTH_DIR)


def check_out(folder: Path, force: bool) -> None:
    """What :func:`write_example_models` would refuse, said before anything is imported or written:
    a file at ``folder`` (@force replaces a previous folder, not a file), a folder with files in
    it without @force (an empty one is fine), a place that cannot be written."""
    if folder.exists() and not folder.is_dir():
        raise So101Error(f"@out {folder}: a file, not a folder; @force replaces a previous folder, not a file: "
                         f"choose another @out")
    if folder.exists() and any(folder.iterdir()) and not force:
        raise So101Error(f"@out {folder}: already exists; pass @force to replace it")
    if problem := writable_folder(folder.parent):
        raise So101Error(f"@out {folder}: cannot create it ({problem})")


def example_sources(seg_ckpt: str | Path | None, depth_model: str | Path) -> list[str]:
    """Which of the two models are example weights, found without loading them: the depth folder's
    config, the segmentation checkpoint's pickle (the mark is one of its keys, stored as text)."""
    return marked_sources(seg_ckpt, depth_model, EXAMPLE_MARK)


def marked_sources(seg_ckpt: str | Path | None, depth_model: str | Path, mark: str) -> list[str]:
    """Which of the two models carry ``mark`` (example weights, or a stand-in's), without loading them."""
    return [str(source) for source, marked in ((seg_ckpt, seg_ckpt is not None and _marked_checkpoint(seg_ckpt, mark)),
                                               (depth_model, is_example_folder(depth_model, mark))) if marked]


def _marked_checkpoint(path: str | Path, mark: str = EXAMPLE_MARK) -> bool:
    """A ``torch.save`` archive whose pickle holds ``mark`` (read as bytes, never unpickled)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(mark.encode() in archive.read(name) for name in archive.namelist() if name.endswith("data.pkl"))
    except (OSError, zipfile.BadZipFile):
        return False


def is_example_folder(folder: str | Path, mark: str = EXAMPLE_MARK) -> bool:
    """A model folder whose config.json carries ``mark`` (by default the example mark)."""
    import json

    try:
        return mark in json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return False


def refuse_standin_on_an_arm(standins: list[str]) -> None:
    """A real arm never runs on a stand-in's networks: they know its renders, not a camera."""
    if standins:
        raise So101Error(f"{', '.join(standins)}: fitted to a stand-in world's renders ('so101 seg train', 'so101 "
                         f"depth fit'), not to your camera's pictures; a real arm needs your trained @seg_ckpt and a "
                         f"real @depth_model")


def refuse_on_an_arm(examples: list[str]) -> None:
    """A real arm never runs on example weights: they would feed the policy noise."""
    if examples:
        raise So101Error(f"{', '.join(examples)}: example weights (random, from 'so101 models example') would feed "
                         f"the policy noise; a real arm needs your trained @seg_ckpt and a real @depth_model (the "
                         f"emulator's pty, from 'so101 emulate --twin', takes them)")
