"""so101 calibrate rig: the camera mount and joint zeros recovered on the twin, where the truth is known."""


import mujoco
import numpy as np
import pytest

from so101_sim2real.calibrate.hand_eye import RigView, euler_to_matrix, fit_rig, matrix_to_euler
from so101_sim2real.calibrate.rig_rehearsal import RigTruth, mount_error
from so101_sim2real.geometry.rig_file import default_rig


def test_mujoco_euler_round_trips_through_the_matrix():
    rng = np.random.default_rng(0)
    for euler in [(0.398, 0.0, 3.14159), *rng.uniform(-1.4, 1.4, size=(20, 3))]:
        R = euler_to_matrix(euler)
        quat = np.zeros(4)
        mujoco.mju_euler2Quat(quat, np.asarray(euler, float), "xyz")
        mat = np.zeros(9)
        mujoco.mju_quat2Mat(mat, quat)
        assert np.allclose(R, mat.reshape(3, 3))
        assert np.allclose(euler_to_matrix(matrix_to_euler(R)), R, atol=1e-12)


def _truth_views(truth, board, poses):
    """What the twin with the true mount and joints sees at each reading (no bus: the geometry alone)."""
    from dataclasses import replace

    from so101_sim2real.geometry.board import detect
    from so101_sim2real.sim import scene as S

    scene = S.scene_for_rig(truth, (480, 640), replace(S.SceneConfig(), table_board=board))
    model = S.build_model(scene)
    data = mujoco.MjData(model)
    adr = [model.jnt_qposadr[model.joint(j).id] for j in S.JOINTS]
    from so101_sim2real.sim.camera import _import_triton_before_gl

    _import_triton_before_gl()
    renderer = mujoco.Renderer(model, 480, 640)
    views = []
    try:
        for reading in poses:
            data.qpos[adr] = reading + truth.joint_offsets_rad
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera=S.WRIST_CAMERA)
            found = detect(board.board, renderer.render())
            if found is not None:
                views.append(RigView(reading, found[0].astype(float), found[1].astype(float)))
    finally:
        renderer.close()
    return views


@pytest.mark.slow
def test_the_fit_recovers_injected_joint_offsets_and_a_moved_mount():
    from so101_sim2real.calibrate.rig_poses import rig_poses
    from so101_sim2real.geometry.board import BoardSpec
    from so101_sim2real.sim import scene as S
    from so101_sim2real.sim.table_board import TableBoard

    guess, board = default_rig(), TableBoard(BoardSpec())
    truth = RigTruth().rig(guess)
    assert mount_error(guess, truth)[0] == pytest.approx(8.0, abs=0.1)  # the 8 mm / 4 degrees
    assert mount_error(guess, truth)[1] == pytest.approx(4.0, abs=0.1)
    model = S.build_model()
    limits = np.array([model.jnt_range[model.joint(j).id] for j in S.JOINTS])
    views = _truth_views(truth, board, rig_poses(limits, guess.camera, board, guess, count=12))
    assert len(views) >= 8
    fit = fit_rig(views, guess.camera, board, guess)
    mm, deg = mount_error(fit.rig, truth)
    assert mm < 2.0 and deg < 1.0
    offsets = np.degrees(fit.rig.joint_offsets_rad - truth.joint_offsets_rad)
    assert np.abs(offsets[:4]).max() < 0.5 and offsets[4] == 0.0  # wrist_roll: not told from the mount
    assert fit.rms_px < 0.5 and np.mean(fit.rms_before_px) > 20
    assert all(s < 0.5 for s in fit.sigma_offsets_deg.values())


def test_capturing_turns_torque_off_even_when_the_arm_gets_stuck():
    from types import SimpleNamespace

    from so101_sim2real.calibrate.rig_capture import capture_views
    from so101_sim2real.errors import So101Error
    from so101_sim2real.geometry.board import BoardSpec
    from so101_sim2real.interfaces import JointState, SafetyLimits

    calls = []
    robot = SimpleNamespace(
        name="arm", limits=SafetyLimits.from_ranges(np.tile([-2.0, 2.0], (6, 1)), 0.15),
        read=lambda: JointState(np.zeros(6), np.zeros(6), 0.0),  # never moves
        write=lambda q: None, torque=calls.append)
    with pytest.raises(So101Error, match="stopped moving"):
        capture_views(robot, None, BoardSpec(), [np.full(6, 0.5)], period_s=0.001, timeout_s=30)
    assert calls == [True, False]


def test_a_mask_from_a_larger_image_lands_where_it_is_at_the_align_size():
    from so101_sim2real.calibrate.align import ALIGN_SIZE, coverage

    h, w = ALIGN_SIZE
    big = np.zeros((4 * h, 4 * w), np.uint8)
    big[100:180, 240:400] = 3  # a block centred at (319.5, 139.5) full-size pixels
    small = coverage(big, 3)
    ys, xs = np.nonzero(small)
    cx = float((xs * small[ys, xs]).sum() / small[ys, xs].sum())
    cy = float((ys * small[ys, xs]).sum() / small[ys, xs].sum())
    # full-size pixel centres map to (x + 0.5) / 4 - 0.5 at the small size
    assert cx == pytest.approx((319.5 + 0.5) / 4 - 0.5, abs=0.01) and cy == pytest.approx((139.5 + 0.5) / 4 - 0.5,
                                                                                          abs=0.01)


def test_nudging_by_eye_moves_the_mount_along_the_cameras_own_axes_and_enter_keeps_it():
    from so101_sim2real.calibrate.align_view import Nudge, nudge_loop, twin_picture
    from so101_sim2real.control.window import LiveWindow

    guess = default_rig()
    nudge = Nudge(guess)
    for key in "rrr":  # 3 mm forward, along the camera's viewing direction
        nudge.key(key)
    R = euler_to_matrix(guess.mount_euler)
    forward = -R[:, 2]  # MuJoCo cameras look down their -z
    assert np.allclose(np.subtract(nudge.rig.mount_pos, guess.mount_pos), 0.003 * forward)
    nudge.key("+")
    assert nudge.rig.camera.fovy_deg() == pytest.approx(71.0, abs=1e-6)

    class Gui:
        def __init__(self, typed):
            self.typed, self.shown = list(typed), []

        def namedWindow(self, *a):  # noqa: N802 - OpenCV's names
            pass

        def imshow(self, title, frame):
            self.shown.append(frame)

        def waitKey(self, ms):  # noqa: N802
            return ord(self.typed.pop(0)) if self.typed else -1

        def destroyWindow(self, title):  # noqa: N802
            pass

    renders = []

    def render(rig, joints, size):
        renders.append(rig.mount_pos)
        return np.zeros((*size, 3), np.uint8)

    real = np.full((48, 64, 3), 90, np.uint8)
    kept = nudge_loop(guess, real, np.zeros(6), LiveWindow(gui=Gui("dd\r")), render=render)
    assert kept is not None and len(renders) == 3  # rendered again only when the mount moved
    right = R @ np.diag([1.0, -1.0, -1.0])[:, 0]
    assert np.allclose(np.subtract(kept.mount_pos, guess.mount_pos), 0.002 * right)
    assert nudge_loop(guess, real, np.zeros(6), LiveWindow(gui=Gui("d\x1b")), render=render) is None
    picture = twin_picture(guess, np.array([0.0, 0.0, 0.0, 1.57, 1.57, 0.3]), (48, 64))
    assert picture.shape == (48, 64, 3) and picture.std() > 5  # the twin's table and fingers, not a blank
