"""What every program run inside a jail shares: its command line (`--job`, `--frame-fd`,
`--out`, as the launchers pass them), sending a frame, and leaving without interpreter teardown.

The protocol is imported here, at start: a child sends its frame when the user's code may have
exhausted file descriptors or forked a hundred times, and an import then would fail or multiply
memory.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn

from worker.sandbox.protocol import Frame, encode


@dataclass(frozen=True)
class ChildArgs:
    job_path: Path
    """job.json; its directory also holds the job's other inputs (input.step)."""
    frame_fd: int
    out: Path
    """The directory the child may write (/out in the physics jail, /tmp otherwise)."""

    def channel(self) -> BinaryIO:
        """The frame pipe as an unbuffered binary file, not inherited by exec'd programs."""
        os.set_inheritable(self.frame_fd, False)
        return os.fdopen(self.frame_fd, "wb", buffering=0)


def parse_args() -> ChildArgs:
    ap = argparse.ArgumentParser()
    ap.add_argument("--job", required=True, type=Path)
    ap.add_argument("--frame-fd", type=int, required=True)
    ap.add_argument("--out", required=True, type=Path)
    a = ap.parse_args()
    return ChildArgs(a.job, a.frame_fd, a.out)


def send(chan: BinaryIO, frame: Frame) -> None:
    chan.write(encode(frame))
    chan.flush()


def exit_now() -> NoReturn:
    """Flush and leave without interpreter teardown: atexit hooks and finalizers may belong to
    the user's code (a sleeping atexit hook must not hold the jail open)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
