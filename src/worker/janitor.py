"""Nothing outlives its owner: a watchdog process that cleans up after a worker that died.

The jails themselves die with their worker (each nsjail is started under `setpriv --pdeathsig
KILL`, and nsjail gives its jailed child the same), but a SIGKILLed worker cannot remove its
job directories and per-job cgroups, nor stop a server it started (`simjail dev`). The janitor
does: the owner starts it (`Janitor()`) and keeps the write end of a pipe; the janitor blocks on
the read end. When the pipe closes (the owner exited, however it exited), the janitor waits
until the owner is gone, kills what it was told to kill (`also_kill`), and removes every job
directory and cgroup whose owner is dead, exactly as a restarted worker would. It runs in its
own session, so the signal that ended the owner's process group does not end it.

    python -m worker.janitor OWNER_PID        (its stdin is the owner's pipe)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from types import TracebackType

from worker.job.workdir import remove_stale_job_dirs
from worker.owners import owner_alive

OWNER_GONE_WAIT_S = 30.0
"""After the pipe closed, how long the janitor waits for its owner to exit before cleaning."""
STOP_GRACE_S = 5.0
"""What the janitor was told to kill gets SIGTERM, then SIGKILL after this."""


class Janitor:
    """Use as a context manager around a process's work; `close` (or leaving the block) lets
    the janitor clean up and exit once this process has."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "worker.janitor", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # not in the owner's process group
            close_fds=True,
        )
        assert self._proc.stdin is not None
        self._pipe = self._proc.stdin
        self.pid = self._proc.pid

    def also_kill(self, pid: int) -> None:
        """When the owner is gone, stop `pid` too (a server the owner started)."""
        self._pipe.write(f"kill {pid}\n".encode())
        self._pipe.flush()

    def close(self) -> None:
        """The owner is done: the janitor cleans up once this process has exited."""
        with contextlib.suppress(OSError):
            self._pipe.close()

    def __enter__(self) -> Janitor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _stop(pids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        end = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < end and any(owner_alive(p) for p in pids):
            time.sleep(0.05)


def main(argv: list[str]) -> None:
    owner = int(argv[0])
    to_kill: list[int] = []
    for line in sys.stdin.buffer:  # until the owner's end of the pipe closes
        word, _, value = line.decode("ascii", "replace").strip().partition(" ")
        if word == "kill" and value.isdigit():
            to_kill.append(int(value))
    end = time.monotonic() + OWNER_GONE_WAIT_S
    while owner_alive(owner) and time.monotonic() < end:
        time.sleep(0.05)
    if owner_alive(owner):
        return  # the owner closed the pipe but lives on: its leftovers are its own
    _stop(to_kill)
    from worker.sandbox.nsjail import remove_stale_cgroups

    # The job directories first: a directory is removed at once, while every dead worker's
    # groups (the owner's and any another killed worker left) may each take a second to empty
    # (under a loaded suite, the owner's directory once outlasted 15 s of them).
    with contextlib.suppress(Exception):
        remove_stale_job_dirs()
    with contextlib.suppress(Exception):
        remove_stale_cgroups()


if __name__ == "__main__":
    main(sys.argv[1:])
