"""Nothing outlives its owner: SIGKILL a process that runs a job (or a dev server) and
everything it started, its job directory and its cgroups go within seconds, without waiting
for another worker to start."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from worker.sandbox import cgroups

SIMJAIL = Path(sys.executable).parent / "simjail"


def _cgroups_of(pid: int) -> list[Path]:
    found: list[Path] = []
    for top in (
        cgroups.ROOT / "memory" / cgroups.PARENT,
        cgroups.ROOT / "pids" / cgroups.PARENT,
        cgroups.ROOT / "cpu" / cgroups.own_cgroup("cpu") / cgroups.PARENT,
    ):
        if top.is_dir():
            found += [d for d in top.iterdir() if d.is_dir() and d.name.startswith(f"{pid}-")]
    return found


def _wait_for(what: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if what():
            return True
        time.sleep(0.05)
    return what()


def test_a_dead_owners_job_directory_is_removed_by_its_janitor(tmp_path: Path) -> None:
    """The owner makes a job directory and dies without removing it (os._exit)."""
    code = textwrap.dedent(
        """
        import os, tempfile, time
        from worker.janitor import Janitor
        from worker.job.workdir import JobDir
        j = Janitor()
        d = JobDir("janitor-test").__enter__()  # never left: the owner dies inside
        print(d.path, j.pid, flush=True)
        time.sleep(0.2)
        os._exit(0)
        """
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    job_dir, janitor = Path(out[0]), int(out[1])
    assert _wait_for(lambda: not job_dir.exists(), 10), "the job directory stayed"
    assert _wait_for(lambda: not psutil.pid_exists(janitor), 10), "the janitor stayed"


@pytest.mark.slow
def test_a_sigkilled_simjail_run_leaves_no_jail_cgroup_or_job_directory(
    jail_tmp: Callable[[str], Path], processes_under: Callable[[Path], list[str]]
) -> None:
    root = jail_tmp("sigkill-run")  # nsjail binds the job dirs as uid 65534
    tmp = root / "tmp"
    tmp.mkdir()
    design = root / "sleeper.py"
    design.write_text("import time\n\ndef build():\n    time.sleep(600)\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SIMJAIL_")},
        "TMPDIR": str(tmp),
        "XDG_DATA_HOME": str(root / "data"),
    }
    run = subprocess.Popen(
        [str(SIMJAIL), "run", str(design), "--no-render", "--json"],
        env=env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        started = _wait_for(
            lambda: any("build_child" in " ".join(p.cmdline())
                        for p in psutil.Process(run.pid).children(recursive=True)),
            60,
        )  # fmt: skip
        assert started, "the build jail never started"
        assert list(tmp.glob("simjail-*")) and _cgroups_of(run.pid)
        run.kill()
        run.wait(10)
        t = time.monotonic()
        assert _wait_for(lambda: processes_under(root) == [], 15), processes_under(root)
        assert _wait_for(lambda: not list(tmp.glob("simjail-*")), 15), list(tmp.iterdir())
        assert _wait_for(lambda: _cgroups_of(run.pid) == [], 15), _cgroups_of(run.pid)
        print(f"\nSIGKILL → jail, job directory and cgroups gone in {time.monotonic() - t:.2f} s")
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow
def test_a_sigkilled_simjail_dev_stops_its_temporal_server(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SIMJAIL_")},
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    cmd = [str(SIMJAIL), "dev", "--port", str(_free_port()), "--ui-port", str(_free_port())]
    dev = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert dev.stdout is not None
        for line in dev.stdout:
            if line.startswith("Worker polling"):
                break
        servers = [p for p in psutil.Process(dev.pid).children() if "start-dev" in p.cmdline()]
        assert servers, "no Temporal dev server"
        dev.kill()
        dev.wait(10)
        gone = _wait_for(lambda: not any(_alive(p) for p in servers), 15)
        assert gone, "the dev server stayed"
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGTERM)
            dev.wait(30)
