"""How a child is started. The supervisor asks a Launcher for argv and environment; swapping
the plain-subprocess launcher for the nsjail one changes nothing else.

`SubprocessLauncher` gives no isolation beyond a fresh process, its own session, an empty
environment plus an allow-list, and the supervisor's deadline and output caps.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Variables a child may see. Everything else of the worker's environment (credentials, tokens)
# stays out. Thread counts are pinned so one job cannot take every core.
ENV_ALLOW = ("LANG", "LC_ALL", "TZ")
ENV_FIXED = {
    "PATH": "/usr/bin:/bin",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MUJOCO_GL": "egl",
}


@dataclass(frozen=True)
class LaunchSpec:
    name: str
    """'build' or 'physics': names the jail in errors and logs."""
    module: str
    """The Python module run inside the child (`python -m module`)."""
    job_path: Path
    """JSON job description the child reads."""
    workdir: Path
    """The child's working directory (its scratch and output space)."""
    wall_s: float


class Launcher(Protocol):
    name: str

    def command(self, spec: LaunchSpec, *, frame_fd: int) -> tuple[list[str], dict[str, str]]:
        """argv and environment that run `spec.module` with the frame pipe on `frame_fd`."""
        ...


class SubprocessLauncher:
    """A plain child process of the worker's own interpreter (no namespaces, no seccomp)."""

    name = "subprocess"

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python

    def command(self, spec: LaunchSpec, *, frame_fd: int) -> tuple[list[str], dict[str, str]]:
        import os

        env = dict(ENV_FIXED)
        env.update({k: os.environ[k] for k in ENV_ALLOW if k in os.environ})
        argv = [
            self.python,
            "-I",  # isolated: no PYTHON* variables, no user site, no cwd on sys.path
            "-m",
            spec.module,
            "--job",
            str(spec.job_path),
            "--frame-fd",
            str(frame_fd),
        ]
        return argv, env
