"""Perception backends: exported cores agree with torch, are cached by key, and are checked before use.

The networks have random weights of the real sizes, loaded the way real weights are (a
Lightning checkpoint, a save_pretrained folder); frames are the twin's wrist camera.
One compiled cache per module, so each backend exports each network once.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from fixtures import run_cli, write_lightning_seg_ckpt
from so101_sim2real.errors import So101Error
from so101_sim2real.perception import backends, fidelity
from so101_sim2real.perception.backends import TORCH, Backend, entry_folder, graph_key, parse_backend
from so101_sim2real.perception.depth import load_depth
from so101_sim2real.perception.fidelity import Thresholds, choose_backend, compare_frames, reference_frames
from so101_sim2real.perception.real import RealPerception
from so101_sim2real.perception.segmentation import SegmentationCore, load_segmentation, to_tensor
from so101_sim2real.spec import default_spec

SPEC = default_spec().observation
ORT, OV = Backend("onnxruntime", "f32"), Backend("openvino", "f32")
SEG_SHAPE = (1, 3, 192, 256)  # the fast profile's seg input for a 640x480 crop of the default spec


@pytest.fixture(scope="module")
def frames():
    from so101_sim2real.control.frames import twin_frames

    return twin_frames(2)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("compiled")


@pytest.fixture(autouse=True)
def fresh_choices(cache):
    """Each test times its backends afresh: auto's remembered picks are the remembering test's."""
    shutil.rmtree(cache / "choices", ignore_errors=True)


@pytest.fixture
def exports(monkeypatch):
    """Counts ONNX exports (every cache miss makes one)."""
    calls = []
    real = backends._export_onnx

    def counted(*args):
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(backends, "_export_onnx", counted)
    return calls


def _perception(seg, depth, backend, cache):
    return RealPerception(None, seg.on_backend(backend, cache), depth.on_backend(backend, cache), SPEC, "fast",
                          workers=1)


@pytest.mark.parametrize("backend", [ORT, pytest.param(OV, marks=pytest.mark.slow)], ids=str)  # OV: ~35 s
def test_a_backend_agrees_with_torch_on_twin_frames(backend, seg, depth, frames, cache):
    x = to_tensor(frames[0], SEG_SHAPE[2:], seg.device, "bilinear")
    with torch.inference_mode():
        ref, out = seg.net.core(x), seg.on_backend(backend, cache)._core(x)
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-3)
    expected = reference_frames(_perception(seg, depth, TORCH, None), frames)
    fidelity = compare_frames(expected, _perception(seg, depth, backend, cache), frames)
    assert fidelity.passed, fidelity.failures()
    assert fidelity.seg_agreement > 0.999 and fidelity.disparity_spearman > 0.999


def test_the_second_load_uses_the_cache(seg, frames, cache, exports):
    x = to_tensor(frames[0], (96, 128), seg.device, "bilinear")
    with torch.inference_mode():
        first = seg.on_backend(ORT, cache)._core(x)
        assert exports == [(1, 3, 96, 128)]
        second = seg.on_backend(ORT, cache)._core(x)  # a new model: a new runner, the same key
    assert exports == [(1, 3, 96, 128)]
    assert torch.equal(first, second)


def _entry(module, shape, backend, cache):
    return entry_folder(cache, graph_key(module, backends.weights_hash(module), shape, backend))


@pytest.mark.parametrize("damage", ["truncated", "wrong key", "no key"])
def test_a_corrupt_entry_is_rebuilt_never_used(damage, seg, frames, cache, exports):
    x = to_tensor(frames[0], (64, 96), seg.device, "bilinear")
    with torch.inference_mode():
        expected = seg.net.core(x)
        seg.on_backend(ORT, cache)._core(x)
        built = len(exports)  # 1, or 0 where an earlier case left the entry
        folder = _entry(SegmentationCore(seg.net), (1, 3, 64, 96), ORT, cache)
        model, key = folder / "model.onnx", folder / "key.json"
        if damage == "truncated":
            model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
        elif damage == "wrong key":
            record = json.loads(key.read_text())
            key.write_text(json.dumps({**record, "weights": "0" * 64}))
        else:
            key.unlink()
        out = seg.on_backend(ORT, cache)._core(x)
    assert len(exports) == built + 1  # rebuilt
    assert torch.allclose(out, expected, atol=1e-4, rtol=1e-3)
    assert json.loads(key.read_text())["weights"] == backends.weights_hash(SegmentationCore(seg.net))


def test_other_weights_are_another_entry(seg, tmp_path):
    write_lightning_seg_ckpt(tmp_path / "other.ckpt", seed=1)
    other = load_segmentation(tmp_path / "other.ckpt")
    a, b = SegmentationCore(seg.net), SegmentationCore(other.net)
    assert backends.weights_hash(a) != backends.weights_hash(b)
    assert _entry(a, SEG_SHAPE, ORT, tmp_path) != _entry(b, SEG_SHAPE, ORT, tmp_path)
    assert _entry(a, SEG_SHAPE, ORT, tmp_path) != _entry(a, (1, 3, 96, 128), ORT, tmp_path)
    assert _entry(a, SEG_SHAPE, ORT, tmp_path) != _entry(a, SEG_SHAPE, OV, tmp_path)


@pytest.fixture
def lossy_onnxruntime(monkeypatch):
    """ONNX Runtime with a perturbed output: noise of the logits' and disparity's own scale."""
    load = backends._LOADERS["onnxruntime"]

    def lossy(files, backend, device):
        run = load(files, backend, device)
        gen = torch.Generator().manual_seed(0)
        return lambda x: (out := run(x)) + out.std() * torch.randn(out.shape, generator=gen)

    monkeypatch.setitem(backends._LOADERS, "onnxruntime", lossy)


def test_a_backend_that_fails_the_check_is_refused_in_one_line(seg, depth, frames, cache, lossy_onnxruntime,
                                                               monkeypatch):
    with pytest.raises(So101Error) as caught:
        choose_backend(seg, depth, SPEC, "fast", "onnxruntime", lambda: frames, cache=cache)
    text = str(caught.value)
    assert "\n" not in text and text.startswith("backend onnxruntime: refused")
    assert "seg agreement 0." in text and "< 0.995" in text
    # OpenVINO's export is a slow test's
    monkeypatch.setattr(fidelity, "candidates", lambda *args, **kwargs: [ORT, TORCH])
    choice = choose_backend(seg, depth, SPEC, "fast", "auto", lambda: frames, cache=cache)
    assert choice.backend == TORCH and "not onnxruntime f32 (seg agreement" in choice.line()


def test_thresholds_are_configurable(seg, depth, frames, cache, lossy_onnxruntime):
    lenient = Thresholds(seg_agreement=0.0, disparity_spearman=-1.0)
    choice = choose_backend(seg, depth, SPEC, "fast", "onnxruntime", lambda: frames, lenient, cache)
    assert choice.backend == ORT and choice.trial.fidelity.seg_agreement < 0.995


@pytest.mark.parametrize("every", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["ort", "installed"])
def test_auto_takes_the_fastest_passing_backend(every, seg, depth, frames, cache, monkeypatch):
    if not every:
        monkeypatch.setattr(fidelity, "candidates", lambda *args, **kwargs: [ORT, TORCH])
    choice = choose_backend(seg, depth, SPEC, "fast", "auto", lambda: frames, cache=cache)
    tried = {t.backend.name for t in [choice.trial, choice.reference, *choice.refused]}
    assert tried == ({"torch", "onnxruntime", "openvino"} if every else {"torch", "onnxruntime"})
    assert choice.trial.usable
    passing = [t for t in [choice.trial, choice.reference, *choice.refused] if t.usable]
    assert choice.trial.speed.total_ms == min(t.speed.total_ms for t in passing)
    assert choice.line().startswith(f"perception backend: {choice.backend}")
    assert "\n" not in choice.line()
    # the chosen models run on that backend
    assert choice.trial.seg.backend == choice.backend and choice.trial.depth.backend == choice.backend


def test_torch_needs_no_frames_and_auto_without_frames_stays_on_torch(seg, depth):
    for wanted in ("torch", "auto"):
        choice = choose_backend(seg, depth, SPEC, "fast", wanted, None)
        assert choice.backend == TORCH and choice.trial.seg is seg


def test_backend_names_are_checked_in_one_line(monkeypatch):
    assert parse_backend("auto") is None
    assert parse_backend("onnxruntime") == ORT
    assert parse_backend("openvino:f32") == OV
    for text, message in (("tensorrt", "unknown; backends: auto, torch, openvino, onnxruntime"),
                          ("onnxruntime:bf16", "onnxruntime runs in f32 here")):
        with pytest.raises(So101Error, match=message):
            parse_backend(text)
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(So101Error, match="the openvino package is not installed; pip install openvino"):
        parse_backend("openvino")


def test_infer_refuses_backend_without_real_perception(capsys):
    code, _, err = run_cli(capsys, "infer", "--ckpt", "scripted", "-n", "1", "--backend", "openvino")
    assert code != 0 and "--backend: only with --perception real" in err


@pytest.mark.slow  # loads both networks and tries every backend (~30 s)
def test_perceive_check_prints_every_backend(capsys, seg_ckpt, depth_folder, frames, monkeypatch, tmp_path):
    import cv2

    monkeypatch.setattr(backends, "compiled_dir", lambda model_cache=None: tmp_path / "compiled")
    for i, rgb in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i}.png"), rgb[..., ::-1])
    code, out, err = run_cli(capsys, "perceive", str(tmp_path), "--check", "--seg-ckpt", str(seg_ckpt),
                             "--depth-model", str(depth_folder), "--perception-threads", "1")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert f"2 frames of {tmp_path}, 1 thread(s)" in lines[0]  # the source's own frames, on the budget
    assert lines[1].startswith("torch f32: seg") and lines[1].endswith("the reference")
    assert any(line.startswith("onnxruntime f32: seg") and line.endswith(": pass") for line in lines)
    assert np.all([("fidelity seg" in line) for line in lines[2:]])


def test_auto_remembers_its_pick_and_still_checks_it_each_load(seg, depth, frames, cache, monkeypatch):
    monkeypatch.setattr(fidelity, "candidates", lambda *args, **kwargs: [ORT, TORCH])
    first = choose_backend(seg, depth, SPEC, "fast", "auto", lambda: frames, cache=cache)
    assert first.remembered is None and first.reference is not None  # timed
    again = choose_backend(seg, depth, SPEC, "fast", "auto", lambda: frames, cache=cache)
    assert again.remembered is not None and again.backend == first.backend and again.reference is None
    assert "auto's pick of" in again.line()
    if again.backend != TORCH:  # checked now, not trusted from before
        assert again.trial.fidelity is not None and again.trial.fidelity.passed
    [record] = (cache / "choices").glob("*.json")
    record.write_text("{not json")  # a damaged record: timed afresh
    assert choose_backend(seg, depth, SPEC, "fast", "auto", lambda: frames, cache=cache).remembered is None


def test_a_remembered_pick_that_fails_its_check_now_is_chosen_afresh(seg, depth, frames, cache, monkeypatch):
    monkeypatch.setattr(fidelity, "candidates", lambda *args, **kwargs: [ORT, TORCH])
    record = fidelity._choice_file(seg, depth, SPEC, "fast", cache, None)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"backend": "onnxruntime:f32", "chosen": "before"}))
    good = choose_backend(seg, depth, SPEC, "fast", "auto", lambda: frames, cache=cache)
    assert good.remembered == "before" and good.backend == ORT
    load = backends._LOADERS["onnxruntime"]
    monkeypatch.setitem(backends._LOADERS, "onnxruntime",  # its graph now loses the frames
                        lambda files, b, d: (lambda x: torch.randn_like(load(files, b, d)(x))))
    record.write_text(json.dumps({"backend": "onnxruntime:f32", "chosen": "before"}))
    fresh = choose_backend(seg, depth, SPEC, "fast", "auto", lambda: frames, cache=cache)
    assert fresh.remembered is None and fresh.backend == TORCH


# ---------------------------------------------------------------- networks with real structure


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The heads fitted to the twin (fixtures.fit_to_twin), saved and loaded as a user's weights are."""
    from fixtures import fit_to_twin, twin_views, write_depth_folder

    views = twin_views()
    seg_net, depth_net = fit_to_twin(views)
    folder = tmp_path_factory.mktemp("fitted")
    write_lightning_seg_ckpt(folder / "seg.ckpt", net=seg_net)
    write_depth_folder(folder / "depth", net=depth_net)
    return load_segmentation(folder / "seg.ckpt"), load_depth(folder / "depth"), [v[0] for v in views]


