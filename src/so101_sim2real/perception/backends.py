"""Where a perception network's core runs: torch (the reference; fp16 on a GPU), OpenVINO or ONNX Runtime.

The *core* is the part of a network before anything that depends on the output size
(segmentation: the logits at stride 4, before the upsampling to the map size; depth:
``predicted_depth``, before its interpolation). Pre- and post-processing stay in torch,
so a backend changes one call and nothing around it.

Both exported backends start from one ONNX export of the core at a fixed input shape
(the camera's size is fixed, so a run sees one shape per network). The result is cached
under :func:`compiled_dir`, one folder per key: a hash of the weights, the input shape,
the backend, its precision and the versions that shaped the graph. Each folder holds a
``key.json`` naming its key and the sha256 of every file; an entry that disagrees with
it, or fails to load, is rebuilt and never used.

A backend other than torch is used only after it has passed a fidelity check against
torch fp32 on real frames (:mod:`so101_sim2real.perception.fidelity`).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from so101_sim2real.errors import So101Error
from so101_sim2real.files import writable_folder, write_folder
from so101_sim2real.perception.hub import file_sha256

NAMES = ("torch", "openvino", "onnxruntime")
PRECISIONS = {"torch": ("f32", "f16"), "openvino": ("f32", "bf16"), "onnxruntime": ("f32",)}
GRAPH_VERSION = 1  # bump when the export (opset, wrapper modules) changes: old entries then miss
OPSET = 17
_PACKAGE = {"openvino": "openvino", "onnxruntime": "onnxruntime"}

Core = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Backend:
    """A runtime, the precision it computes in, and its CPU thread budget.

    ``threads`` does not change what is computed, so it takes no part in equality or in
    the cache's key; None means torch's thread count in the thread that compiles.
    """

    name: str = "torch"
    precision: str = "f32"
    threads: int | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.name} {self.precision}"

    def with_threads(self, threads: int | None) -> Backend:
        return replace(self, threads=threads)


TORCH = Backend()


def installed(name: str) -> bool:
    """The backend's package can be imported (torch always can)."""
    return name == "torch" or importlib.util.find_spec(_PACKAGE[name]) is not None


