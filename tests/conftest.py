"""Shared checkpoint files, written once per session in the users' exact layouts."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: a thread each, none spinning against the other
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

# The suite's exported graphs and auto's remembered picks (of random weights) stay out of the user's
# model cache: the hub library reads this once, at import, in this process and in those the tests start.
_HUB = tempfile.mkdtemp(prefix="so101-tests-")
os.environ["HF_HUB_CACHE"] = os.path.join(_HUB, "hub")
atexit.register(shutil.rmtree, _HUB, ignore_errors=True)

import so101_sim2real  # noqa: E402, F401  - first, so MUJOCO_GL=egl is set before any test imports mujoco
from fixtures import robobase_agent_state, robobase_cfg, write_drqv2_snapshot, write_robobase_snapshot  # noqa: E402

os.environ["SO101_RAISE"] = "1"  # an unexpected exception in a CLI test fails it with its traceback


@pytest.fixture(scope="session")
def snapshot(tmp_path_factory):
    """The user's seg+depth policy: 2 channels x 3 frames, 18-D state, 4-D action."""
    return write_robobase_snapshot(tmp_path_factory.mktemp("ckpt") / "1200000_snapshot.pt")


@pytest.fixture(scope="session")
def rgb_snapshot(tmp_path_factory):
    agent = robobase_agent_state(c_in=9, seed=1)
    return write_robobase_snapshot(tmp_path_factory.mktemp("ckpt") / "rgb.pt", agent, robobase_cfg(obs_type="rgb"))


@pytest.fixture(scope="session")
def leaked_snapshot(tmp_path_factory):
    agent = robobase_agent_state(state_dim=63, seed=2)
    return write_robobase_snapshot(tmp_path_factory.mktemp("ckpt") / "leaked.pt", agent)


@pytest.fixture(scope="session")
def drqv2_snapshot(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "drqv2_snapshot.pt"
    agent = write_drqv2_snapshot(path)
    return path, agent


@pytest.fixture(scope="session")
def seg_ckpt(tmp_path_factory):
    """The user's EfficientViT-B0 + FPN segmentation checkpoint (Lightning layout, random weights)."""
    from fixtures import write_lightning_seg_ckpt

    path = tmp_path_factory.mktemp("seg") / "best.ckpt"
    write_lightning_seg_ckpt(path)
    return path


@pytest.fixture(scope="session")
def depth_folder(tmp_path_factory):
    """Depth Anything V2 Small, random weights, in save_pretrained layout."""
    from fixtures import write_depth_folder

    path = tmp_path_factory.mktemp("depth") / "Depth-Anything-V2-Small-hf"
    write_depth_folder(path)
    return path


@pytest.fixture(scope="module")
def seg(seg_ckpt):
    """The segmentation checkpoint loaded (random weights of the real size)."""
    from so101_sim2real.perception.segmentation import load_segmentation

    return load_segmentation(seg_ckpt)


@pytest.fixture(scope="module")
def depth(depth_folder):
    """The depth folder loaded (random weights of the real size)."""
    from so101_sim2real.perception.depth import load_depth

    return load_depth(depth_folder)


# The longest test first, so that the other worker takes the rest meanwhile (-n 2, --dist worksteal).
LONGEST_FIRST = ("test_first_day.py::test_the_first_day_runs_as_written",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.endswith(LONGEST_FIRST))
