import numpy as np
import pytest

from so101_sim2real.errors import ObservationError
from so101_sim2real.observation import depth_to_disparity, finish_frame, real_to_sim_ids
from so101_sim2real.spec import default_spec


def _scene(h=480, w=640):
    """A synthetic wrist view: floor sloping away, a near cube in the middle, far clutter outside the crop."""
    depth = np.tile(np.linspace(0.10, 0.40, h)[:, None], (1, w))
    seg = np.full((h, w), 1, np.uint8)  # table
    seg[200:280, 280:360] = 2  # cube
    depth[200:280, 280:360] = 0.08
    depth[:, :40] = 5.0  # far wall, only in the 80 px the crop removes
    seg[:, :40] = 0
    return seg, depth


def test_frame_shape_dtype_and_channel_order():
    spec = default_spec().observation
    seg, depth = _scene()
    frame = finish_frame(spec, seg, depth_to_disparity(depth, spec.disparity.epsilon_m))
    assert frame.shape == (2, 84, 84) and frame.dtype == np.uint8
    assert set(np.unique(frame[0])) == {1, 2}  # seg first, nearest keeps ids exact
    # disparity second; as trained, min-max over the whole frame: the far wall outside
    # the crop takes the 0 and the crop starts above it
    assert frame[1].max() >= 254 and frame[1].min() > 0


def test_near_is_bright():
    spec = default_spec().observation
    seg, depth = _scene()
    frame = finish_frame(spec, seg, depth_to_disparity(depth, spec.disparity.epsilon_m))
    cube = frame[1][frame[0] == 2].mean()
    assert cube > frame[1][0].mean() > frame[1][-1].mean()  # cube > near floor > far floor


def test_crop_before_normalising_differs_from_the_full_frame_training_observation():
    spec = default_spec().replace("observation.disparity.normalise_region", "crop").observation
    trained_spec = default_spec().observation
    assert trained_spec.disparity.normalise_region == "full_frame"  # the user's training pipeline
    seg, depth = _scene()
    disp = depth_to_disparity(depth, spec.disparity.epsilon_m)
    fixed, trained = finish_frame(spec, seg, disp)[1], finish_frame(trained_spec, seg, disp)[1]
    # the far wall lies outside the crop: normalising over the full frame spends range on it
    assert fixed.min() == 0 and trained.min() > 0
    assert not np.array_equal(fixed, trained)


def test_the_disparity_channel_is_the_training_wrappers_formula():
    # SegDepthWrapper: 1 / (depth + 1e-3) in float32, min-max over the whole 640x480 frame,
    # * 255 truncated to uint8, then the 80 px side crop and an INTER_AREA resize to 84.
    spec = default_spec().observation
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.05, 3.0, (480, 640)).astype(np.float32)
    seg = np.zeros((480, 640), np.uint8)
    disp = depth_to_disparity(depth, spec.disparity.epsilon_m)
    assert disp.dtype == np.float32
    lo, hi = disp.min(), disp.max()
    as_trained = (((disp - lo) / (hi - lo)) * 255).astype(np.uint8)[:, 80:560]
    import cv2
    expected = cv2.resize(as_trained, (84, 84), interpolation=cv2.INTER_AREA)
    assert np.array_equal(finish_frame(spec, seg, disp)[1], expected)


def test_a_flat_disparity_map_is_all_near():
    spec = default_spec().observation
    frame = finish_frame(spec, np.zeros((480, 640), np.uint8), np.full((480, 640), 2.0, np.float32))
    assert (frame[1] == 255).all()


def test_real_ids_map_to_sim_ids():
    table = default_spec().observation.segmentation.real_to_sim
    assert real_to_sim_ids(np.array([0, 1, 2, 3, 4, 5]), table).tolist() == [0, 0, 1, 2, 3, 4]
    with pytest.raises(ObservationError, match="0..5"):
        real_to_sim_ids(np.array([6]), table)


def test_unmapped_real_ids_are_refused():
    spec = default_spec().observation
    seg, depth = _scene()
    seg[0, 100] = 5
    with pytest.raises(ObservationError, match="sim ids are 0..4"):
        finish_frame(spec, seg, depth)
