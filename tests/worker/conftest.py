"""Fixtures shared by the end-to-end tests of the worker (pipeline and CLI)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psutil
import pytest


def _simjail_dirs(tmpdir: Path) -> list[str]:
    return sorted(p.name for p in tmpdir.glob("simjail-*"))


def _processes_under(root: Path) -> list[str]:
    prefix = str(root.resolve())
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cwd = p.cwd()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if cwd == prefix or cwd.startswith(prefix + "/"):
            found.append(f"{p.info['pid']}: {' '.join(p.info['cmdline'] or [])}")
    return found


@pytest.fixture(scope="session")
def simjail_dirs() -> Callable[[Path], list[str]]:
    """Job directories (`simjail-*`) present in a temp dir."""
    return _simjail_dirs


@pytest.fixture(scope="session")
def processes_under() -> Callable[[Path], list[str]]:
    """Live processes whose working directory is inside a root: a job's children and anything
    they left behind (every child starts in its job directory, even once that is deleted)."""
    return _processes_under
