"""Geometry → MuJoCo → verdict → video.

MuJoCo picks its OpenGL backend when it is first imported; set EGL (headless, works on Mesa's
llvmpipe) before any module of this package imports it, unless the caller chose one.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
