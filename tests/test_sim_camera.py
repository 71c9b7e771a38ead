"""The twin's wrist camera and privileged observation (rendered offscreen with EGL)."""

import mujoco
import numpy as np
import pytest

from so101_sim2real.sim import scene as S
from so101_sim2real.sim.camera import PrivilegedPerception, SimCamera, segmentation_lut
from so101_sim2real.sim.task import LiftCubeTask
from so101_sim2real.spec import default_spec

CLASSES = default_spec().observation.segmentation.classes  # background, table, cube, static, moving


@pytest.fixture(scope="module")
def twin():
    spec = default_spec()
    task = LiftCubeTask(spec)
    camera = SimCamera(task.model, task.data, spec.observation)
    yield task, camera, PrivilegedPerception(camera, spec.observation)
    camera.close()


def set_gripper(task, rad):
    task.data.qpos[task._qpos[-1]] = rad
    mujoco.mj_forward(task.model, task.data)


def test_classes_come_from_names_not_ids():
    spec = S.build_spec()
    # an extra world geom before the cube shifts every later geom id
    spec.worldbody.add_geom(name="clutter", type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[0.01, 0, 0], pos=[1, 1, 0])
    model = spec.compile()
    lut = segmentation_lut(model, CLASSES)
    cls = {model.geom(i).name or f"#{i}": lut[i + 1] for i in range(model.ngeom)}
    assert cls[S.FLOOR_GEOM] == 1 and cls[S.CUBE_GEOM] == 2 and cls["clutter"] == 0
    assert cls[S.STATIC_PAD] == 3 and cls[S.MOVING_PAD] == 4
    gripper, jaw, base = (model.body(n).id for n in (S.GRIPPER_BODY, S.MOVING_JAW_BODY, "base"))
    assert set(lut[np.flatnonzero(model.geom_bodyid == gripper) + 1]) == {3}
    assert set(lut[np.flatnonzero(model.geom_bodyid == jaw) + 1]) == {4}
    assert set(lut[np.flatnonzero(model.geom_bodyid == base) + 1]) == {0}
    assert lut[0] == 0  # nothing rendered (-1) is background


def test_observation_shape_dtype_and_channel_order(twin):
    task, _, perception = twin
    task.reset(0)
    p = perception.observe()
    assert p.frame.shape == (2, 84, 84) and p.frame.dtype == np.uint8
    seg, disp = p.frame
    assert seg.max() <= 4 and set(np.unique(seg)) <= {0, 1, 2, 3, 4}  # channel 0: class ids
    assert len(np.unique(disp)) > 20  # channel 1: a continuous disparity image
    assert p.seg_ids.shape == p.disparity.shape == (480, 640)


def test_cube_and_fingers_are_visible(twin):
    task, _, perception = twin
    for seed in range(3):
        task.reset(seed)
        seg = perception.observe().frame[0]
        assert (seg == 2).sum() > 50 and (seg == 3).sum() > 50, np.bincount(seg.ravel(), minlength=5)
    # The moving jaw swings out of this camera's view when the gripper opens past ~0.9
    # rad (the reset opening is 1.07 rad); closed for the grasp, both fingers are in view.
    set_gripper(task, 0.0)
    seg = perception.observe().frame[0]
    assert {2, 3, 4} <= set(np.unique(seg))


def test_disparity_is_bright_where_near(twin):
    task, camera, perception = twin
    task.reset(0)
    set_gripper(task, 0.0)
    p = perception.observe()
    seg, disp = p.frame
    fingers, table = np.isin(seg, (3, 4)), seg == 1
    assert disp[fingers].mean() > disp[table].mean() + 100
    assert disp.max() >= 250 and fingers[np.unravel_index(disp.argmax(), disp.shape)]
    depth = camera.depth_m()
    assert depth[p.seg_ids == 3].mean() < depth[p.seg_ids == 1].mean()  # fingers nearer than the table, in metres


def test_rgb_lines_up_with_segmentation(twin):
    task, camera, perception = twin
    task.reset(1)
    rgb = camera.read().rgb
    seg = perception.observe().seg_ids
    assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8
    cube = rgb[seg == 2].astype(float).mean(axis=0)
    assert cube[0] > cube[1] + 60 and cube[0] > cube[2] + 60  # the red cube is where seg says, not flipped


def test_normalising_over_the_crop_is_a_spec_option(twin):
    task, camera, _ = twin
    task.reset(2)
    trained = default_spec().observation
    assert trained.disparity.normalise_region == "full_frame"  # the default is the training observation
    crop_spec = default_spec().replace("observation.disparity.normalise_region", "crop").observation
    full = PrivilegedPerception(camera, trained).observe().frame
    crop = PrivilegedPerception(camera, crop_spec).observe().frame
    assert np.array_equal(crop[0], full[0])  # seg unchanged
    assert not np.array_equal(crop[1], full[1])  # another disparity than the policy was trained on
    assert full[1].max() <= crop[1].max()  # normalised over a wider region, the crop's range only shrinks


def test_closing_one_camera_leaves_another_working(twin):
    task, camera, _ = twin
    task.reset(0)
    before = camera.seg_ids()
    other = SimCamera(task.model, task.data, default_spec().observation)
    other.seg_ids()
    other.close()  # MuJoCo frees GL objects in the current context: ours must survive
    assert np.array_equal(camera.seg_ids(), before)
