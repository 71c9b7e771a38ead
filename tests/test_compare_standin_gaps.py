"""compare-sim's measures of the stand-in's gaps: the picture against the twin's render, and the arm's
gaps fitted by replaying recorded targets through a twin that has them."""

import numpy as np
import pytest

from so101_sim2real.compare.arm_fit import fit_arm
from so101_sim2real.compare.findings import _arm, _picture
from so101_sim2real.compare.picture_check import FramePair, picture_metrics
from so101_sim2real.control.env import sim_env
from so101_sim2real.control.pilots import ScriptedPilot
from so101_sim2real.control.recording import Recorder, Recording
from so101_sim2real.control.runner import Runner
from so101_sim2real.sim.standin import Backlash, Latency, MaxSpeed, StandIn
from so101_sim2real.spec import default_spec

CLASSES = ["background", "table", "cube", "static_finger", "moving_finger"]


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 480x640 picture with a textured table, a red cube and two fingers, and its labels."""
    rng = np.random.default_rng(seed)
    labels = np.full((480, 640), 1, np.uint8)
    labels[:60] = 0
    labels[200:280, 280:360] = 2
    labels[330:, 120:260] = 3
    labels[330:, 380:520] = 4
    colours = np.array([[40, 40, 40], [70, 110, 160], [200, 30, 30], [150, 120, 20], [150, 120, 20]], float)
    rgb = colours[labels] * np.linspace(0.8, 1.0, 640)[None, :, None]  # a gentle gradient, as a light makes
    grain = cv2_blur(rng.normal(0, 1, (480, 640)), 2.0)  # texture the flow can follow, as renders have
    amplitude = np.where(labels == 1, 0.01, 0.05)  # a smooth table, as the twin's; some texture on arm and cube
    rgb = rgb * (1 + amplitude * grain / grain.std())[..., None] + rng.normal(0, 0.3, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), labels


def _pairs(change, n: int = 6) -> list[FramePair]:
    out = []
    for i in range(n):
        twin, labels = _scene(i)
        out.append(FramePair(i, change(twin.copy(), labels, i), twin, labels, spin=float(i)))
    return out


def _named(pairs) -> list[str]:
    return [g for f in _picture(picture_metrics(pairs, CLASSES)) for g in f.gaps]


def _recorded(rgb, labels, i):  # what the recorder keeps of a camera frame: JPEG at quality 95
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def test_a_picture_like_the_twins_names_nothing():
    assert _named(_pairs(lambda rgb, labels, i: rgb)) == []
    assert _named(_pairs(_recorded)) == []  # the recorder's own compression is neither noise nor blocks


def test_a_camera_gain_and_white_balance_are_named_as_exposure():
    def brighter(rgb, labels, i):
        return np.clip(rgb * np.array([1.3, 1.2, 1.0]), 0, 255).astype(np.uint8)

    assert _named(_pairs(brighter)) == ["exposure"]


def test_a_light_from_elsewhere_is_named_as_lighting_not_exposure():
    def shaded(rgb, labels, i):  # a warm key light from one side: the fingers dim and shade unevenly
        shade = np.linspace(0.5, 1.2, 480)[:, None, None] * np.linspace(1.2, 0.6, 640)[None, :, None]
        return np.clip(rgb * shade * np.array([0.9, 0.8, 0.7]), 0, 255).astype(np.uint8)

    assert _named(_pairs(shaded)) == ["lighting"]


def test_another_table_is_named_as_materials():
    def wooden(rgb, labels, i):
        rgb[labels == 1] = (130, 100, 75)
        return rgb

    assert _named(_pairs(wooden)) == ["materials"]


def test_sensor_noise_and_jpeg_blocks_are_named():
    import cv2

    def noisy(rgb, labels, i):
        return np.clip(rgb + np.random.default_rng(i).normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)

    def blocky(rgb, labels, i):
        ok, buf = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 70])  # the stand-in's MJPEG
        return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)

    assert _named(_pairs(noisy)) == ["sensor_noise"]
    assert _named(_pairs(blocky)) == ["jpeg"]


def test_a_box_on_the_table_is_named_and_the_cube_elsewhere_is_not():
    def box(rgb, labels, i):
        rgb[100:180, 420:520] = (30, 60, 200)
        return rgb

    def cube_moved(rgb, labels, i):  # the cube where the twin has table: the twin's cube hue, no stranger
        rgb[100:180, 420:500] = (200, 30, 30)
        return rgb

    assert _named(_pairs(box)) == ["distractor"]
    assert _named(_pairs(cube_moved)) == []


@pytest.fixture(scope="module")
def arm_recordings(tmp_path_factory):
    """The scripted expert's first 30 ticks in the twin and in stand-ins with one arm gap each."""
    def run(world: StandIn | None) -> dict:
        folder = tmp_path_factory.mktemp("arm")
        env = sim_env(default_spec(), standin=world)
        try:
            rec = Recorder(folder, env.spec, "sim", "scripted", env.period_s, with_rgb=False)  # the fit reads joints
            Runner(env, ScriptedPilot(env.twin), recorder=rec, max_steps=30).run([5000])
        finally:
            env.close()
        return Recording(folder).load(0)

    return {"twin": run(None), "latency": run(StandIn({"latency": Latency(60.0)})),
            "max_speed": run(StandIn({"max_speed": MaxSpeed(120.0)})),
            "backlash": run(StandIn({"backlash": Backlash((1.0,) * 6)}))}


