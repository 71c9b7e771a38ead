"""A sweep of malformed inputs across the commands: each is exit 2, one line on stderr, no
traceback, and leaves the files it was pointed at as they were."""

import pytest

from fixtures import run_cli as run

pytestmark = pytest.mark.slow  # a sweep of every command: CI runs it, `pytest -m "not slow"` skips it

BAD_YAML = "learner:\n  actor_lr: [1\n"
TYPO_YAML = "lerner:\n  actor_lr: 1e-5\n"

# (command line with {ckpt} {tmp} {file} {dir} {yaml} {typo} {perturb_typo} placeholders, part of the error)
CASES = [
    # inspect / convert: paths and checkpoints
    ("inspect --ckpt {tmp}/missing.pt", "no such file"),
    ("inspect --ckpt {file}", "checkpoint"),
    ("inspect --ckpt {tmp}", "weights.safetensors"),
    ("convert --ckpt {tmp}/missing.pt --out {tmp}/out", "no such file"),
    ("convert --ckpt {ckpt} --out {file}/policy", "cannot write there"),
    ("convert --ckpt {ckpt} --out {dir}", "already exists"),
    # infer: options, ranges, devices, ports, cameras, spec overrides
    ("infer --ckpt ''", "no checkpoint given"),
    ("infer --ckpt {tmp}/missing.pt", "no such file"),
    ("infer --ckpt scripted --episodes 0", "--episodes must be at least 1"),
    ("infer --ckpt scripted --max-steps 0", "--max-steps must be at least 1"),
    ("infer --ckpt scripted --seed -1", "--seed -1"),
    ("infer --ckpt scripted --device banana", "not a torch device"),
    ("infer --ckpt scripted --robot ur5", "--robot ur5: unknown"),
    ("infer --ckpt scripted --robot so101", "needs --port"),
    ("infer --ckpt scripted --camera 0", "only for --robot so101"),
    ("infer --ckpt scripted --port /dev/ttyACM0", "only for --robot so101"),
    ("infer --ckpt scripted --calibration twin", "only for --robot so101"),
    ("infer --ckpt scripted --perception lidar", "--perception lidar: unknown"),
    ("infer --ckpt {ckpt} --robot so101 --port /dev/ttyNONE", "the arm needs its calibration"),
    ("infer --ckpt {ckpt} --robot so101 --port /dev/ttyNONE --calibration twin", "sees through --camera"),
    ("infer --ckpt {ckpt} --robot so101 --port /dev/ttyNONE --calibration twin --camera 0",
     "needs --perception real"),
    ("infer --ckpt {ckpt} --robot so101 --port /dev/ttyNONE --calibration twin --camera 0 --perception real",
     "needs --seg-ckpt"),
    ("infer --ckpt {ckpt} --robot so101 --port {tmp} --calibration twin --camera 0 --perception real "
     "--seg-ckpt x.ckpt", "a folder, not a serial port"),
    ("infer --ckpt {ckpt} --robot so101 --port /dev/ttyNONE --calibration twin --camera 0 --perception real "
     "--seg-ckpt x.ckpt", "no such serial port"),
    ("infer --ckpt {ckpt} --robot so101 --port {file} --calibration nobody --camera 0 --perception real "
     "--seg-ckpt x.ckpt", "no LeRobot calibration for follower 'nobody'"),
    ("infer --ckpt scripted --robot so101 --port /dev/ttyNONE", "the scripted expert reads the cube"),
    ("infer --ckpt scripted --set-spec nonsense", "KEY=VALUE"),
    ("infer --ckpt scripted --set-spec observaton.crop=none", "observaton"),
    ("infer --ckpt scripted --set-spec action.xyz_scale_m=-1", "action.xyz_scale_m"),
    ("infer --ckpt scripted --set-spec action.xyz_scale_m=0", "action.xyz_scale_m"),
    ("infer --ckpt scripted --set-spec action.ik.gain=2", "action.ik.gain"),
    ("infer --ckpt scripted --set-spec control.physics_timestep_s=0", "control.physics_timestep_s"),
    ("infer --ckpt scripted --set-spec state.tcp_site=wrist", "state.tcp_site"),
    ("infer --ckpt {ckpt} --set-spec observation.frame_stack=2", "frames"),
    ("infer --ckpt {ckpt} --set-spec observation.image_size=[64,64]", "64x64"),
    ("infer --ckpt {ckpt} --set-spec observation.channels=[seg]", "channels"),
    ("infer --ckpt scripted --video {tmp}/out.gif", ".mp4"),
    ("infer --ckpt scripted --record {file}", "not a folder"),
    ("infer --ckpt scripted --period 0.1", "--period: only for --robot so101"),
    ("infer --ckpt scripted --robot so101 --port emulator --period 0.01", "shorter than the 20 ms"),
    ("infer --ckpt scripted --robot so101 --port emulator --period nan", "--period nan"),
    ("hilserl train --ckpt {ckpt} --out {tmp}/r --robot so101 --port emulator --period 0.01",
     "shorter than the 20 ms"),
    ("infer --ckpt scripted --perturb {tmp}/missing.yaml", "cannot read the perturbation file"),
    ("infer --ckpt scripted --perturb {perturb_typo}", "did you mean 'period_s'"),
    ("infer --ckpt scripted --spec {tmp}/missing.yaml", "no such spec file"),
    ("infer --ckpt scripted --spec {yaml}", "YAML error at line 3"),
    ("infer --ckpt scripted --perturb {yaml}", "YAML error at line 3"),
    # --rig: the rig's measured geometry (rig.yaml or camera.yaml)
    ("infer --ckpt scripted --rig {tmp}/missing.yaml", "missing.yaml: no such rig file"),
    ("infer --ckpt scripted --rig {yaml}", "YAML error at line 3"),
    ("inspect --ckpt {ckpt} --rig {typo}", "lerner: unknown field"),
    # the bus: ports, ids, faults
    ("motors scan --port /dev/ttyNONE", "not found"),
    ("motors scan --port {tmp}", "that is a folder"),
    ("motors scan --port /dev/ttyNONE --baud 1234", "baud rate 1234"),
    ("emulate --ids 6-1", "low to high"),
    ("emulate --ids 300", "0..252"),
    ("emulate --ids one", "1-6 or 1,2,5"),
    ("emulate --faults drop=2", "from 0 to 1"),
    ("emulate --faults drop", "needs a value"),
    ("emulate --faults fire=1", "cannot read"),
    ("emulate --hand {typo}", "--hand moves the emulated leader arm: add --leader"),
    ("emulate --leader --hand {tmp}/missing.yaml", "missing.yaml: no such file"),
    ("emulate --leader --hand {yaml}", "YAML error at line 3"),
    ("emulate --leader --hand {typo}", "expected a list of grabs"),
    ("calibrate joints --port /dev/ttyNONE --id arm", "not found"),
    ("calibrate joints --port /dev/ttyNONE --id arm --arm middle", "follower or leader"),
    ("calibrate joints --port /dev/ttyNONE --id arm --sign elbow=2", "--sign 'elbow=2'"),
    # models
    ("models add {tmp}/missing --name me/depth", "no such folder"),
    ("models add {tmp} --name me/depth", "not a model folder"),
    # perceive
    ("perceive {tmp}/missing.png --seg-ckpt {tmp}/missing.ckpt", "missing"),
    # calibrate rig
    ("calibrate rig --port emulator --out {tmp}/rig.yaml --board-at nope", "use X,Y or X,Y,YAW_DEG"),
    ("calibrate rig --port emulator --out {tmp}/rig.yaml --poses 3", "at least 6"),
    ("calibrate rig --port /dev/ttyACM7 --out {tmp}/rig.yaml", "needs --calibration, --camera, --camera-model"),
    ("calibrate rig --port emulator --out {file}/rig.yaml", "cannot write"),
    ("calibrate align --port emulator --out {tmp}/rig.yaml --camera 0 --seg-ckpt {tmp}/none.ckpt",
     "none.ckpt: no such file"),  # the real day's flags are taken, and a file it would refuse is refused
    ("calibrate align --port emulator --out {tmp}/rig.yaml --interactive", "--interactive: "),
    ("calibrate align --port /dev/ttyACM7 --out {tmp}/rig.yaml", "needs --calibration, --camera, --seg-ckpt"),
    ("calibrate align --port emulator --out {tmp}/rig.yaml --rig {tmp}/missing.yaml", "missing.yaml"),
    # hilserl
    ("hilserl train --out {tmp}/r", "needs --ckpt"),
    ("hilserl train --out {file} --ckpt {ckpt}", "not a folder"),
    ("hilserl train --out {tmp} --resume", "not a HIL-SERL run folder"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --resume", "drop --ckpt"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --episodes 0", "at least 1"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --intervene human", "scripted, leader, none"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --reward sparse", "success, dense, classifier"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --device banana", "not a torch device"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --view", "--view: "),  # no display here, or headless OpenCV
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --set learner.actr_lr=1", "did you mean 'actor_lr'"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --set utd=fast", "expected a number"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --config {yaml}", "YAML error at line 3"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --config {typo}", "lerner"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --demos {tmp}", "nor a LeRobot dataset (meta/info.json)"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --perturb {perturb_typo}", "did you mean 'period_s'"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --reward classifier", "needs --classifier DIR"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --reward classifier --classifier {tmp}",
     "not a reward classifier folder"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --classifier {tmp}", "only with --reward classifier"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --intervene leader", "needs --leader-port"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --leader-port emulator", "only with --intervene leader"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --intervene leader --leader-port /dev/ttyNONE",
     "needs its calibration"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --intervene leader --leader-port /dev/ttyNONE "
     "--leader-calibration arm", "no such serial port"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --robot so101", "needs --port"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --period 0.1", "--period: only for --robot so101"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --robot so101 --port emulator --period 5", "between 0.005 and 2"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --camera 0", "only for --robot so101"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --robot so101 --port {file} --calibration twin --camera 0 "
     "--perception real --seg-ckpt x.ckpt", "the scripted expert reads the twin's cube"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --robot so101 --port {file} --calibration twin --camera 0 "
     "--perception real --seg-ckpt x.ckpt --intervene leader --leader-port emulator",
     "a real arm needs a real leader"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --robot so101 --port {file} --calibration twin --camera 0 "
     "--perception real --seg-ckpt x.ckpt --intervene none", "a real arm has no simulator to say success"),
    ("hilserl status {tmp}", "not a HIL-SERL run folder"),
    ("hilserl plot {tmp} --out {tmp}/c.png", "not a HIL-SERL run folder"),
    # options that would do nothing in the chosen mode
    ("infer --ckpt scripted --seg-ckpt {seg}", "--seg-ckpt: only with --perception real"),
    ("infer --ckpt scripted --profile exact", "--profile: only with --perception real"),
    ("infer --ckpt scripted --no-record-rgb", "only with --record DIR"),
    ("infer --ckpt scripted --trust-pickle", "only for a --ckpt file"),
    # a mistyped command line
    ("infer --ckpt scripted --bogus", "No such option: --bogus"),
    ("infer --ckpt scripted -n many", "Invalid value for '--episodes'"),
    ("infr --ckpt scripted", "Did you mean 'infer'"),
    ("inspect", "Missing option '--ckpt'"),
    ("models fetch", "No such command 'fetch'"),
    # perceive: sources, models, output
    ("perceive {tmp} --seg-ckpt {seg} --depth-model {depth}", "no images"),
    ("perceive {file} --seg-ckpt {seg} --depth-model {depth}", "not a video"),
    ("perceive {image} --seg-ckpt {file} --depth-model {depth}", "{file}"),
    ("perceive {image} --seg-ckpt {ckpt} --depth-model {depth}", "not an EfficientViT segmentation checkpoint"),
    ("perceive {image} --seg-ckpt {seg} --depth-model {dir}", "no config.json"),
    ("perceive {image} --seg-ckpt {seg} --depth-model {depth} --frames 0", "--frames must be at least 1"),
    ("perceive {image} --seg-ckpt {seg} --depth-model {depth} --out {file}", "a file, not a folder"),
    ("perceive {image} --seg-ckpt {seg} --depth-model {depth} --device cuda:7", "cuda"),
    # models: folders, names, the cache
    ("models add {depth} --name nohub", "OWNER/NAME"),
    ("models add {depth} --cache-dir {file}", "a file, not a folder"),
    ("models list --cache-dir {file}", "a file, not a folder"),
    ("models example --out {tmp}", "already exists; pass --force"),
    ("models example --out {file}/models", "cannot create it"),
    ("calibrate joints --port emulator --id existing --root {tmp}", "choose another --id"),
    # a live bus: an emulated arm whose registers must be left as they were
    ("calibrate joints --port {emu} --id arm --root {file}", "a_file is a file, not a folder"),
    ("motors setup --port /dev/ttyNONE", "no such serial port"),
    ("motors scan --port {emu} --baud 1234", "baud rate 1234"),
    ("calibrate joints --port {emu} --id arm --arm middle", "follower or leader"),
    ("calibrate joints --port {emu} --id arm --sign elbow=2", "--sign 'elbow=2'"),
    ("infer --ckpt {ckpt} --robot so101 --port {emu} --calibration nobody --camera 0 --perception real "
     "--seg-ckpt {seg} --depth-model {depth}", "no LeRobot calibration for follower 'nobody'"),
    ("infer --ckpt {ckpt} --robot so101 --port {emu} --calibration twin --camera {tmp}/none.mp4 --perception real "
     "--seg-ckpt {seg} --depth-model {depth}", "none.mp4"),
    ("infer --ckpt {ckpt} --robot so101 --port {emu} --calibration twin --camera {image} --perception real "
     "--seg-ckpt {seg} --depth-model {depth} --set-spec observation.frame_stack=2", "frames"),
    # hilserl train --hand: the emulated leader's hand script (its values: tests/test_hand_script.py)
    ("hilserl train --ckpt {ckpt} --out {tmp}/r --intervene leader --leader-port emulator --hand {typo}",
     "--hand {typo}: expected a list of grabs"),
    ("hilserl train --ckpt {ckpt} --out {tmp}/r --intervene leader --leader-port emulator --hand {tmp}/none.yaml",
     "none.yaml: no such file"),
    ("hilserl train --ckpt {ckpt} --out {tmp}/r --intervene leader --leader-port emulator --hand {yaml}",
     "YAML error at line 3"),
    # issue 26: accepted, crashed (a segfault) or refused only after the work (tests/test_first_day_inputs.py)
    ("perceive {image} --seg-ckpt {seg} --depth-model {depth} --perception-threads 100000",
     "--perception-threads 100000: this process may use"),
    ("infer --ckpt {ckpt} --perception real --seg-ckpt {seg} --depth-model {depth} --perception-threads 100000",
     "--perception-threads 100000: this process may use"),
    ("hilserl train --out {tmp}/r --ckpt {ckpt} --perception real --seg-ckpt {seg} --perception-threads 100000",
     "--perception-threads 100000: this process may use"),
    ("perceive {image} --seg-ckpt {seg} --depth-model {depth} --check --out {tmp}/seen", "--out: not with --check"),
    ("perceive {image} --seg-ckpt {seg} --depth-model {depth} --check --backend torch",
     "--backend: not with --check"),
    ("reward train {dir} --out {file} --force", "a file, not a folder; --force replaces a previous folder"),
    ("reward train {dir} {dir}/../existing --out {tmp}/clf", "given twice"),
    ("models example --out {file} --force", "a file, not a folder; --force replaces a previous folder"),
    ("calibrate rig --port emulator --out {tmp}/rig.yaml --board-at 0.6,0.4", "the board's middle is 0.78 m"),
    ("calibrate rig --port emulator --out {tmp}/rig.yaml --calibration arm --camera 0 --camera-model {yaml}",
     "YAML error at line 3"),
    # compare-sim (recordings and reports made for the case: tests/test_compare_inputs.py)
    ("compare-sim {tmp}/missing --out {tmp}/report", "no such recording folder"),
    ("compare-sim {file} --out {tmp}/report", "not a folder"),
    ("compare-sim {tmp} --out {tmp}/report", "not a recording"),
    ("compare-sim {tmp} --out {file}", "cannot write the report there"),
    ("compare-sim sensitivity --ckpt scripted --report {file}", "not JSON"),
    ("compare-sim sensitivity --ckpt scripted --report {tmp}/none.json", "cannot read the report"),
    ("compare-sim sensitivity --ckpt scripted --episodes 0", "--episodes must be at least 1"),
]


