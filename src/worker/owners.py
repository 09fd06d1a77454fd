"""Who owns a leftover. Job directories and per-job cgroups carry the pid of the worker process
that made them, so a restarted worker removes what dead workers left and never touches the
jobs of a live one on the same machine."""

from __future__ import annotations

import os
from pathlib import Path

OWNER_FILE = ".owner"
"""In each job (and probe) directory: the pid of the worker process that made it."""


def mark_owner(directory: Path) -> None:
    """Say in `directory` that this process made it, so that a later worker removes it if this
    one dies before it could (`worker.job.workdir.remove_stale_job_dirs`)."""
    (directory / OWNER_FILE).write_text(f"{os.getpid()}\n")


def owner_alive(pid: int) -> bool:
    """Whether `pid` is a live process other than this one. Called before this process starts
    any job, so its own pid in a leftover name means an earlier process that had it."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True
