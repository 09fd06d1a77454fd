"""Fixtures shared by the end-to-end tests of the worker (pipeline, CLI, sandbox)."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest


def _simjail_dirs(tmpdir: Path) -> list[str]:
    return sorted(p.name for p in tmpdir.glob("simjail-*"))


def _under(path: str | None, prefix: str) -> bool:
    return path is not None and (path == prefix or path.startswith(prefix + "/"))


def _mount_roots(pid: int) -> list[str]:
    """The source paths of a process's mounts (field 4 of mountinfo): a jail's binds of a job
    directory show up here, whatever the jail calls them inside; a warm job names its job
    directory as the source of its /job tmpfs (the field after the filesystem type)."""
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            lines = [line.split() for line in f]
        return [f[3] for f in lines] + [f[f.index("-") + 2] for f in lines if "-" in f]
    except (OSError, IndexError, ValueError):
        return []


def _processes_under(root: Path) -> list[str]:
    prefix = str(root.resolve())
    procs: dict[int, psutil.Process] = {}
    parent: dict[int, int] = {}
    hit: set[int] = set()
    for p in psutil.process_iter(["pid", "ppid", "status", "cwd", "environ"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            procs[p.pid] = p
            parent[p.pid] = p.info["ppid"]
            env = p.info["environ"] or {}
            # A plain child works in its job directory; nsjail gets the job's directories in
            # its environment (SIMJAIL_JOB_DIR); the jailed python has them mounted.
            if (
                _under(p.info["cwd"], prefix)
                or any(_under(v, prefix) for v in env.values())
                or any(_under(r, prefix) for r in _mount_roots(p.pid))
            ):
                hit.add(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    # ...and everything they started.
    for pid in procs:
        seen = set()
        p = pid
        while p in parent and p not in seen:
            seen.add(p)
            if p in hit:
                hit.add(pid)
                break
            p = parent[p]
    found = []
    for pid in sorted(hit):
        try:
            found.append(f"{pid}: {' '.join(procs[pid].cmdline())}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture(scope="session")
def simjail_dirs() -> Callable[[Path], list[str]]:
    """Job directories (`simjail-*`) present in a temp dir."""
    return _simjail_dirs


@pytest.fixture(scope="session")
def processes_under() -> Callable[[Path], list[str]]:
    """Live processes of the jobs that worked inside a root, and anything they left behind:
    a plain child by its working directory, nsjail by the job directories in its environment,
    a jailed process by the job directories bound into its mount namespace; then all their
    descendants."""
    return _processes_under


@pytest.fixture(scope="session")
def jail_tmp() -> Iterator[Callable[[str], Path]]:
    """`jail_tmp(name)` → a fresh directory the jail's user (uid 65534) can traverse.

    pytest's own temp dirs live under /tmp/pytest-of-root, mode 0700: nsjail, binding a job
    directory as that user, fails with `try 'chmod o+x' on source path`. pytest resets that
    mode at every start (also when another pytest starts meanwhile), so these dirs live in a
    base of their own in the system temp dir instead (not named simjail-*, the jobs' prefix)."""
    base = Path(tempfile.mkdtemp(prefix="jailtests-"))
    base.chmod(0o711)
    counter = itertools.count()

    def make(name: str) -> Path:
        d = base / f"{name}{next(counter)}"
        d.mkdir()
        d.chmod(0o711)
        return d

    try:
        yield make
    finally:
        shutil.rmtree(base, ignore_errors=True)
