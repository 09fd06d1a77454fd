"""Job and probe directories carry their worker's pid, so the next worker removes those of a
worker that died (SIGKILL, OOM, a SIGTERM during its start-up probe) and never a live one's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from worker.job.workdir import JobDir, remove_stale_job_dirs
from worker.owners import OWNER_FILE, mark_owner


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_directories_of_dead_owners_go_and_live_ones_stay(tmp_path: Path) -> None:
    dead_probe = tmp_path / "simjail-probe-abcd"
    (dead_probe / "physics-out").mkdir(parents=True)
    (dead_probe / OWNER_FILE).write_text(f"{dead_pid()}\n")
    live = tmp_path / "simjail-job-live"
    live.mkdir()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    (live / OWNER_FILE).write_text(f"{alive.pid}\n")
    unowned = tmp_path / "simjail-tool-x"
    unowned.mkdir()
    try:
        assert remove_stale_job_dirs(tmp_path) == [dead_probe]
    finally:
        alive.kill()
        alive.wait()
    assert not dead_probe.exists() and live.exists() and unowned.exists()


def test_a_job_dir_and_a_probe_dir_are_marked_with_this_pid(tmp_path: Path) -> None:
    import os

    mark_owner(tmp_path)
    assert (tmp_path / OWNER_FILE).read_text() == f"{os.getpid()}\n"
    with JobDir("req") as d:
        assert (d.path / OWNER_FILE).read_text() == f"{os.getpid()}\n"
    assert not d.path.exists()