def test_the_twins_own_arm_has_no_gap(arm_recordings):
    assert fit_arm([arm_recordings["twin"]], default_spec()).named == []


@pytest.mark.parametrize("gap, amount", [("latency", 60.0), ("max_speed", 120.0), ("backlash", 1.0)])
def test_an_arm_gap_is_named_with_its_amount(arm_recordings, gap, amount):
    fit = fit_arm([arm_recordings[gap]], default_spec())
    assert [g.name for g in fit.named][:1] == [gap]
    assert fit.named[0].amount_value() == pytest.approx(amount)
    assert fit.explained > 0.5
    finding = _arm(fit)[0]
    assert finding.gaps == [gap] and finding.evidence["left_deg"] < finding.evidence["replay_error_deg"]


def _textured(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A picture with edges everywhere (the flow needs them) and its labels: fingers at the bottom."""
    rng = np.random.default_rng(seed)
    texture = cv2_blur(rng.uniform(0, 255, (480, 640)), 3.0)
    texture = (texture - texture.min()) / np.ptp(texture) * 255
    labels = np.full((480, 640), 1, np.uint8)
    labels[330:, 120:260] = 3
    labels[330:, 380:520] = 4
    rgb = np.repeat(texture[..., None], 3, axis=2).astype(np.uint8)
    return rgb, labels


def cv2_blur(image, sigma):
    import cv2

    return cv2.GaussianBlur(image, (0, 0), sigma)


def _warped(move_scene, move_fingers, n: int = 3) -> list[FramePair]:
    """Pairs whose recorded picture is the twin's with its scene and fingers moved by the given maps
    (x, y -> where that pixel shows in the recorded frame)."""
    import cv2

    pairs = []
    for i in range(n):
        twin, labels = _textured(i)
        h, w = labels.shape
        ys, xs = np.indices((h, w), np.float32)
        out = twin.copy()
        for move, region in ((move_scene, labels == 1), (move_fingers, labels != 1)):
            # the recorded pixel at (x, y) shows the twin's at the inverse map: a small move inverts by its negative
            mx, my = move(xs, ys)
            src = cv2.remap(twin, 2 * xs - mx, 2 * ys - my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            moved_region = cv2.remap(region.astype(np.uint8), 2 * xs - mx, 2 * ys - my, cv2.INTER_NEAREST) > 0
            out[moved_region] = src[moved_region]
        pairs.append(FramePair(i, out, twin, labels, spin=0.0))
    return pairs


def _shift(dx, dy):
    return lambda xs, ys: (xs + dx, ys + dy)


def _radial(k1, focal=339.6):
    def move(xs, ys):
        x, y = (xs - 319.5) / focal, (ys - 239.5) / focal
        f = 1 + k1 * (x * x + y * y)
        return 319.5 + x * f * focal, 239.5 + y * f * focal
    return move


@pytest.mark.parametrize("scene, fingers, gap", [
    (_shift(0, 0), _shift(0, 0), None),
    (_shift(4, -3), _shift(0, 0), "joint_offsets"),  # the arm elsewhere, the camera on it as the twin's
    (_shift(5, -3), _shift(5, -3), "intrinsics"),  # everything alike: the picture's centre
    (_shift(8, -5), _shift(12, -2), "camera_mount"),  # near fingers and far scene apart: the camera moved
    (_radial(-0.06), _radial(-0.06), "lens_distortion"),
])
def test_where_the_picture_sits_names_the_camera_the_lens_or_the_joints(scene, fingers, gap):
    named = [g for g in _named(_warped(scene, fingers)) if g in
             ("joint_offsets", "intrinsics", "camera_mount", "lens_distortion")]
    assert named == ([gap] if gap else [])


def test_compare_sim_names_a_standin_gap_from_the_recorded_picture(capsys, tmp_path):
    """End to end: a stand-in recording made by 'so101 infer --standin --record', read by compare-sim
    as an arm's (its cube fitted), its picture set against the twin's render at each pose."""
    import json

    from fixtures import run_cli

    world = tmp_path / "intrinsics.yaml"
    world.write_text("seed: 0\ngaps:\n  intrinsics:\n")
    code, _, err = run_cli(capsys, "infer", "--ckpt", "scripted", "--standin", str(world), "--episodes", "1",
                           "--seed", "5000", "--max-steps", "10", "--record", str(tmp_path / "rec"))
    assert code == 0, err
    code, out, err = run_cli(capsys, "compare-sim", str(tmp_path / "rec"), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["cube"]["source"] == "fitted"  # the recorded cube position is not read: as on an arm
    assert [f["gaps"] for f in report["findings"]] == [["intrinsics"]]
    centre = report["findings"][0]["evidence"]
    assert abs(centre["fingers_dx_px"] - 6.0) < 1.5 and abs(centre["fingers_dy_px"] + 4.0) < 1.5  # (6, -4) px
