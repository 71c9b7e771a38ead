"""Read pickled checkpoints without running code from them.

A pickle can call any importable function while it loads. RoboBase snapshots keep
their training config as a pickled OmegaConf object, so ``torch.load(weights_only=
True)`` refuses them and a plain ``torch.load`` would run whatever the file asks.
This module loads them through an unpickler that resolves only an allow-list of
globals (tensor rebuilders, plain containers, numpy scalars) and replaces OmegaConf
classes with inert stand-ins that are turned into plain dicts and lists afterwards.
OmegaConf itself is never imported. Anything else stops the load before it runs.
"""

from __future__ import annotations

import builtins
import importlib
import pickle
import types
import zipfile
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from so101_sim2real.errors import CheckpointError, UnsafePickleError

# Python 2 names that protocol-2 pickles (torch.save's default) still use.
_PY2_NAMES = {("__builtin__", "long"): ("builtins", "int"), ("__builtin__", "unicode"): ("builtins", "str")}

_TORCH_REBUILDERS = {
    "_rebuild_tensor",
    "_rebuild_tensor_v2",
    "_rebuild_tensor_v3",
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
}
_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "str", "bytes", "bool", "complex"}
_NUMPY = {
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
}
_OMEGACONF_MODULES = {"omegaconf.dictconfig", "omegaconf.listconfig", "omegaconf.base", "omegaconf.nodes"}
# PyTorch Lightning keeps ``hyper_parameters`` in an ``AttributeDict`` (a dict subclass).
_LIGHTNING_DICTS = {
    ("lightning.fabric.utilities.data", "AttributeDict"),
    ("lightning_fabric.utilities.data", "AttributeDict"),
    ("pytorch_lightning.utilities.parsing", "AttributeDict"),
}


class Captured:
    """Inert stand-in for an allow-listed config class: it only keeps its state."""

    qualname = "?"

    def __setstate__(self, state: Any) -> None:
        # Slotted classes pickle as (dict_state, slot_state).
        if isinstance(state, tuple) and len(state) == 2:
            merged = dict(state[0] or {})
            merged.update(state[1] or {})
            state = merged
        self.state = state


def _standin(module: str, name: str) -> type:
    return type(name, (Captured,), {"qualname": f"{module}.{name}"})


def _allowed(module: str, name: str) -> Any:
    """The object a pickle may use for ``module.name``, or None if it may not."""
    if module == "builtins" and name in _BUILTINS:
        return getattr(builtins, name)
    if module == "collections" and name == "OrderedDict":
        return OrderedDict
    if module == "collections" and name == "defaultdict":
        return defaultdict
    if module == "torch._utils" and name in _TORCH_REBUILDERS:
        return getattr(torch._utils, name)
    if module == "torch" and name == "Size":
        return torch.Size
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    if module == "_codecs" and name == "encode":  # how protocol 2 spells bytes
        import codecs

        return codecs.encode
    if module == "typing" and name == "Any":
        return Any
    if (module, name) in _NUMPY or (module == "numpy.dtypes" and name.endswith("DType")):
        return getattr(importlib.import_module(module), name)
    if module in _OMEGACONF_MODULES:
        return _standin(module, name)
    if (module, name) in _LIGHTNING_DICTS:
        return type(name, (dict,), {"__module__": f"so101_standin.{module}"})
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals."""

    def find_class(self, module: str, name: str) -> Any:
        module, name = _PY2_NAMES.get((module, name), (module, name))
        if module == "__builtin__":
            module = "builtins"
        obj = _allowed(module, name)
        if obj is None:
            raise UnsafePickleError(
                f"the file asks to load '{module}.{name}', which is not on the allow-list; nothing was run"
            )
        return obj


class _Stub(nn.Module):
    """Stand-in for a class whose module is not installed (a trusted pickle only)."""


class TrustingUnpickler(pickle.Unpickler):
    """Full pickle, for files the user vouched for; missing user classes become stubs."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Stub,), {"__module__": f"stub.{module}"})


def _pickle_module(unpickler: type[pickle.Unpickler]) -> types.ModuleType:
    """A module-shaped object for ``torch.load(pickle_module=...)``."""
    mod = types.ModuleType(f"so101_{unpickler.__name__}")
    mod.Unpickler = unpickler  # type: ignore[attr-defined]
    mod.load = lambda f, **kw: unpickler(f, **kw).load()  # type: ignore[attr-defined]
    return mod


RESTRICTED = _pickle_module(RestrictedUnpickler)
TRUSTING = _pickle_module(TrustingUnpickler)


def torch_load(path: Path | BinaryIO, trust: bool = False) -> Any:
    """``torch.load`` to CPU through the restricted (or, if trusted, full) unpickler.

    Unsafe content raises :class:`UnsafePickleError`; an unreadable file raises
    :class:`CheckpointError` with a one-line reason.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=TRUSTING if trust else RESTRICTED)
    except UnsafePickleError:
        raise
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise CheckpointError(f"{path}: {exc.strerror.lower() if exc.strerror else exc}") from None
    except Exception as exc:  # torch reports corrupt files with many exception types
        if _truncated_zip(path):
            raise CheckpointError(
                f"{path}: truncated: the zip archive torch.save writes is incomplete (interrupted copy or download?)"
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {first}"
        ) from None


def _truncated_zip(path: Path | BinaryIO) -> bool:
    if not isinstance(path, (str, Path)):
        return False
    with open(path, "rb") as f:
        starts_like_zip = f.read(4) == b"PK\x03\x04"
    return starts_like_zip and not zipfile.is_zipfile(path)


def to_plain(obj: Any) -> Any:
    """Turn stand-ins (OmegaConf configs) and containers into plain Python data."""
    if isinstance(obj, Captured):
        return _captured_to_plain(obj)
    if isinstance(obj, dict):
        return {to_plain(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "shape", None) == ():  # numpy scalars
        return obj.item()
    return obj


def _captured_to_plain(obj: Captured) -> Any:
    state = getattr(obj, "state", None)
    if not isinstance(state, dict):
        return None
    if "_content" in state:  # DictConfig / ListConfig
        content = state["_content"]
        if content is None or isinstance(content, str):  # None, "???" or an interpolation
            return content
        return to_plain(content)
    if "_val" in state:  # a value node
        return to_plain(state["_val"])
    return None
