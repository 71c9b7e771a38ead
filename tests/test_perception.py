"""Real perception: the user's networks (random weights, real sizes) into the sim's observation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fixtures import write_lightning_seg_ckpt
from so101_sim2real.errors import CheckpointError, ObservationError, So101Error
from so101_sim2real.observation import depth_to_disparity, finish_frame, real_to_sim_ids
from so101_sim2real.perception import DEFAULT_DEPTH_MODEL
from so101_sim2real.perception.depth import DepthModelMissing, input_size, load_depth
from so101_sim2real.perception.hub import add_folder, cached_models
from so101_sim2real.perception.real import PROFILES, RealPerception, fit_to_source
from so101_sim2real.perception.segmentation import SegmentationNet, load_segmentation
from so101_sim2real.safe_pickle import torch_load
from so101_sim2real.spec import default_spec

SPEC = default_spec().observation


def _scene(h: int = 480, w: int = 640) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic wrist-camera scene: table receding upwards, a near cube, fingers at the bottom corners."""
    rows = np.linspace(0.0, 1.0, h)[:, None]
    depth = np.broadcast_to(0.45 - 0.3 * rows, (h, w)).copy()  # table, nearer towards the bottom
    ids = np.ones((h, w), dtype=np.uint8)  # table
    ids[: h // 6] = 0  # far background
    ids[200:300, 280:380], depth[200:300, 280:380] = 2, 0.12  # cube
    ids[380:, :150], depth[380:, :150] = 3, 0.04  # static finger
    ids[380:, 520:], depth[380:, 520:] = 4, 0.05  # moving finger (partly outside the crop)
    return ids, depth


def test_segmentation_net_has_the_users_size_and_levels():
    net = SegmentationNet().eval()
    params = sum(p.numel() for p in net.parameters())
    assert 0.80e6 < params < 0.90e6  # about 0.85M (docs/reference.md section 3)
    assert net.backbone.feature_info.channels() == [16, 32, 64, 128]
    assert net.backbone.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        logits = net(torch.rand(1, 3, 96, 128))
    assert logits.shape == (1, 6, 96, 128)


def test_head_before_upsampling_equals_the_trained_order():
    """The head runs before the upsampling for speed; both are linear, so the logits are the same."""
    torch.manual_seed(0)
    net = SegmentationNet().eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        feats = net.backbone(x)
        top = net.lateral_convs[-1](feats[-1])
        for level in range(len(feats) - 2, -1, -1):
            lateral = net.lateral_convs[level](feats[level])
            top = lateral + F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        finest = F.interpolate(net.output_convs[0](top), size=(64, 96), mode="bilinear", align_corners=False)
        trained_order = net.seg_head(finest)
        assert torch.allclose(net(x), trained_order, atol=1e-5)


def test_lightning_checkpoint_loads_with_its_classes_size_and_weights(tmp_path):
    path = tmp_path / "seg7.ckpt"
    original = write_lightning_seg_ckpt(path, num_classes=7, input_size=(240, 320), seed=3)
    model = load_segmentation(path)
    assert model.num_classes == 7  # read from the head's weights
    assert model.input_size == (240, 320)  # from hparams img_height, img_width
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.net(x), original(x))
    with pytest.raises(So101Error, match="7 classes; the spec's real class table has 6"):
        RealPerception(None, model, None, SPEC)


