"""Runs one child (a jail) to completion under the supervisor's own rules.

The supervisor owns the deadline, reads stdout/stderr in bounded chunks with byte caps, decodes
frames from a dedicated pipe (first result wins), kills the whole child session on any breach,
and reports what happened as a ChildOutcome. `classify` turns that into a failure kind from exit
status and the supervisor's own flags, never from text the child printed.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from common.models.simulation import FailureKind
from worker.sandbox.launcher import Launcher, LaunchSpec
from worker.sandbox.protocol import (
    ErrorFrame,
    FrameReader,
    ProgressFrame,
    ProtocolError,
    ResultFrame,
)

CHUNK = 64 * 1024


class LaunchError(RuntimeError):
    """The child could not be started at all: an infrastructure fault, never the user's."""


@dataclass
class Stream:
    cap: int
    data: bytearray = field(default_factory=bytearray)
    total: int = 0

    def add(self, chunk: bytes) -> bool:
        """Keep the head up to `cap`; return False once the stream went over its cap."""
        self.total += len(chunk)
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        return self.total <= self.cap

    def text(self) -> str:
        s = self.data.decode("utf-8", "replace").replace("\x00", "\\0")
        if self.total > len(self.data):
            s += f"\n[… {self.total - len(self.data)} more bytes dropped]"
        return s


@dataclass
class ChildOutcome:
    name: str
    returncode: int | None
    """Exit status; negative for a signal (as subprocess reports it)."""
    timed_out: bool = False
    output_exceeded: str | None = None
    protocol_error: str | None = None
    result: ResultFrame | None = None
    error: ErrorFrame | None = None
    extra_results: int = 0
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def clean_exit(self) -> bool:
        return (
            self.returncode == 0
            and not self.timed_out
            and self.output_exceeded is None
            and self.protocol_error is None
        )


def run_child(
    launcher: Launcher,
    spec: LaunchSpec,
    *,
    on_progress: Callable[[ProgressFrame], None] | None = None,
    max_output_bytes: int = 1024 * 1024,
    max_frame_bytes: int = 64 * 1024 * 1024,
) -> ChildOutcome:
    read_fd, write_fd = os.pipe()
    try:
        argv, env = launcher.command(spec, frame_fd=write_fd)
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(write_fd,),
                env=env,
                cwd=spec.workdir,
                start_new_session=True,  # its own process group: one killpg ends all of it
                close_fds=True,
            )
        except OSError as e:
            raise LaunchError(f"cannot start the {spec.name} child: {e}") from e
    except BaseException:
        os.close(read_fd)  # no child will ever write to it: do not leak it per failed launch
        raise
    finally:
        os.close(write_fd)
    started = time.monotonic()
    deadline = started + spec.wall_s
    out = ChildOutcome(name=spec.name, returncode=None)
    streams = {"stdout": Stream(max_output_bytes), "stderr": Stream(max_output_bytes)}
    reader = FrameReader(max_frame=max_frame_bytes)
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None and proc.stderr is not None
    sel.register(proc.stdout.fileno(), selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr.fileno(), selectors.EVENT_READ, "stderr")
    sel.register(read_fd, selectors.EVENT_READ, "frames")
    rusage = None
    exited_at: float | None = None

    def breach() -> None:
        _kill_group(proc)

    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                out.timed_out = True
                breach()
                break
            if rusage is None:
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = _returncode(status)
                    rusage = ru
                    exited_at = now
            if not sel.get_map():
                if rusage is not None:
                    break
                time.sleep(0.01)
                continue
            if exited_at is not None and now - exited_at > 1.0:
                # The child is gone but something it left holds a pipe open: end them all.
                breach()
                break
            timeout = min(deadline - now, 0.05 if rusage is None else 0.1)
            for key, _ in sel.select(timeout):
                fd, what = key.fd, key.data
                try:
                    chunk = os.read(fd, CHUNK)
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(fd)
                    continue
                if what == "frames":
                    try:
                        frames = reader.feed(chunk)
                    except ProtocolError as e:
                        out.protocol_error = str(e)
                        breach()
                        raise _Stop() from None
                    for f in frames:
                        if isinstance(f, ProgressFrame):
                            if on_progress is not None:
                                on_progress(f)
                        elif out.result is None and out.error is None:
                            if isinstance(f, ResultFrame):
                                out.result = f
                            else:
                                out.error = f
                        else:
                            out.extra_results += 1
                elif not streams[what].add(chunk):
                    out.output_exceeded = what
                    breach()
                    raise _Stop()
    except _Stop:
        pass
    finally:
        sel.close()
        if rusage is None:
            breach()
            _, status, rusage = os.wait4(proc.pid, 0)
            proc.returncode = _returncode(status)
        else:
            _kill_group(proc)  # nothing of this child may outlive it
        os.close(read_fd)
        proc.stdout.close()
        proc.stderr.close()
    if reader.pending and out.protocol_error is None and out.result is None:
        out.protocol_error = f"truncated frame ({reader.pending} bytes) at end of stream"
    out.returncode = proc.returncode
    out.stdout = streams["stdout"].text()
    out.stderr = streams["stderr"].text()
    out.wall_s = time.monotonic() - started
    out.cpu_s = rusage.ru_utime + rusage.ru_stime
    out.peak_rss_mb = rusage.ru_maxrss / 1024
    return out


class _Stop(Exception):
    pass


def _returncode(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


SIGNAL_KINDS = {
    signal.SIGXCPU: FailureKind.CPU_LIMIT,
    signal.SIGXFSZ: FailureKind.OUTPUT_LIMIT,
}


def classify(out: ChildOutcome) -> tuple[FailureKind, str] | None:
    """The failure of a child that did not end cleanly with a result, or None if it did.
    Derived from the supervisor's own flags and the exit status only."""
    n = out.name
    if out.timed_out:
        return FailureKind.TIMEOUT, f"The {n} step did not finish within its time limit."
    if out.output_exceeded:
        return (
            FailureKind.OUTPUT_LIMIT,
            f"The {n} step wrote more than the allowed amount to {out.output_exceeded}.",
        )
    if out.protocol_error:
        return (
            FailureKind.PROTOCOL_VIOLATION,
            f"The {n} step broke the result protocol: {out.protocol_error}.",
        )
    rc = out.returncode
    if rc is not None and rc < 0:
        try:
            sig = signal.Signals(-rc)
        except ValueError:  # real-time signals (SIGRTMIN+n) have no Signals member
            return FailureKind.CRASHED, f"The {n} step was killed by signal {-rc}."
        kind = SIGNAL_KINDS.get(sig, FailureKind.CRASHED)
        return kind, f"The {n} step was killed by {sig.name}."
    if rc != 0:
        return FailureKind.CRASHED, f"The {n} step exited with status {rc} before finishing."
    if out.result is None and out.error is None:
        return FailureKind.NO_RESULT, f"The {n} step exited without a result."
    return None