def _rounded(model, dtype):
    """The same model with its weights rounded to ``dtype``: what a bf16 or fp16 runtime keeps of them."""
    import copy

    return dataclasses.replace(model, net=copy.deepcopy(model.net).to(dtype).float())


@pytest.mark.slow
def test_the_fitted_networks_see_the_twin_and_keep_their_frames_in_bf16(fitted, seg, depth, cache):
    from so101_sim2real.control.env import sim_env

    fit_seg, fit_depth, images = fitted
    mine = RealPerception(None, fit_seg, fit_depth, SPEC, "fast", workers=1)
    rig = sim_env(default_spec())  # the twin's own observation at the same reset
    try:
        rig.reset(0)
        twin = rig.perception.observe().frame
    finally:
        rig.close()
    frame = mine.perceive(images[0]).frame
    assert np.mean(frame[0] == twin[0]) > 0.8  # classes where the twin has them
    assert fidelity.spearman(frame[1], twin[1]) > 0.6  # near and far where the twin has them
    # bf16 weights keep a trained-like network's observation; random weights lose more of theirs, so on
    # random weights the check would refuse a precision a real network keeps
    kept = {}
    for name, (s, d) in {"fitted": (fit_seg, fit_depth), "random": (seg, depth)}.items():
        reference = RealPerception(None, s, d, SPEC, "fast", workers=1)
        rounded = RealPerception(None, _rounded(s, torch.bfloat16), _rounded(d, torch.bfloat16), SPEC, "fast",
                                 workers=1)
        kept[name] = compare_frames(reference_frames(reference, images[:3]), rounded, images[:3])
    assert kept["fitted"].passed, kept["fitted"].summary()
    assert kept["random"].disparity_spearman < kept["fitted"].disparity_spearman, kept
    # and an exported backend keeps the fitted networks' frames
    choice = choose_backend(fit_seg, fit_depth, SPEC, "fast", "onnxruntime", lambda: images[:3],
                            cache=cache)
    assert choice.trial.fidelity.passed and choice.trial.fidelity.seg_agreement >= 0.995


