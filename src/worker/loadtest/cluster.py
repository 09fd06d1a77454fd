"""The machinery a load test runs on: a Temporal server (its own `DevServer`, or one the operator
names on loopback), `simjail worker` processes on a task queue of the test's own, one
directory holding everything they write (artifacts, job directories, logs), and the checks
for what a run may have left behind (processes, job directories, cgroups).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from worker.sandbox import cgroups
from worker.sandbox.cgroups import groups_of

JOB_MODULES = ("worker.sandbox.build_child", "worker.sandbox.physics_child")


@dataclass
class WorkerProcess:
    """One `simjail worker` child process of the load test."""

    proc: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)
    rss_before_mb: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ready(self) -> bool:
        """It has started polling (its `worker.start` line is written)."""
        try:
            return '"worker.start"' in self.log.read_text(errors="replace")
        except OSError:
            return False

    def rss_mb(self) -> float | None:
        try:
            return round(psutil.Process(self.pid).memory_info().rss / 2**20, 1)
        except psutil.Error:
            return None

    def running_job(self) -> bool:
        """A jail of a job (not the start-up render probe) runs under it now."""
        try:
            kids = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            return False
        for k in kids:
            with contextlib.suppress(psutil.Error):
                if any(m in " ".join(k.cmdline()) for m in JOB_MODULES):
                    return True
        return False

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout_s: float = 120.0) -> int | None:
        """SIGTERM, then wait (it cancels nothing: the test is over); SIGKILL past timeout."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


@dataclass
class Cluster:
    """Workers of one load test; `dir` holds their data (`data/`), temp dir (`tmp/`) and logs."""

    dir: Path
    address: str
    task_queue: str
    slots: int = 1
    own_server: bool = True
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def artifacts(self) -> Path:
        return self.dir / "data" / "artifacts"

    @property
    def tmp(self) -> Path:
        return self.dir / "tmp"

    def env(self) -> dict[str, str]:
        """This environment, with every path a worker writes under `dir` and the local store
        (a store outage is injected on its directory), no metrics port (the workers would all
        want it), and for the test's own server none of the operator's TEMPORAL_* settings."""
        dropped = ("SIMJAIL_S3_", "SIMJAIL_METRICS_", *(("TEMPORAL_",) if self.own_server else ()))
        env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
        env.update(
            SIMJAIL_DATA_DIR=str(self.dir / "data"),
            SIMJAIL_ARTIFACTS_DIR=str(self.artifacts),
            SIMJAIL_STORE="local",
            TMPDIR=str(self.tmp),
        )
        return env

    def prepare(self) -> None:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        # The jail's uid traverses the job directories by name (nsjail binds them as it).
        for d in (self.dir, self.tmp):
            d.chmod(0o711)

    def start_worker(self) -> WorkerProcess:
        log = self.dir / f"worker{len(self.workers)}.log"
        cmd = [sys.executable, "-m", "worker.cli", "worker", "--address", self.address]
        cmd += ["--task-queue", self.task_queue, "--slots", str(self.slots)]
        cmd += ["--graceful-shutdown", "0"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, env=self.env(), stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        w = WorkerProcess(proc, log)
        self.workers.append(w)
        return w

    def wait_ready(self, w: WorkerProcess, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not w.ready():
            if not w.alive():
                tail = w.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"worker {w.pid} exited {w.proc.returncode}: {tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {w.pid} did not start within {timeout_s:g} s")
            time.sleep(0.1)
        w.rss_before_mb = w.rss_mb()

    def live(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive()]

    def stop(self) -> None:
        for w in self.workers:
            w.stop()

    # --- what a run may leave behind ---------------------------------------------------------

    def leaks(self) -> dict[str, list[str]]:
        """After every worker stopped: processes of its jobs still alive, job directories,
        per-job cgroups of any of its workers (also those that were killed)."""
        pids = [w.pid for w in self.workers]
        marks = [f"{cgroups.PARENT}/{pid}-" for pid in pids]
        procs: list[str] = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                if p.pid in pids and p.status() != psutil.STATUS_ZOMBIE:
                    procs.append(f"{p.pid}: simjail worker still running")
                    continue
                cmd = " ".join(p.info["cmdline"] or [])
                group = Path(f"/proc/{p.pid}/cgroup").read_text()
                if any(m in cmd or m in group for m in marks) or str(self.dir) in cmd:
                    procs.append(f"{p.pid}: {cmd[:200]}")
        dirs = sorted(str(d) for d in self.tmp.glob("simjail-*"))
        groups = sorted(str(g) for pid in pids for g in groups_of(pid))
        return {"processes": procs, "job_dirs": dirs, "cgroups": groups}
