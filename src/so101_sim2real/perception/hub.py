"""The model cache: the Hugging Face hub cache, filled once, read offline ever after.

``so101 models download`` fetches a hub repo (the public depth model by default) with
a progress bar; ``so101 models add`` puts a folder copied from another machine into
the cache under a hub id, for robots that never see the internet; ``so101 models
list`` shows what is there. Loading (``load_depth``) only ever reads the cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from so101_sim2real.errors import So101Error
from so101_sim2real.perception import DEFAULT_DEPTH_MODEL
from so101_sim2real.perception.examples import is_example_folder

KNOWN_MODELS = {DEFAULT_DEPTH_MODEL: "disparity: Depth Anything V2 Small, 24.8M params, Apache-2.0"}


@dataclass(frozen=True)
class CachedModel:
    """One model repo in the cache."""

    repo_id: str
    size_bytes: int
    files: int
    path: Path  # the snapshot folder of its newest revision
    role: str


def cache_dir(override: str | Path | None = None) -> Path:
    """Where models live: ``override``, else ``HF_HUB_CACHE`` / ``HF_HOME`` as the hub library resolves them."""
    if override:
        where = Path(override).expanduser()
    else:
        from huggingface_hub import constants

        where = Path(constants.HF_HUB_CACHE)
    if where.exists() and not where.is_dir():
        shown = f"@cache_dir {where}" if override else f"the model cache {where} (HF_HUB_CACHE / HF_HOME)"
        raise So101Error(f"{shown}: a file, not a folder")
    return where


def download(repo_id: str = DEFAULT_DEPTH_MODEL, cache: str | Path | None = None) -> Path:
    """Fetch every file of ``repo_id`` into the cache (progress bars on stderr); the snapshot folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    where = cache_dir(cache)
    try:
        return Path(snapshot_download(repo_id, cache_dir=where))
    except GatedRepoError:
        raise So101Error(f"{repo_id}: a gated repo; accept its terms on huggingface.co and log in "
                         f"(hf auth login), then retry") from None
    except RepositoryNotFoundError:
        raise So101Error(f"{repo_id}: no such model on the hub (or a private one: log in with hf auth login)") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise So101Error(f"cannot download {repo_id} ({reason}); without internet here, run `so101 models download "
                         f"{repo_id}` elsewhere and bring the folder over with `so101 models add FOLDER --name "
                         f"{repo_id}`") from None


def _repo_folder(root: Path, repo_id: str) -> Path:
    return root / ("models--" + repo_id.replace("/", "--"))


def add_folder(folder: str | Path, repo_id: str, cache: str | Path | None = None) -> Path:
    """Copy a model folder into the cache as ``repo_id`` (the hub's own layout: blobs, snapshot, refs/main)."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise So101Error(f"{folder}: no such folder")
    if not folder.is_dir() or not (folder / "config.json").exists():
        raise So101Error(f"{folder}: not a model folder (no config.json)")
    if repo_id.count("/") != 1 or any(not part for part in repo_id.split("/")):
        raise So101Error(f"@name {repo_id}: a hub id is OWNER/NAME, e.g. {DEFAULT_DEPTH_MODEL}")
    if repo_id in KNOWN_MODELS and is_example_folder(folder):
        raise So101Error(f"{folder}: example weights (random, from 'so101 models example'); filed as {repo_id} they "
                         f"would pass for the real model. Use the folder directly: @depth_model {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts)
    digests = {p: file_sha256(p) for p in files}
    revision = hashlib.sha1("".join(f"{p.relative_to(folder)}:{d}" for p, d in digests.items()).encode()).hexdigest()
    repo = _repo_folder(cache_dir(cache), repo_id)
    snapshot = repo / "snapshots" / revision
    for path, digest in digests.items():
        blob = repo / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            shutil.copyfile(path, blob)
        link = snapshot / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cached_models(cache: str | Path | None = None) -> list[CachedModel]:
    """Model repos in the cache, largest first."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir(cache))
    except CacheNotFound:
        return []
    models = []
    for repo in info.repos:
        if repo.repo_type != "model" or not repo.revisions:
            continue
        newest = max(repo.revisions, key=lambda r: r.last_modified)
        path = Path(newest.snapshot_path)
        role = "EXAMPLE: random weights" if is_example_folder(path) else KNOWN_MODELS.get(repo.repo_id, "")
        models.append(CachedModel(repo.repo_id, repo.size_on_disk, repo.nb_files, path, role))
    return sorted(models, key=lambda m: -m.size_bytes)