def test_segmentation_checkpoint_errors(tmp_path, seg_ckpt, snapshot):
    with pytest.raises(CheckpointError, match="no such segmentation checkpoint"):
        load_segmentation(tmp_path / "nope.ckpt")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(seg_ckpt.read_bytes()[:50_000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_segmentation(truncated)
    with pytest.raises(CheckpointError, match="not an EfficientViT segmentation checkpoint"):
        load_segmentation(snapshot)  # a policy snapshot
    state = torch_load(seg_ckpt)  # a plain torch.load needs Lightning installed for its AttributeDict
    state["state_dict"]["model.lateral_convs.0.weight"] = torch.zeros(64, 8, 1, 1)
    wrong = tmp_path / "wrong.ckpt"
    torch.save({"state_dict": state["state_dict"]}, wrong)
    with pytest.raises(CheckpointError, match="do not fit efficientvit_b0"):
        load_segmentation(wrong)


def test_depth_model_is_depth_anything_v2_small(depth):
    assert sum(p.numel() for p in depth.net.parameters()) == 24_785_089
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    disparity = depth.predict(rgb, side=140, out_size=(60, 80))
    assert disparity.shape == (60, 80) and disparity.dtype == np.float32 and np.isfinite(disparity).all()
    assert input_size(480, 640, 518) == (518, 686)
    assert input_size(480, 480, 140) == (140, 140)
    assert all(s % 14 == 0 for s in input_size(720, 1280, 182))


def test_depth_model_from_the_cache_and_its_errors(tmp_path, depth_folder):
    cache = tmp_path / "hub"
    with pytest.raises(DepthModelMissing, match="so101 models download " + DEFAULT_DEPTH_MODEL):
        load_depth(DEFAULT_DEPTH_MODEL, cache_dir=cache)
    add_folder(depth_folder, DEFAULT_DEPTH_MODEL, cache)
    assert [m.repo_id for m in cached_models(cache)] == [DEFAULT_DEPTH_MODEL]
    model = load_depth(DEFAULT_DEPTH_MODEL, cache_dir=cache)
    assert model.net.config.model_type == "depth_anything"
    with pytest.raises(So101Error, match="no such model folder"):
        load_depth(tmp_path / "missing")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(So101Error, match="not Depth Anything"):
        load_depth(tmp_path / "bert")


def test_finish_frame_is_the_same_for_sim_and_real_inputs_of_one_scene():
    """The sim renders sim ids and metric depth; the real models give real ids and a relative
    disparity (any positive scale of it). Both must become the identical policy frame."""
    sim_ids, depth_m = _scene()
    sim_frame = finish_frame(SPEC, sim_ids, depth_to_disparity(depth_m, SPEC.disparity.epsilon_m))
    sim_to_real = np.array([1, 2, 3, 4, 5])  # background, table, cube, static, moving in the real model's ids
    real_ids = sim_to_real[sim_ids]
    real_disparity = 4.0 * depth_to_disparity(depth_m, SPEC.disparity.epsilon_m)  # relative: scale unknown
    real_frame = finish_frame(SPEC, real_to_sim_ids(real_ids, SPEC.segmentation.real_to_sim), real_disparity)
    assert np.array_equal(sim_frame, real_frame)
    assert sim_frame.shape == (2, 84, 84) and sim_frame.dtype == np.uint8
    assert set(np.unique(sim_frame[0])) <= {0, 1, 2, 3, 4}


def test_unlabeled_and_background_both_become_sim_background():
    ids = real_to_sim_ids(np.arange(6).reshape(2, 3), SPEC.segmentation.real_to_sim)
    assert ids.ravel().tolist() == [0, 0, 1, 2, 3, 4]
    with pytest.raises(ObservationError, match="covers 0..5"):
        real_to_sim_ids(np.array([[6]]), SPEC.segmentation.real_to_sim)


@pytest.mark.slow
@pytest.mark.parametrize("real_id", range(6))
def test_the_pipeline_remaps_every_real_class(seg, depth, real_id):
    """A head that always answers ``real_id`` gives the spec's sim id over the whole frame."""
    rigged = dataclasses.replace(seg, net=SegmentationNet().eval())
    with torch.no_grad():
        rigged.net.seg_head.weight.zero_()
        rigged.net.seg_head.bias.copy_(torch.arange(6) == real_id)
    perception = RealPerception(None, rigged, depth, SPEC, "fast")
    rgb = np.random.default_rng(real_id).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    frame = perception.perceive(rgb).frame
    assert (frame[0] == SPEC.segmentation.real_to_sim[real_id]).all()


@pytest.mark.parametrize("profile", ["fast", pytest.param("exact", marks=pytest.mark.slow)])
def test_both_profiles_give_the_policy_frame(seg, depth, profile):
    perception = RealPerception(None, seg, depth, SPEC, profile)
    rgb = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    seen = perception.perceive(rgb, timestamp=1.5, with_rgb=True)
    assert seen.frame.shape == (2, 84, 84) and seen.frame.dtype == np.uint8
    assert seen.frame[0].max() <= 4
    assert np.array_equal(seen.frame, finish_frame(SPEC, seen.seg_ids, seen.disparity))  # the sim's function
    expected_maps = (168, 224) if profile == "fast" else (480, 640)  # full frame: disparity normalised over it
    assert seen.seg_ids.shape == seen.disparity.shape == expected_maps
    assert seen.timestamp == 1.5 and seen.rgb is rgb
    assert perception.last_timing.total_ms > 0


def test_fast_profile_crops_before_anything_sees_the_image(seg, depth):
    """Normalised over the crop, pixels outside the crop cannot change the observation."""
    spec = default_spec().replace("observation.disparity.normalise_region", "crop").observation
    perception = RealPerception(None, seg, depth, spec, "fast")
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    other = rgb.copy()
    other[:, :80] = 255
    other[:, 560:] = 0
    assert np.array_equal(perception.perceive(rgb).frame, perception.perceive(other).frame)


def test_full_frame_normalisation_gives_depth_the_whole_frame_and_seg_the_crop(seg, depth):
    """As trained, disparity is normalised over the full frame: depth must see it all, while the
    (cropped) seg channel cannot depend on pixels outside the crop."""
    spec = default_spec().observation
    assert spec.disparity.normalise_region == "full_frame"
    perception = RealPerception(None, seg, depth, spec, "fast")
    assert not perception.crop_first
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    other = rgb.copy()
    other[:, :80] = 255
    other[:, 560:] = 0
    a, b = perception.perceive(rgb), perception.perceive(other)
    assert a.disparity.shape == a.seg_ids.shape == (168, 224)  # the full frame, scaled
    assert np.array_equal(a.frame[0], b.frame[0])  # seg: the crop only
    assert not np.array_equal(a.disparity, b.disparity)  # depth: the whole frame
    assert (a.seg_ids[:, :28] == 0).all() and (a.seg_ids[:, 196:] == 0).all()  # outside the crop: unlabeled


def test_camera_images_are_fitted_to_the_source_size():
    big = np.zeros((960, 1280, 3), dtype=np.uint8)
    assert fit_to_source(big, (480, 640)).shape == (480, 640, 3)
    with pytest.raises(ObservationError, match="set the camera to 640x480"):
        fit_to_source(np.zeros((720, 1280, 3), dtype=np.uint8), (480, 640))


def test_profiles_are_what_the_docs_say():
    assert PROFILES["exact"].seg_side is None and PROFILES["exact"].depth_side == 518
    assert PROFILES["fast"].crop_first and PROFILES["fast"].depth_side % 14 == 0


@pytest.mark.parametrize("prefix", ["", "net.", "model.model."])
def test_any_lightning_module_prefix_is_stripped(tmp_path, prefix):
    path = tmp_path / "seg.ckpt"
    original = write_lightning_seg_ckpt(path, prefix=prefix, seed=4)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_segmentation(path).net(x), original(x))
