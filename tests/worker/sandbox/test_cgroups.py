"""Per-job parent cgroups on the real cgroupfs (v1 on these machines): limits written, counters
read after a real process used them, and nothing left behind, not even a process still inside."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.sandbox import cgroups
from worker.sandbox.cgroups import CgroupError, JobCgroups
from worker.sandbox.nsjail import remove_stale_cgroups

MiB = 2**20

pytestmark = pytest.mark.skipif(
    cgroups.version() != 1 or not (cgroups.ROOT / "memory").is_dir(),
    reason="these tests read cgroup v1 files; this machine has no v1 memory hierarchy",
)


@pytest.fixture
def job() -> Iterator[JobCgroups]:
    """A job's groups under the real simjail/ parent, removed whatever the test did."""
    cg = JobCgroups(job=f"test-{uuid.uuid4().hex[:12]}", memory_bytes=128 * MiB, pids_max=16)
    try:
        yield cg
    finally:
        cg.remove()


@pytest.fixture
def private_root(tmp_path: Path) -> Iterator[Path]:
    """A cgroup root of its own: `memory`, `pids` and `cpu` link to fresh groups on the real
    cgroupfs, so remove_stale_cgroups() there cannot touch the jobs of a worker running on this
    machine."""
    name = f"simjail-test-{uuid.uuid4().hex[:12]}"
    real = [cgroups.ROOT / c / name for c in ("memory", "pids", "cpu")]
    root = tmp_path / "cgroot"
    root.mkdir()
    for d in real:
        d.mkdir()
        (root / d.parent.name).symlink_to(d)
    try:
        yield root
    finally:
        for d in real:  # whatever a failed test left: processes, then groups deepest first
            cgroups._kill_all(d)
            for sub in sorted(d.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if sub.is_dir():
                    sub.rmdir()
            d.rmdir()


def start_in(cg: JobCgroups, code: str, sub: str | None = None) -> subprocess.Popen[str]:
    """Start a python that waits for a line on stdin, put it in the job's groups (or in a group
    `sub` nested inside them, as nsjail nests its own), then let it run `code`."""
    p = subprocess.Popen(
        [sys.executable, "-c", "import sys\nsys.stdin.readline()\n" + textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    for d in cg.dirs:
        target = d
        if sub is not None:
            target = d / sub
            target.mkdir(exist_ok=True)
        (target / "cgroup.procs").write_text(f"{p.pid}\n")
    assert p.stdin is not None
    p.stdin.write("go\n")
    p.stdin.flush()
    return p


def read(path: Path) -> str:
    return path.read_text().strip()


def test_create_writes_the_limits_and_remove_deletes_the_groups(job: JobCgroups) -> None:
    assert job.relative == f"simjail/{job.job}"  # what nsjail's --cgroup_*_parent takes
    job.create()
    mem, pids, _ = job.dirs
    assert mem == cgroups.ROOT / "memory" / "simjail" / job.job
    assert pids == cgroups.ROOT / "pids" / "simjail" / job.job
    assert read(mem / "memory.limit_in_bytes") == str(128 * MiB)
    if (mem / "memory.memsw.limit_in_bytes").exists():  # with swap accounting: no swap either
        assert read(mem / "memory.memsw.limit_in_bytes") == str(128 * MiB)
    assert read(pids / "pids.max") == "16"
    assert job.usage() == cgroups.Usage(0, False, False)
    job.remove()
    assert not mem.exists() and not pids.exists()
    job.remove()  # again: nothing to do, no error


def test_usage_counts_what_a_process_inside_allocated(job: JobCgroups) -> None:
    job.create()
    p = start_in(
        job,
        """
        b = bytearray(64 * 2**20)  # zero-filled: every page touched
        print("allocated", flush=True)
        sys.stdin.readline()
        """,
    )
    assert p.stdout is not None and p.stdout.readline() == "allocated\n"
    usage = job.usage()
    assert usage.peak_memory_bytes is not None
    assert 64 * MiB <= usage.peak_memory_bytes < 100 * MiB
    assert not usage.memory_limit_hit and not usage.pids_limit_hit
    p.communicate("done\n", timeout=10)
    assert p.returncode == 0


def test_allocating_past_the_limit_is_seen_as_a_memory_limit_hit(job: JobCgroups) -> None:
    job.create()
    p = start_in(job, "b = bytearray(400 * 2**20)")
    p.communicate(timeout=30)
    assert p.returncode == -9  # the OOM killer
    usage = job.usage()
    assert usage.memory_limit_hit
    assert usage.peak_memory_bytes == 128 * MiB


def test_a_thread_bomb_is_seen_as_a_pids_limit_hit(job: JobCgroups) -> None:
    job.create()
    p = start_in(
        job,
        """
        import threading
        stop = threading.Event()
        started = 0
        try:
            for _ in range(64):
                threading.Thread(target=stop.wait).start()
                started += 1
        except RuntimeError:
            pass
        print(started, flush=True)
        stop.set()
        """,
    )
    out, _ = p.communicate(timeout=30)
    assert int(out) < 16  # the main thread counts too
    usage = job.usage()
    assert usage.pids_limit_hit and not usage.memory_limit_hit


def test_remove_kills_a_process_still_inside_a_nested_group(job: JobCgroups) -> None:
    """nsjail killed with SIGKILL leaves its NSJAIL.<pid> group and the jail's processes."""
    job.create()
    p = start_in(job, "import time; time.sleep(600)", sub="NSJAIL.1234")
    job.remove()
    assert p.wait(timeout=5) == -9
    assert [d for d in job.dirs if d.exists()] == []


def test_a_root_without_cgroups_is_cgroup_error() -> None:
    cg = JobCgroups(job="x", memory_bytes=MiB, pids_max=1, root=Path("/proc/self"))
    with pytest.raises(CgroupError, match="cannot set up cgroups under /proc/self"):
        cg.create()


def test_remove_stale_cgroups_removes_only_groups_of_dead_workers(
    private_root: Path,
) -> None:
    """Groups are named `<worker pid>-<jail>-<id>`: those of a dead worker go (with what still
    runs inside), those of a live worker and unnamed ones stay."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        stale = [
            JobCgroups(
                job=f"{gone.pid}-build-{i}", memory_bytes=64 * MiB, pids_max=8, root=private_root
            )
            for i in range(2)
        ]
        kept = [
            JobCgroups(job=f"{live.pid}-physics-x", memory_bytes=64 * MiB, pids_max=8,
                       root=private_root),
            JobCgroups(job="legacy-build-x", memory_bytes=64 * MiB, pids_max=8, root=private_root),
        ]  # fmt: skip
        for cg in [*stale, *kept]:
            cg.create()
        p = start_in(stale[0], "import time; time.sleep(600)", sub="NSJAIL.99")
        q = start_in(kept[0], "import time; time.sleep(600)", sub="NSJAIL.98")
        other = private_root / "memory" / "not-simjail"  # outside simjail/: not ours to remove
        other.mkdir()
        removed = remove_stale_cgroups(private_root)
        assert removed == sorted(cg.job for cg in stale)
        assert p.wait(timeout=5) == -9
        assert q.poll() is None
        for top in ("memory", "pids", f"cpu/{cgroups.own_cgroup('cpu')}"):
            left = sorted(d.name for d in (private_root / top / "simjail").iterdir() if d.is_dir())
            assert left == sorted(cg.job for cg in kept)
        assert other.is_dir()
        assert remove_stale_cgroups(private_root) == []  # again: nothing to do, no error
        q.kill()
        q.wait()  # dead before the fixture removes its group
    finally:
        live.kill()
        live.wait()
