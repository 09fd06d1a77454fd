"""Who owns a leftover. Job directories and per-job cgroups carry the pid of the worker process
that made them, so a restarted worker removes what dead workers left and never touches the
jobs of a live one on the same machine."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

OWNER_FILE = ".owner"
"""In each job (and probe) directory: the pid of the worker process that made it."""


def mark_owner(directory: Path) -> None:
    """Say in `directory` (a job or probe directory under /tmp) that this process made it, so
    that a later worker removes it if this one dies before it could
    (`worker.job.workdir.remove_stale_job_dirs`)."""
    (directory / OWNER_FILE).write_text(f"{os.getpid()}\n")


def owner_alive(pid: int) -> bool:
    """Whether `pid` is a live process other than this one (a zombie, dead but not yet reaped
    by its parent, is not). Called before this process starts any job, so its own pid in a
    leftover name means an earlier process that had it."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


def with_parent_death_signal(argv: list[str]) -> list[str]:
    """`argv` run so that it gets SIGKILL if the thread that started it dies (the worker was
    SIGKILLed, say): `setpriv --pdeathsig KILL` (util-linux) sets it and execs the command.
    nsjail passes the same to its jailed child, so a jail never outlives its worker."""
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin")
    if setpriv is None:
        raise FileNotFoundError("setpriv (util-linux) is not installed")
    return [setpriv, "--pdeathsig", "KILL", *argv]