def _listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def emulated_arm():
    """Six emulated servos on a pty, as an arm on a serial port."""
    from so101_sim2real.hardware.emulator import BusEmulator

    with BusEmulator(list(range(1, 7))) as emu:
        yield emu


def _registers(emu) -> list[bytes]:
    """What a failed command must not change: each servo's EEPROM (ID, limits, offsets), torque and lock."""
    from so101_sim2real.hardware.registers import EEPROM_END, REGISTERS

    def byte(servo, name):
        return bytes(servo.regs[REGISTERS[name].address:REGISTERS[name].address + 1])

    with emu.lock:
        return [bytes(s.regs[:EEPROM_END]) + byte(s, "torque_enable") + byte(s, "lock") for s in emu.servos]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    import cv2
    import numpy as np

    path = tmp_path_factory.mktemp("image") / "frame.png"
    cv2.imwrite(str(path), np.full((480, 640, 3), 90, np.uint8))
    return path


@pytest.mark.parametrize(("line", "expected"), CASES, ids=[c[0].split(" {")[0][:60] for c in CASES])
def test_a_malformed_input_is_one_line_exit_2_and_changes_nothing(capsys, snapshot, tmp_path, line, expected,
                                                                  request):
    import shlex

    needs = {name: request.getfixturevalue(fixture) for name, fixture in
             (("seg", "seg_ckpt"), ("depth", "depth_folder"), ("emu", "emulated_arm"), ("image", "image"))
             if "{" + name + "}" in line}
    emu = needs.pop("emu", None)
    (tmp_path / "a_file").write_text("not a checkpoint\n")
    (tmp_path / "robots" / "so_follower").mkdir(parents=True)
    (tmp_path / "robots" / "so_follower" / "existing.json").write_text("{}\n")
    (tmp_path / "bad.yaml").write_text(BAD_YAML)
    (tmp_path / "typo.yaml").write_text(TYPO_YAML)
    (tmp_path / "perturb.yaml").write_text("period: 0.1\n")
    (tmp_path / "existing").mkdir()
    names = {"ckpt": str(snapshot), "tmp": str(tmp_path), "file": str(tmp_path / "a_file"),
             "yaml": str(tmp_path / "bad.yaml"), "typo": str(tmp_path / "typo.yaml"),
             "perturb_typo": str(tmp_path / "perturb.yaml"), "dir": str(tmp_path / "existing"),
             **{k: str(v) for k, v in needs.items()}}
    if emu is not None:
        names["emu"] = emu.path
    before, registers = _listing(tmp_path), _registers(emu) if emu else None
    code, _, err = run(capsys, *shlex.split(line.format(**names)))
    assert code == 2, err
    assert expected.format(**names) in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert _listing(tmp_path) == before  # nothing written, nothing half-made
    if emu is not None:
        assert _registers(emu) == registers  # the arm as it was
