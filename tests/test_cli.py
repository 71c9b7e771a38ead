import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fixtures import robobase_agent_state, write_robobase_snapshot
from fixtures import run_cli as run

COMMANDS = ["infer", "inspect", "convert", "perceive", "calibrate", "compare-sim", "hilserl", "models", "motors",
            "emulate"]


def test_help_lists_every_command_group(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in COMMANDS:
        assert name in out


def test_inspect_json_is_one_object(capsys, snapshot):
    code, out, _ = run(capsys, "inspect", "--ckpt", str(snapshot), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["format"] == "robobase"
    assert report["architecture"]["in_channels"] == 6 and report["architecture"]["action_dim"] == 4
    assert report["parameters"]["actor"] > 0
    assert report["spec_sources"]["observation.frame_stack"] == "cfg: frame_stack"
    assert report["warnings"] == []


def test_inspect_shows_the_training_mujoco_and_warns_when_another_is_installed(capsys, snapshot, tmp_path):
    code, out, _ = run(capsys, "inspect", "--ckpt", str(snapshot), "--json")
    sim = json.loads(out)["simulator"]
    assert sim == {"trained": "3.4.0", "installed": "3.4.0", "kinematics": "live_physics"}
    assert json.loads(out)["spec"]["observation"]["disparity"]["normalise_region"] == "full_frame"
    run(capsys, "convert", "--ckpt", str(snapshot), "--out", str(tmp_path / "p"))
    spec = tmp_path / "p" / "spec.yaml"
    spec.write_text(spec.read_text().replace("version: 3.4.0", "version: 3.17.0"))
    code, out, _ = run(capsys, "inspect", "--ckpt", str(tmp_path / "p"))
    assert code == 0 and "trained under 3.17.0, installed 3.4.0" in out
    assert "! the policy was trained under MuJoCo 3.17.0" in out


def test_an_old_converted_spec_that_normalises_over_the_crop_is_flagged(capsys, snapshot, tmp_path):
    run(capsys, "convert", "--ckpt", str(snapshot), "--out", str(tmp_path / "p"))
    spec = tmp_path / "p" / "spec.yaml"
    spec.write_text(spec.read_text().replace("normalise_region: full_frame", "normalise_region: crop"))
    code, out, _ = run(capsys, "inspect", "--ckpt", str(tmp_path / "p"), "--json")
    assert code == 0
    assert any("normalised over the full 640x480 frame" in w for w in json.loads(out)["warnings"])


def test_inspect_text_shows_warnings(capsys, leaked_snapshot):
    code, out, _ = run(capsys, "inspect", "--ckpt", str(leaked_snapshot))
    assert code == 0
    assert "21 per frame x 3 = 63" in out and "! state is 21 per frame" in out


def test_convert_writes_and_verifies(capsys, snapshot, tmp_path):
    code, out, _ = run(capsys, "convert", "--ckpt", str(snapshot), "--out", str(tmp_path / "policy"))
    assert code == 0 and "verified: identical actions" in out
    code, out, _ = run(capsys, "inspect", "--ckpt", str(tmp_path / "policy"), "--json")
    assert json.loads(out)["format"] == "native"
    code, _, err = run(capsys, "convert", "--ckpt", str(snapshot), "--out", str(tmp_path / "policy"))
    assert code == 2 and "already exists" in err


def test_spec_typo_is_one_line(capsys, snapshot, tmp_path):
    (tmp_path / "s.yaml").write_text("spec_versoin: 1\n")
    code, _, err = run(capsys, "inspect", "--ckpt", str(snapshot), "--spec", str(tmp_path / "s.yaml"))
    assert code == 2 and "did you mean 'spec_version'" in err and err.count("\n") == 1


def _touch_pickle(marker) -> bytes:
    """A protocol-2 pickle of {'agent': os.system('touch MARKER')}."""
    cmd = f"touch {marker}".encode()
    return (b"\x80\x02}q\x00X\x05\x00\x00\x00agentq\x01cposix\nsystem\nq\x02X" + len(cmd).to_bytes(4, "little")
            + cmd + b"q\x03\x85q\x04Rq\x05s.")


def test_the_malicious_fixture_is_live(tmp_path):
    marker = tmp_path / "ran"
    pickle.loads(_touch_pickle(marker))  # plain pickle runs it: refusing it below means something
    assert marker.exists()


def _bad_files(tmp_path, snapshot):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(snapshot.read_bytes()[:20000])
    random = tmp_path / "random.pt"
    random.write_bytes(os.urandom(4096))
    sd = robobase_agent_state()
    sd["encoder.convs_per_cam.0.3.weight"] = torch.zeros(32, 16, 3, 3)
    wrong = write_robobase_snapshot(tmp_path / "wrong_shape.pt", sd)
    malicious = tmp_path / "malicious.pt"
    marker = tmp_path / "pwned"
    malicious.write_bytes(_touch_pickle(marker))
    return {"truncated": (truncated, "truncated"), "random": (random, "not a readable PyTorch checkpoint"),
            "wrong_shape": (wrong, "expected 32 input channels"), "malicious": (malicious, "refused")}, marker


@pytest.mark.slow
def test_bad_checkpoints_give_one_line_and_exit_2_in_a_real_process(tmp_path, snapshot):
    files, marker = _bad_files(tmp_path, snapshot)
    for name, (path, expected) in files.items():
        proc = subprocess.run([sys.executable, "-m", "so101_sim2real", "inspect", "--ckpt", str(path)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (name, proc.stderr)
        assert "Traceback" not in proc.stderr, name
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), (name, proc.stderr)
        assert expected in proc.stderr, (name, proc.stderr)
    assert not marker.exists()


def test_an_unexpected_exception_is_one_line_with_the_traceback_saved(capsys, monkeypatch):
    import so101_sim2real.cli.app as cli

    def broken(*args, **kwargs):
        raise RuntimeError("a bug\nwith two lines")

    monkeypatch.delenv("SO101_RAISE")
    monkeypatch.setattr("so101_sim2real.control.infer.run_infer", broken)
    with pytest.raises(SystemExit) as exc:
        cli.main(["infer", "--ckpt", "scripted", "-n", "1"])
    err = capsys.readouterr().err
    assert exc.value.code == 3 and err.count("\n") == 1 and "Traceback" not in err
    assert "unexpected RuntimeError: a bug (a bug: please report it" in err
    saved = Path(err.rsplit("saved in ", 1)[1].rstrip(")\n"))
    assert "Traceback" in saved.read_text() and "a bug" in saved.read_text()
    saved.unlink()


@pytest.mark.parametrize(("args", "expected"), [
    (["emulate", "--ids", "6-1"], "a range runs low to high, e.g. 1-6"),
    (["emulate", "--faults", "drop=2"], "probabilities from 0 to 1"),
    (["infer", "--ckpt", ""], "no checkpoint given"),
    (["motors", "scan", "--port", "/tmp"], "that is a folder"),
    (["models", "add", "/nonexistent/depth", "--name", "me/depth"], "no such folder"),
    (["infer", "--ckpt", "scripted", "--seed", "-1"], "--seed -1: seeds are whole numbers from 0"),
    (["infer", "--ckpt", "scripted", "--device", "banana"], "--device banana: not a torch device"),
    pytest.param(["infer", "--ckpt", "scripted", "--device", "cuda"], "--device cuda: no CUDA device here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_errors_name_the_real_cause(capsys, args, expected):
    code, _, err = run(capsys, *args)
    assert code == 2 and expected in err and err.count("\n") == 1, err


def test_convert_to_a_place_that_cannot_be_written_is_one_line(capsys, snapshot, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, _, err = run(capsys, "convert", "--ckpt", str(snapshot), "--out", str(blocker / "policy"))
    assert code == 2 and "cannot write there" in err and err.count("\n") == 1, err


def test_convert_writes_with_the_users_usual_permissions(capsys, snapshot, tmp_path):
    old = os.umask(0o022)
    try:
        code, _, err = run(capsys, "convert", "--ckpt", str(snapshot), "--out", str(tmp_path / "policy"))
    finally:
        os.umask(old)
    assert code == 0, err
    assert (tmp_path / "policy").stat().st_mode & 0o777 == 0o755  # not mkdtemp's private 0700
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "policy").iterdir()} == {0o644}


def test_json_episodes_say_return_and_an_early_interrupt_says_so():
    from so101_sim2real.control.infer import render_summary
    from so101_sim2real.control.runner import EpisodeResult, RunSummary

    summary = RunSummary(episodes=[EpisodeResult(0, 0, True, 36, 228.8)])
    assert summary.to_dict()["per_episode"][0]["return"] == 228.8
    assert "ret" not in summary.to_dict()["per_episode"][0]
    assert render_summary(RunSummary(interrupted=True)).startswith("interrupted before the first episode finished")


def test_compare_sim_help_is_help(capsys):
    code, out, _ = run(capsys, "compare-sim", "--help")
    assert code == 0 and "recording" in out and "--json" in out


def test_find_port_lists_ports_under_a_header(capsys, monkeypatch):
    from so101_sim2real.hardware.scan import PortInfo

    ports = [PortInfo("/dev/ttyACM0", "USB Single Serial", "USB VID:PID=1A86:55D3"),
             PortInfo("/dev/ttyS0", "n/a", "n/a")]
    monkeypatch.setattr("so101_sim2real.hardware.scan.list_ports", lambda: ports)
    code, out, _ = run(capsys, "motors", "find-port")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("port") and "description" in lines[0]
    assert lines[1].startswith("/dev/ttyACM0  USB Single Serial") and len(lines) == 3


def _command_paths():
    import typer

    from so101_sim2real.cli.app import app

    def walk(cmd, path):
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


def test_every_help_fits_80_columns_and_labels_no_flag_with_a_type(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    paths = _command_paths()
    assert len(paths) >= 15  # the root, each command, each group's subcommands
    for path in paths:
        code, out, _ = run(capsys, *path, "--help")
        assert code == 0, path
        assert max(len(line) for line in out.splitlines()) <= 80, (path, out)
        assert "<bool>" not in out and "╭" not in out, path


@pytest.mark.parametrize("args", [["infer", "--bogus"], ["infer", "-n", "x"], ["infr"], ["inspect"],
                                  ["models", "nope"]])
def test_a_mistyped_command_line_is_one_line_naming_the_help(capsys, args):
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert "--help" in err


def test_a_group_without_a_command_shows_its_help(capsys):
    code, out, _ = run(capsys, "calibrate")
    assert code == 0 and "joints" in out and out.startswith("Usage: so101 calibrate")