def test_after_openvino_compiles_a_signal_handler_still_has_room(seg, frames, cache):
    """OpenVINO leaves an 11 KiB alternate signal stack on the compiling thread; a SIGTERM handler
    (Python's run on it) then overflowed it, and the process segfaulted instead of stopping the arm."""
    seg.on_backend(OV, cache).predict(frames[0], (192, 256))
    size = backends.signal_stack_size()
    assert size is None or size >= backends.SIGNAL_STACK, size


# ---------------------------------------------------------------- thread budgets


@pytest.fixture
def torch_threads():
    """The test's thread settings undone: torch keeps a count per thread, and the main thread's is shared."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_the_thread_budget_reaches_every_backend(seg, depth, frames, cache, monkeypatch, torch_threads):
    import onnxruntime as ort

    sessions = []
    real = ort.InferenceSession

    def recorded(path, options, **kwargs):
        sessions.append(options.intra_op_num_threads)
        return real(path, options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recorded)
    torch.set_num_threads(2)
    depth.on_backend(ORT.with_threads(1), cache).predict(frames[0], 140)  # compiled where torch has 2
    assert sessions == [1]
    choice = choose_backend(seg, depth, SPEC, "fast", "onnxruntime", lambda: frames, cache=cache, threads=1)
    assert choice.backend == ORT and choice.backend.threads == 1
    assert sessions == [1, 1, 1]  # seg and depth, each on the budget
    assert torch.get_num_threads() == 2  # the caller's thread got its own count back
    monkeypatch.setattr(fidelity, "candidates", lambda threads=None, gpu=False: [ORT.with_threads(threads)])
    shutil.rmtree(cache)  # auto exports and compiles afresh
    perceived_on = []
    perceive = RealPerception._perceive
    monkeypatch.setattr(RealPerception, "_perceive",
                        lambda self, *a: perceived_on.append(torch.get_num_threads()) or perceive(self, *a))
    auto = choose_backend(seg, depth, SPEC, "fast", "auto", lambda: frames, cache=cache, threads=1)
    assert {t.backend.threads for t in [auto.trial, auto.reference, *auto.refused]} == {1}
    assert len(perceived_on) > 4 and set(perceived_on) == {1}  # every trial and check on the budget
    assert sessions[3:] == [1, 1] and "on 1 thread" in auto.line()
    # torch's own stages (pre- and post-processing, and the torch backend) run on it too, in every thread
    seen = []

    def watched(model):
        inner = model.predict
        model.predict = lambda *a, **k: seen.append(torch.get_num_threads()) or inner(*a, **k)
        return model

    for workers in (1, 2):  # 2: seg runs in the perception's pool thread
        torch.set_num_threads(2)
        perception = RealPerception(None, watched(seg.on_backend(TORCH)), watched(depth.on_backend(TORCH)), SPEC,
                                    "fast", workers=workers, threads=1)
        perception.perceive(frames[0])
        perception.close()
    assert seen == [1, 1, 1, 1]


def test_a_zero_thread_budget_is_refused_before_the_networks_load(capsys, tmp_path, frames):
    import cv2

    cv2.imwrite(str(tmp_path / "0.png"), frames[0][..., ::-1])
    for check in ((), ("--check",)):
        code, _, err = run_cli(capsys, "perceive", str(tmp_path), "--seg-ckpt", str(tmp_path / "none.ckpt"),
                               "--perception-threads", "0", *check)
        assert code == 2 and "--perception-threads 0: give at least 1" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "infer", "--ckpt", "scripted", "-n", "1", "--perception-threads", "1")
    assert code != 0 and "--perception-threads: only with --perception real" in err


# ---------------------------------------------------------------- fp16 for networks on a GPU


def test_torch_fp16_is_for_a_gpu_and_auto_tries_it_there(seg, depth, frames, monkeypatch):
    assert parse_backend("torch:f16") == Backend("torch", "f16")
    with pytest.raises(So101Error, match="torch runs in f32 or f16 here"):
        parse_backend("torch:bf16")
    with pytest.raises(So101Error, match="fp16 is for networks on a GPU"):  # these networks are on the CPU
        choose_backend(seg, depth, SPEC, "fast", "torch:f16", lambda: frames)
    monkeypatch.setattr(backends, "cuda_provider", lambda: False)
    assert backends.candidates(gpu=True) == [Backend("torch", "f16"), TORCH]
    monkeypatch.setattr(backends, "cuda_provider", lambda: True)
    assert backends.candidates(gpu=True) == [Backend("torch", "f16"), ORT, TORCH]
    assert Backend("torch", "f16") not in backends.candidates()  # a CPU's: the exported runtimes


def test_the_fp16_core_computes_the_networks_output_and_leaves_the_reference_alone(depth, frames):
    from so101_sim2real.perception.depth import DepthCore

    core = DepthCore(depth.net)
    x = to_tensor(frames[0], (140, 182), torch.device("cpu"), mode="bicubic")
    half = backends.compile_core(core, tuple(x.shape), Backend("torch", "f16"))
    with torch.inference_mode():
        reference, out = core(x), half(x)
    assert out.dtype == torch.float32 and out.shape == reference.shape
    assert fidelity.spearman(out.numpy(), reference.numpy()) > 0.99  # fp16 rounding, not another network
    assert not torch.equal(out, reference)  # it did compute in fp16
    assert next(depth.net.parameters()).dtype == torch.float32  # the reference keeps its weights


def test_a_pick_is_checked_again_on_the_cameras_own_frames(seg, depth, frames, cache, monkeypatch):
    """Chosen on twin renders, checked again on what the arm's camera shows: kept if it passes;
    else auto falls back to torch and a named backend is refused."""
    from so101_sim2real.perception.fidelity import camera_frames, confirm_on_camera

    monkeypatch.setattr(fidelity, "candidates", lambda *args, **kwargs: [ORT, TORCH])
    choice = choose_backend(seg, depth, SPEC, "fast", "onnxruntime", lambda: frames, cache=cache)
    kept = confirm_on_camera(choice, frames, SPEC, "fast", "onnxruntime")
    assert kept.backend == ORT and kept.camera.passed and "on 2 camera frames too: fidelity seg 1.0000" in kept.line()
    strict = Thresholds(seg_agreement=1.01, disparity_spearman=1.01)  # what no backend keeps: a scene it fails on
    fallen = confirm_on_camera(choice, frames, SPEC, "fast", "auto", strict)
    assert fallen.backend == TORCH and fallen.trial.seg.backend == TORCH and fallen.trial.depth.backend == TORCH
    assert "onnxruntime f32 passed on twin renders but not on 2 camera frames (seg agreement" in fallen.line()
    with pytest.raises(So101Error, match="backend onnxruntime: refused on 2 camera frames: seg agreement"):
        confirm_on_camera(choice, frames, SPEC, "fast", "onnxruntime", strict)

    class Live:
        count = 0

        def read(self):
            from so101_sim2real.interfaces import Frame

            self.count += 1
            return Frame(frames[0], float(self.count))

    live = Live()
    assert len(camera_frames(live, 3, gap=4)) == 3 and live.count == 9  # every 4th frame, none read past the last


def test_two_networks_run_at_once_only_where_the_cores_this_process_may_use_hold_both_budgets(
        seg, depth, monkeypatch, torch_threads):
    import os

    from so101_sim2real.perception import real

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)  # pinned to 2 of the 8
    torch.set_num_threads(2)
    assert RealPerception(None, seg, depth, SPEC, "fast").workers == 1  # 2 + 2 threads would not fit
    assert real.auto_workers("cpu", 1) == 2 and real.auto_workers("cpu", 2) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert real.auto_workers("cpu") == 2 and real.auto_workers("cpu", 4) == 2 and real.auto_workers("cpu", 5) == 1
    assert real.auto_workers("cuda", 8) == 2


def test_a_first_load_says_what_it_is_doing_as_it_goes(seg, depth, frames, tmp_path, monkeypatch, caplog):
    """A fresh cache costs a minute of exports and timings: each step is said when it starts, and the
    CLI shows these lines on stderr (issue 26: a minute of silence)."""
    import logging

    monkeypatch.setattr(fidelity, "candidates", lambda *args, **kwargs: [ORT, TORCH])
    with caplog.at_level(logging.INFO, logger="so101_sim2real"):
        choose_backend(seg, depth, SPEC, "fast", "auto", lambda: frames, cache=tmp_path / "fresh")
    said = [r.getMessage() for r in caplog.records]
    assert said[0].startswith("perception: choosing where the networks run: onnxruntime f32, each checked")
    assert any("timing torch f32, the reference" in line for line in said)
    assert any(line.startswith("perception: onnxruntime f32: exporting its graphs") for line in said)
    assert any(line.startswith("perception: onnxruntime f32: done in") for line in said)
