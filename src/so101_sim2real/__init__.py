"""so101-sim2real: run a sim-trained DrQ-v2 pixel policy on a real SO-101 arm."""

__version__ = "0.1.0"

import os as _os
import sys as _sys

# MuJoCo picks its OpenGL backend when it is imported; without a display, offscreen
# rendering of the twin's camera needs EGL. A user's own MUJOCO_GL wins.
if _sys.platform.startswith("linux") and not (_os.environ.get("DISPLAY") or _os.environ.get("WAYLAND_DISPLAY")):
    _os.environ.setdefault("MUJOCO_GL", "egl")
