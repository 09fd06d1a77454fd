"""Runs one child (a jail) to completion under the supervisor's own rules.

The supervisor owns the deadline, reads stdout/stderr in bounded chunks with byte caps, decodes
frames from a dedicated pipe (first result wins), kills the whole child session on any breach,
and reports what happened as a ChildOutcome. `classify` turns that into a failure kind from exit
status and the supervisor's own flags, never from text the child printed.
"""

from __future__ import annotations

import os
import selectors
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from common.models.simulation import FailureKind
from worker.errors import Failure
from worker.sandbox.launcher import (
    Child,
    Exit,
    JailReport,
    Launcher,
    LaunchSpec,
    Prepared,
    popen_child,
    wait_child,
)
from worker.sandbox.protocol import (
    PHYSICS_CAPS,
    ErrorFrame,
    FrameCaps,
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
    report: JailReport = field(default_factory=JailReport)
    """How the child ended, according to the launcher (exit status, jail log, cgroups)."""
    timed_out: bool = False
    """The supervisor's own deadline fired (the launcher's should have fired first)."""
    output_exceeded: str | None = None
    cpu_exceeded: bool = False
    """The supervisor's own measurement reached the CPU budget: it ended the child."""
    cancelled: bool = False
    """The caller's cancel event was set: the child was ended as on a breach. Not a failure of
    the child; the caller turns it into a cancellation, never into a FAIL."""
    protocol_error: str | None = None
    result: ResultFrame | None = None
    error: ErrorFrame | None = None
    extra_results: int = 0
    stdout: str = ""
    stderr: str = ""
    jail_log: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    start_latency_s: float | None = None
    """From starting the launcher to the moment it executed the child (nsjail logs that line
    after setting up the namespaces, mounts, cgroups and seccomp); None when the launcher does
    not say."""


CPU_CHECK_S = 0.1
"""How often the supervisor measures the child's CPU time against its budget."""
SUPERVISOR_GRACE_S = 3.0
"""The supervisor's deadline is this much after the launcher's own wall-clock limit."""
KILL_GRACE_S = 2.0
"""After the launcher's terminate signal, how long before SIGKILL to the whole group."""


def run_child(
    launcher: Launcher,
    spec: LaunchSpec,
    *,
    on_progress: Callable[[ProgressFrame], None] | None = None,
    max_output_bytes: int = 1024 * 1024,
    frame_caps: FrameCaps = PHYSICS_CAPS,
    max_log_bytes: int = 256 * 1024,
    cancel: threading.Event | None = None,
) -> ChildOutcome:
    """Run one child to its end. Raises LaunchError when the launcher could not start it.

    When `cancel` is set, the child is ended exactly as on a breach (the launcher's terminate
    signal, then SIGKILL to all of it) within one loop iteration (≤ 0.1 s), reaped, and the
    outcome comes back with `cancelled` set."""
    read_fd, write_fd = os.pipe()
    log_r, log_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    prepared: Prepared | None = None
    try:
        prepared = launcher.prepare(spec, frame_fd=write_fd, log_fd=log_w)
        start = getattr(prepared, "start", None)  # a run that starts itself (a warm build)
        child: Child = start(out_w, err_w) if start else popen_child(prepared, out_w, err_w)
    except BaseException as e:
        for fd in (read_fd, log_r, out_r, err_r):  # no child will ever write to them
            os.close(fd)
        if prepared is not None:
            prepared.finish(-signal.SIGKILL, "", 0.0)
        if isinstance(e, OSError):
            raise LaunchError(f"cannot start the {spec.name} child: {e}") from e
        raise
    finally:
        for fd in (write_fd, log_w, out_w, err_w):
            os.close(fd)
    started = time.monotonic()
    deadline = started + spec.wall_s + SUPERVISOR_GRACE_S
    out = ChildOutcome(name=spec.name)
    streams = {
        "stdout": Stream(max_output_bytes),
        "stderr": Stream(max_output_bytes),
        "log": Stream(max_log_bytes),
    }
    reader = FrameReader(frame_caps)
    sel = selectors.DefaultSelector()
    sel.register(out_r, selectors.EVENT_READ, "stdout")
    sel.register(err_r, selectors.EVENT_READ, "stderr")
    sel.register(read_fd, selectors.EVENT_READ, "frames")
    sel.register(log_r, selectors.EVENT_READ, "log")
    ended: Exit | None = None
    exited_at: float | None = None
    exec_marker: bytes | None = getattr(prepared, "exec_marker", None)  # optional for launchers
    # A run that starts itself knows when its child's jail was complete.
    out.start_latency_s = getattr(child, "start_latency_s", None)

    def breach() -> None:
        child.signal(prepared.terminate_signal)

    next_cpu_check = started
    try:
        while True:
            now = time.monotonic()
            if ended is None and now >= next_cpu_check:
                next_cpu_check = now + CPU_CHECK_S
                used = prepared.cpu_used_s(child.pid)
                if used is not None and used >= spec.cpu_s:
                    out.cpu_exceeded = True
                    breach()
                    break
            if cancel is not None and cancel.is_set():
                out.cancelled = True
                breach()
                break
            if now >= deadline:
                out.timed_out = True
                breach()
                break
            if ended is None:
                ended = child.poll()
                if ended is not None:
                    exited_at = now
            if not sel.get_map():
                if ended is not None:
                    break
                time.sleep(0.01)
                continue
            if exited_at is not None and now - exited_at > 1.0:
                # The child is gone but something it left holds a pipe open: end them all.
                child.kill_all()
                break
            timeout = min(deadline - now, 0.05 if ended is None else 0.1)
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
                elif what == "log":
                    streams["log"].add(chunk)  # the launcher's log: kept up to its cap
                    if (
                        out.start_latency_s is None
                        and exec_marker is not None
                        and exec_marker in streams["log"].data
                    ):
                        out.start_latency_s = time.monotonic() - started
                elif not streams[what].add(chunk):
                    out.output_exceeded = what
                    breach()
                    raise _Stop()
    except _Stop:
        pass
    finally:
        if ended is None:
            ended = _reap(child, prepared.terminate_signal)
        child.kill_all()  # nothing of this child may outlive it
        _drain(sel, streams["log"], log_r)
        sel.close()
        for fd in (read_fd, log_r, out_r, err_r):
            os.close(fd)
        out.jail_log = streams["log"].text()
        out.cpu_s = ended.cpu_s
        out.report = prepared.finish(ended.returncode, out.jail_log, out.cpu_s)
    if out.report.launch_error is not None:
        raise LaunchError(
            f"the sandbox could not start the {spec.name} child: {out.report.launch_error}"
        )
    if reader.pending and out.protocol_error is None and out.result is None:
        out.protocol_error = f"truncated frame ({reader.pending} bytes) at end of stream"
    out.stdout = streams["stdout"].text()
    out.stderr = streams["stderr"].text()
    out.wall_s = time.monotonic() - started
    out.peak_rss_mb = (
        out.report.peak_memory_mb if out.report.peak_memory_mb is not None else ended.max_rss_mb
    )
    return out


class _Stop(Exception):
    pass


def _drain(sel: selectors.BaseSelector, log: Stream, log_fd: int) -> None:
    """Read what the launcher logged before it exited (its last lines say how the child ended)."""
    if log_fd not in sel.get_map():
        return
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        if not sel.select(0.05):
            continue
        try:
            chunk = os.read(log_fd, CHUNK)
        except OSError:
            return
        if not chunk:
            return
        log.add(chunk)


def _reap(child: Child, sig: int) -> Exit:
    """Ask the launcher to end the child (nsjail kills its jail and cleans up on SIGTERM),
    then SIGKILL all of it after a grace."""
    child.signal(sig)
    ended = wait_child(child, KILL_GRACE_S)
    while ended is None:
        child.kill_all()
        ended = wait_child(child, 1.0)
    return ended


def classify(out: ChildOutcome) -> Failure | None:
    """The failure of a child that did not end cleanly with a result, or None if it did.
    Derived from the supervisor's own flags and the launcher's report, never from what the
    child printed."""
    n = out.name
    r = out.report

    if out.timed_out or r.timed_out:
        return Failure(FailureKind.TIMEOUT, f"The {n} step did not finish within its time limit.")
    if out.output_exceeded:
        return Failure(
            FailureKind.OUTPUT_LIMIT,
            f"The {n} step wrote more than the allowed amount to {out.output_exceeded}.",
        )
    if out.protocol_error:
        return Failure(
            FailureKind.PROTOCOL_VIOLATION,
            f"The {n} step broke the result protocol: {out.protocol_error}.",
        )
    if r.memory_exceeded:
        return Failure(FailureKind.MEMORY_LIMIT, f"The {n} step ran out of its memory limit.")
    if r.seccomp_killed:
        return Failure(
            FailureKind.SANDBOX_VIOLATION,
            f"The {n} step made a forbidden system call and was killed.",
        )
    if out.cpu_exceeded or r.cpu_exceeded:
        return Failure(FailureKind.CPU_LIMIT, f"The {n} step used up its CPU time limit.")
    if r.signal is not None:
        if r.signal == signal.SIGXFSZ:
            return Failure(
                FailureKind.OUTPUT_LIMIT, f"The {n} step wrote a file over the size limit."
            )
        try:
            name = signal.Signals(r.signal).name
        except ValueError:  # real-time signals (SIGRTMIN+n) have no Signals member
            name = f"signal {r.signal}"
        return Failure(FailureKind.CRASHED, f"The {n} step was killed by {name}.")
    if r.exit_code != 0:
        return Failure(
            FailureKind.CRASHED,
            f"The {n} step exited with status {r.exit_code} before finishing.",
        )
    if out.result is None and out.error is None:
        return Failure(FailureKind.NO_RESULT, f"The {n} step exited without a result.")
    return None
