import io
import os
import pickle

import pytest
import torch
from omegaconf import OmegaConf

from so101_sim2real.errors import UnsafePickleError
from so101_sim2real.safe_pickle import to_plain, torch_load


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def _saved(obj) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_omegaconf_config_becomes_plain_data_without_omegaconf():
    cfg = OmegaConf.create({"frame_stack": 3, "shape": [84, 84], "method": {"lr": 1e-4, "ref": "${frame_stack}"},
                            "missing": "???", "none": None})
    loaded = torch_load(_saved({"agent": {"w": torch.ones(2)}, "cfg": cfg}))
    assert to_plain(loaded["cfg"]) == {"frame_stack": 3, "shape": [84, 84],
                                       "method": {"lr": 1e-4, "ref": "${frame_stack}"}, "missing": "???", "none": None}
    assert torch.equal(loaded["agent"]["w"], torch.ones(2))
    assert not any(type(v).__module__.startswith("omegaconf") for v in loaded.values())


def test_command_in_a_torch_file_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(UnsafePickleError, match=r"'posix.system'.*not on the allow-list; nothing was run"):
        torch_load(_saved({"agent": {}, "cfg": _RunsACommand(marker)}))
    assert not marker.exists()


def test_eval_in_a_plain_pickle_is_refused(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"agent": _CallsEval()}, protocol=2))
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        torch_load(path)


def test_trusted_load_runs_the_pickle(tmp_path):
    marker = tmp_path / "ran"
    torch_load(_saved({"x": _RunsACommand(marker)}), trust=True)
    assert marker.exists()
