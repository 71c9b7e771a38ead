"""The MuJoCo version a policy was trained under, against the one installed here.

Contact-free motion is the same across MuJoCo 3.x releases, but grasps on the edge of
the success rule are not: the user's scripted grasp B succeeds at step 62 under 3.4.0
(their training version) and never under 3.17. So a sim evaluation reproduces training
numbers only under the training version, and every command that runs the twin says
which one it runs.
"""

from __future__ import annotations

import mujoco

from so101_sim2real.spec import Spec


def installed_mujoco() -> str:
    """The MuJoCo version this process runs."""
    return mujoco.__version__


def mujoco_warning(spec: Spec) -> str | None:
    """A one-line warning when the installed MuJoCo is not the one the policy was trained under."""
    trained, installed = spec.simulator.version, installed_mujoco()
    if trained is None or trained == installed:
        return None
    return (f"the policy was trained under MuJoCo {trained}, this machine has {installed}: grasps on the edge of "
            f"the success rule can come out differently, so sim success may not match training; "
            f"pip install mujoco=={trained} to reproduce it")


def mujoco_line(spec: Spec) -> str:
    """``MuJoCo 3.4.0 (as trained)``, or what was trained under when it differs."""
    trained, installed = spec.simulator.version, installed_mujoco()
    if trained is None:
        return f"MuJoCo {installed} (training version not recorded in the spec)"
    return f"MuJoCo {installed}" + (" (as trained)" if trained == installed else f" (trained under {trained})")