def cpu_has_bf16() -> bool:
    """OpenVINO's CPU plugin computes in bf16 natively here (AVX512-BF16 or AMX)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def default_precision(name: str) -> str:
    """bf16 for OpenVINO where the CPU has it (measured 1.5% max rel. error on depth, ~4x faster), else f32."""
    return "bf16" if name == "openvino" and cpu_has_bf16() else "f32"


def check_threads(threads: int | None, shown: str = "@perception_threads") -> None:
    """A thread budget is a count from 1 to the cores this process may use (None: torch's).

    More is refused rather than clipped: threads beyond the cores only make the networks wait on
    each other, a clipped budget would make the timings differ from the ones asked for without a
    word, and a huge count crashes the thread pools (100000 ended the process with a segfault).
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise So101Error(f"{shown} {threads!r}: give at least 1")
    if threads is not None and threads > (cores := usable_cores()):
        raise So101Error(f"{shown} {threads}: this process may use {cores} CPU core(s); give 1 to {cores}")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_backend(text: str) -> Backend | None:
    """``auto`` -> None; ``NAME`` or ``NAME:PRECISION`` -> a usable :class:`Backend`, or a one-line error."""
    if text == "auto":
        return None
    name, _, precision = text.partition(":")
    shown = f"@backend {text}"
    if name not in NAMES:
        raise So101Error(f"{shown}: unknown; backends: auto, {', '.join(NAMES)} (openvino:f32, openvino:bf16 set its "
                         f"precision; torch:f16 on a GPU)")
    if not installed(name):
        raise So101Error(f"{shown}: the {_PACKAGE[name]} package is not installed; pip install {_PACKAGE[name]}, or "
                         f"use @backend auto")
    precision = precision or default_precision(name)
    if precision not in PRECISIONS[name]:
        raise So101Error(f"{shown}: {name} runs in {' or '.join(PRECISIONS[name])} here")
    if precision == "bf16" and not cpu_has_bf16():
        raise So101Error(f"{shown}: this CPU has no bf16 instructions; use @backend openvino:f32")
    return Backend(name, precision)


def cuda_provider() -> bool:
    """ONNX Runtime can run on a GPU here (the onnxruntime-gpu package and its CUDA libraries)."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def candidates(threads: int | None = None, gpu: bool = False) -> list[Backend]:
    """What ``auto`` tries, usually fastest first: the installed exported backends, then torch.
    For networks on a GPU: torch in fp16, ONNX Runtime where it has its CUDA provider, torch."""
    if gpu:
        gpu_runtime = [Backend("onnxruntime", "f32", threads)] if installed("onnxruntime") and cuda_provider() else []
        return [Backend("torch", "f16", threads), *gpu_runtime, TORCH.with_threads(threads)]
    out = []
    if installed("openvino"):
        out.append(Backend("openvino", default_precision("openvino"), threads))
        if out[-1].precision == "bf16":
            out.append(Backend("openvino", "f32", threads))  # where bf16 fails the check, f32 may still beat torch
    if installed("onnxruntime"):
        out.append(Backend("onnxruntime", "f32", threads))
    return out + [TORCH.with_threads(threads)]


def compiled_dir(model_cache: str | Path | None = None) -> Path:
    """Exported graphs live beside the model cache: ``<its parent>/compiled``."""
    from so101_sim2real.perception.hub import cache_dir

    return cache_dir(model_cache).parent / "compiled"


def weights_hash(module: nn.Module) -> str:
    """sha256 of the state dict: names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def backend_version(name: str) -> str:
    if name == "openvino":
        import openvino as ov

        return ov.__version__
    import onnxruntime as ort

    return ort.__version__


def _versions() -> dict[str, str]:
    """The packages whose code shapes an exported graph (the exporter, the two networks' libraries)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("torch", "timm", "transformers", "onnx"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = ""
    return out


def graph_key(module: nn.Module, weights: str, shape: tuple[int, ...], backend: Backend) -> dict:
    """Everything an exported graph depends on; a change in any of it is another cache entry."""
    inner = getattr(module, "net", module)  # the wrapped network
    return {"graph": GRAPH_VERSION, "network": type(inner).__qualname__, "weights": weights, "shape": list(shape),
            "backend": backend.name, "precision": backend.precision,
            "backend_version": backend_version(backend.name), "versions": _versions()}


def entry_folder(root: Path, key: dict) -> Path:
    """The cache folder of one key."""
    return root / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _export_onnx(module: nn.Module, shape: tuple[int, ...], path: Path) -> None:
    """The core as ONNX at one input shape, by the TorchScript exporter (works on the timm and
    transformers graphs here; the dynamo exporter needs onnxscript and is slower to export)."""
    device = next(module.parameters()).device
    # predict runs under inference_mode, whose tensors the tracer cannot record
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks: the shape is fixed
        example = torch.zeros(shape, device=device)
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["pixels"], output_names=["out"])


def _write_openvino(onnx_path: Path, folder: Path) -> list[str]:
    import openvino as ov

    # weights stay f32 on disk: the precision is the runtime's choice (INFERENCE_PRECISION_HINT)
    ov.save_model(ov.convert_model(str(onnx_path)), str(folder / "model.xml"), compress_to_fp16=False)
    return ["model.xml", "model.bin"]


def _build(module: nn.Module, shape: tuple[int, ...], backend: Backend, folder: Path, key: dict) -> None:
    """Export into ``folder`` and write its ``key.json`` last."""
    onnx_path = folder / "model.onnx"
    _export_onnx(module, shape, onnx_path)
    if backend.name == "openvino":
        files = _write_openvino(onnx_path, folder)
        onnx_path.unlink()
    else:
        files = ["model.onnx"]
    record = {**key, "files": {name: file_sha256(folder / name) for name in files}}
    (folder / "key.json").write_text(json.dumps(record, indent=1))


def _entry_files(folder: Path, key: dict) -> list[Path] | None:
    """The entry's model files if its key is ``key`` and every file has its recorded hash, else None."""
    try:
        record = json.loads((folder / "key.json").read_text())
        files = record.pop("files")
        if record != key or not files:
            return None
        if any(file_sha256(folder / name) != digest for name, digest in files.items()):
            return None
        return [folder / name for name in files]
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None


def _threads(backend: Backend) -> int:
    return backend.threads or max(1, torch.get_num_threads())  # by default the budget the user gave torch


def use_threads(threads: int | None) -> None:
    """Torch's intra-op thread count for the calling thread: torch keeps one per thread, and a
    thread started later begins with the count set last anywhere, so each stage sets its own."""
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def thread_budget(threads: int | None) -> Iterator[None]:
    """The calling thread on ``threads`` torch threads for the block, and back on its own count
    after (the loop's thread goes on with the policy; ~0.1 ms a switch)."""
    before = torch.get_num_threads()
    use_threads(threads)
    try:
        yield
    finally:
        use_threads(before)


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


SIGNAL_STACK = 1 << 18  # bytes: room for a signal handler that saves the CPU's whole vector state, twice
_SS_DISABLE = 2
_stacks = threading.local()  # each thread's stack must live as long as the thread may take a signal


def signal_stack_size() -> int | None:
    """The calling thread's alternate signal stack in bytes; None when it has none (or not on Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    current = _StackT()
    if ctypes.CDLL(None).sigaltstack(None, ctypes.byref(current)) != 0 or current.ss_flags & _SS_DISABLE:
        return None
    return int(current.ss_size)


def roomy_signal_stack() -> None:
    """Give the calling thread a large alternate signal stack if it has a small one.

    OpenVINO's CPU plugin leaves an 11 KiB alternate signal stack on the thread that compiles.
    Python installs its handlers with SA_ONSTACK, so a SIGTERM or Ctrl-C handler then runs on
    those 11 KiB, and the dynamic linker's lazy binding (which saves the vector registers on the
    stack) overflows it: the process died with a segfault instead of stopping the arm with
    torque off.
    """
    size = signal_stack_size()
    if size is None or size >= SIGNAL_STACK:
        return
    buffer = ctypes.create_string_buffer(SIGNAL_STACK)
    stack = _StackT(ctypes.cast(buffer, ctypes.c_void_p), 0, SIGNAL_STACK)
    if ctypes.CDLL(None).sigaltstack(ctypes.byref(stack), None) == 0:
        _stacks.buffer = buffer


def _load_openvino(files: list[Path], backend: Backend, device: torch.device) -> Core:
    import openvino as ov

    core = ov.Core()
    xml = next(f for f in files if f.suffix == ".xml")
    compiled = core.compile_model(core.read_model(str(xml)), "CPU", {
        "INFERENCE_PRECISION_HINT": backend.precision, "INFERENCE_NUM_THREADS": _threads(backend),
        "PERFORMANCE_HINT": "LATENCY"})
    roomy_signal_stack()
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
        request.infer([x.detach().to("cpu", torch.float32).numpy()])
        return torch.from_numpy(request.get_output_tensor(0).data.copy()).to(device)

    return run


def _load_onnxruntime(files: list[Path], backend: Backend, device: torch.device) -> Core:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = _threads(backend)
    options.log_severity_level = 3  # its warnings about unused initialisers say nothing to a user
    # idle threads spinning after a run would take the cores from the other network (seg and depth may overlap)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and cuda_provider():
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(str(files[0]), options, providers=providers)

    def run(x: torch.Tensor) -> torch.Tensor:
        out = session.run(None, {"pixels": x.detach().to("cpu", torch.float32).numpy()})[0]
        return torch.from_numpy(out).to(device)

    return run


_LOADERS: dict[str, Callable[[list[Path], Backend, torch.device], Core]] = {
    "openvino": _load_openvino, "onnxruntime": _load_onnxruntime}


def compile_core(module: nn.Module, shape: tuple[int, ...], backend: Backend, cache: Path | None = None,
                 weights: str | None = None) -> Core:
    """``module`` as a callable on ``backend`` for inputs of ``shape``: from the cache when a valid
    entry is there, else exported (and cached where the folder is writable)."""
    device = next(module.parameters()).device
    if backend.name == "torch":
        return _half(module) if backend.precision == "f16" else module
    key = graph_key(module, weights or weights_hash(module), shape, backend)
    root = cache if cache is not None else compiled_dir()
    folder = entry_folder(root, key)
    if (files := _entry_files(folder, key)) is not None:
        try:
            return _LOADERS[backend.name](files, backend, device)
        except Exception:  # noqa: BLE001 - a file that passed its hash but not the runtime: rebuild it
            pass
    if writable_folder(root) is None:
        write_folder(folder, lambda tmp: _build(module, shape, backend, tmp, key), overwrite=True)
        return _load_built(folder, key, backend, device)
    with tempfile.TemporaryDirectory() as tmp:  # an unwritable cache: export for this run only
        _build(module, shape, backend, Path(tmp), key)
        return _load_built(Path(tmp), key, backend, device)


def _half(module: nn.Module) -> Core:
    """The core with fp16 weights and activations (a GPU's tensor cores), its output back in f32;
    the f32 module is left as it is (it stays the reference)."""
    import copy

    half = copy.deepcopy(module).half()

    def run(x: torch.Tensor) -> torch.Tensor:
        return half(x.half()).float()

    return run


def _load_built(folder: Path, key: dict, backend: Backend, device: torch.device) -> Core:
    files = _entry_files(folder, key)
    if files is None:
        raise So101Error(f"{folder}: the {backend} graph just exported does not read back; delete the folder")
    return _LOADERS[backend.name](files, backend, device)


class CoreRunner:
    """A network core on a backend, compiled on first use for each input shape."""

    def __init__(self, module: nn.Module, backend: Backend, cache: Path | None = None):
        self.module, self.backend, self.cache = module, backend, cache
        self._weights: str | None = None
        self._compiled: dict[tuple[int, ...], Core] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape)
        if shape not in self._compiled:
            if self._weights is None and self.backend.name != "torch":
                self._weights = weights_hash(self.module)
            self._compiled[shape] = compile_core(self.module, shape, self.backend, self.cache, self._weights)
        return self._compiled[shape](x)
