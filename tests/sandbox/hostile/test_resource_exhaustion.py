"""Hostile designs that try to exhaust a resource of the build jail: CPU, wall time, memory,
processes, threads, disk, inodes, shared memory, file size, file descriptors, stack, and the
geometry caps.

The harness (conftest.py) runs each with tight limits: build wall 8 s, build CPU 4 s, build
memory 768 MB. The jail's own limits come from sandbox/build.cfg: pids cgroup 64, /tmp tmpfs
64 MiB and 4096 inodes, /dev/shm tmpfs 16 MiB and 64 inodes, RLIMIT_FSIZE 64 MiB, RLIMIT_NOFILE
256, RLIMIT_STACK 64 MiB. Every case must end as one exact failure kind, and the harness checks
that nothing of the job survives it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from common.models.simulation import FailureKind, SimulationResult

if TYPE_CHECKING:
    from conftest import Budget

pytestmark = pytest.mark.slow

RunDesign = Callable[..., SimulationResult]


def build_resources(r: SimulationResult) -> dict[str, Any]:
    res: dict[str, Any] = r.metrics["resources"]["build_design"]
    return res


def test_busy_loop_is_cpu_limit(run_design: RunDesign, budget: Budget) -> None:
    r = run_design(
        """
        def build():
            while True:
                pass
        """
    )
    assert r.failure == FailureKind.CPU_LIMIT
    assert r.reason == "The design build step used up its CPU time limit."
    res = build_resources(r)
    assert res["cpu_s"] >= budget.cpu_s - 0.1  # the CPU budget was spent,
    assert res["wall_s"] < budget.wall_s - 1  # well before the wall limit


def test_sleep_forever_is_timeout(run_design: RunDesign, budget: Budget) -> None:
    r = run_design(
        """
        import time
        def build():
            time.sleep(3600)
        """
    )
    assert r.failure == FailureKind.TIMEOUT
    assert r.reason == "The design build step did not finish within its time limit."
    res = build_resources(r)
    assert res["cpu_s"] < budget.cpu_s - 1  # it slept: the wall clock, not the CPU, ended it
    assert budget.wall_s - 0.5 <= res["wall_s"] < budget.wall_s + 3


def test_memory_bomb_is_memory_limit(run_design: RunDesign) -> None:
    r = run_design(
        """
        def build():
            blocks = []
            while True:
                blocks.append(bytearray(64 * 1024 * 1024))
        """
    )
    assert r.failure == FailureKind.MEMORY_LIMIT
    assert r.reason == "The design build step ran out of its memory limit."
    assert build_resources(r)["peak_rss_mb"] >= 760  # the 768 MB cgroup limit was reached


def test_slow_memory_growth_is_memory_limit(run_design: RunDesign, budget: Budget) -> None:
    r = run_design(
        """
        import time
        def build():
            blocks = []
            while True:
                blocks.append(b"x" * (8 * 1024 * 1024))
                time.sleep(0.02)
        """
    )
    assert r.failure == FailureKind.MEMORY_LIMIT
    assert r.reason == "The design build step ran out of its memory limit."
    res = build_resources(r)
    assert res["peak_rss_mb"] >= 760
    assert 1.0 < res["wall_s"] < budget.wall_s - 1  # it grew, and was stopped before the wall


def test_fork_bomb_is_user_code_error(run_design: RunDesign) -> None:
    """`while True: os.fork()` stops at the pids cgroup (64 processes and threads): fork()
    then fails with EAGAIN, which Python raises as BlockingIOError in every process of the bomb.
    Each of them runs the build child's error path and writes a USER_CODE_ERROR frame to the
    inherited frame pipe (frames are smaller than PIPE_BUF, so they never interleave); the first
    one wins. When PID 1 of the jail exits, the kernel kills the rest of its pid namespace. The
    user sees their own code's failure, which is what happened: a clean FAIL, not a crash."""
    r = run_design(
        """
        import os
        def build():
            while True:
                os.fork()
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    assert r.reason == (
        "The design's build failed: «BlockingIOError: [Errno 11] Resource temporarily "
        "unavailable (design.py, line 5, in build)»"
    )


def test_thread_bomb_is_user_code_error(run_design: RunDesign) -> None:
    r = run_design(
        """
        import threading, time
        def build():
            n = 0
            try:
                while True:
                    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
                    n += 1
            except RuntimeError as e:
                raise RuntimeError(f"{e} after {n} threads") from None
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    m = re.fullmatch(
        r"The design's build failed: «RuntimeError: can't start new thread after (\d+) threads "
        r"\(design.py, line 10, in build\)»",
        r.reason,
    )
    assert m, r.reason
    assert 50 <= int(m.group(1)) < 64  # the pids cgroup counts threads: 64 with the main one


def test_disk_fill_of_tmp_is_no_space_left(run_design: RunDesign) -> None:
    """Files of 16 MiB each (under RLIMIT_FSIZE) until the 64 MiB tmpfs is full: ENOSPC."""
    r = run_design(
        """
        def build():
            total = 0
            try:
                for i in range(100):
                    with open(f"/tmp/fill{i}", "wb") as f:
                        for _ in range(16):
                            total += f.write(b"\\xff" * (1 << 20))
            except OSError as e:
                raise OSError(e.errno, f"{e.strerror} after {total >> 20} MiB") from None
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    m = re.fullmatch(
        r"The design's build failed: «OSError: \[Errno 28\] No space left on device after "
        r"(\d+) MiB \(design.py, line 10, in build\)»",
        r.reason,
    )
    assert m, r.reason
    assert 60 <= int(m.group(1)) <= 64


def test_inode_fill_of_tmp_is_no_space_left(run_design: RunDesign) -> None:
    """Empty files until the tmpfs runs out of its 4096 inodes (one is /tmp itself, and a few
    more are mount points when the checkout lives under the host's /tmp)."""
    r = run_design(
        """
        def build():
            i = 0
            while True:
                open(f"/tmp/f{i}", "w").close()
                i += 1
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    m = re.fullmatch(
        r"The design's build failed: «OSError: \[Errno 28\] No space left on device: "
        r"'/tmp/f(\d+)' \(design.py, line 5, in build\)»",
        r.reason,
    )
    assert m, r.reason
    assert 4080 <= int(m.group(1)) <= 4095


def test_dev_shm_fill_is_no_space_left(run_design: RunDesign) -> None:
    r = run_design(
        """
        def build():
            total = 0
            try:
                with open("/dev/shm/fill", "wb") as f:
                    while True:
                        total += f.write(b"\\xff" * (1 << 20))
            except OSError as e:
                raise OSError(e.errno, f"{e.strerror} after {total >> 20} MiB") from None
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    m = re.fullmatch(
        r"The design's build failed: «OSError: \[Errno 28\] No space left on device after "
        r"(\d+) MiB \(design.py, line 9, in build\)»",
        r.reason,
    )
    assert m, r.reason
    assert 14 <= int(m.group(1)) <= 16  # the 16 MiB cap of /dev/shm


def test_huge_sparse_file_is_file_too_large(run_design: RunDesign) -> None:
    """A 1 TiB sparse file costs no space, but RLIMIT_FSIZE (64 MiB) refuses the size itself.
    Python ignores SIGXFSZ, so the kernel's EFBIG reaches the code as an OSError."""
    r = run_design(
        """
        def build():
            with open("/tmp/sparse", "wb") as f:
                f.truncate(1 << 40)
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    assert r.reason == (
        "The design's build failed: «OSError: [Errno 27] File too large (design.py, line 4, in "
        "build)»"
    )


def test_sigxfsz_restored_to_default_is_still_file_too_large(run_design: RunDesign) -> None:
    """With SIGXFSZ back at its default action (terminate), writing past RLIMIT_FSIZE would kill
    an ordinary process. The design's process is PID 1 of its pid namespace, and the kernel drops
    signals that are not forced on it when their action is the default: the write fails with
    EFBIG instead, and the failure is the user's error, not OUTPUT_LIMIT."""
    r = run_design(
        """
        import signal
        def build():
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
            with open("/tmp/big", "wb", buffering=0) as f:
                f.seek(1 << 40)
                f.write(b"x")
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    assert r.reason == (
        "The design's build failed: «OSError: [Errno 27] File too large (design.py, line 7, in "
        "build)»"
    )


def test_fd_exhaustion_is_too_many_open_files(run_design: RunDesign) -> None:
    r = run_design(
        """
        def build():
            files = []
            try:
                while True:
                    files.append(open("/dev/null"))
            except OSError as e:
                raise OSError(e.errno, f"{e.strerror} after {len(files)} files") from None
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    m = re.fullmatch(
        r"The design's build failed: «OSError: \[Errno 24\] Too many open files after (\d+) "
        r"files \(design.py, line 8, in build\)»",
        r.reason,
    )
    assert m, r.reason
    assert 240 <= int(m.group(1)) < 256  # RLIMIT_NOFILE 256, a few taken by the interpreter


def test_unbounded_python_recursion_is_memory_limit(run_design: RunDesign) -> None:
    """With the recursion limit lifted, pure Python recursion never overflows the C stack on
    Python >= 3.11 (Python-to-Python calls keep their frames on the heap): the frames grow
    until the memory cgroup stops the jail. MEMORY_LIMIT, not a crash."""
    r = run_design(
        """
        import sys
        def build():
            sys.setrecursionlimit(10**9)
            def down(n):
                return down(n + 1) + 1
            return down(0)
        """
    )
    assert r.failure == FailureKind.MEMORY_LIMIT
    assert r.reason == "The design build step ran out of its memory limit."


def test_c_level_recursion_is_recursion_error(run_design: RunDesign) -> None:
    """Recursion through C (repr of a list nested a million deep) is guarded by CPython's own
    C recursion limit, which setrecursionlimit does not lift: RecursionError, well inside the
    64 MiB stack, so no SIGSEGV."""
    r = run_design(
        """
        import sys
        def build():
            sys.setrecursionlimit(10**9)
            x = []
            for _ in range(10**6):
                x = [x]
            return repr(x)
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    assert r.reason == (
        "The design's build failed: «RecursionError: maximum recursion depth exceeded while "
        "getting the repr of an object (design.py, line 8, in build)»"
    )


def test_catastrophic_regex_is_cpu_limit(run_design: RunDesign, budget: Budget) -> None:
    """Exponential backtracking inside the C regex engine: no Python bytecode runs, so nothing
    in the interpreter can interrupt it; RLIMIT_CPU ends it."""
    r = run_design(
        """
        import re
        def build():
            return re.match(r"(a+)+$", "a" * 64 + "b")
        """
    )
    assert r.failure == FailureKind.CPU_LIMIT
    assert r.reason == "The design build step used up its CPU time limit."
    assert build_resources(r)["wall_s"] < budget.wall_s - 1


def test_hundreds_of_parts_is_geometry_limit(run_design: RunDesign, budget: Budget) -> None:
    """500 small spheres against the cap of 200 parts. The build child counts parts before it
    tessellates any (extraction costs ~50 ms per part and grows with the tree), so the answer is
    GEOMETRY_LIMIT within the budget, not a CPU limit spent on parts that would be refused."""
    r = run_design(
        """
        from build123d import Compound, Pos, Sphere
        def build():
            return Compound(children=[Pos(i % 25 * 3, i // 25 * 3, 1) * Sphere(1) for i in range(500)])
        """  # noqa: E501
    )
    assert r.failure == FailureKind.GEOMETRY_LIMIT
    assert r.reason == (
        "The design's build failed: «The geometry was rejected: build() returned more than 200 "
        "parts, the cap.»"
    )
    assert build_resources(r)["cpu_s"] < budget.cpu_s - 0.1


def test_finely_tessellated_part_is_geometry_limit(run_design: RunDesign) -> None:
    """One part made of eight spherical solids (1492 triangles each) against a triangle cap the
    request tightened to 5000: the build child counts each solid's triangles before copying
    them out and stops at the solid that passes the cap. (The default cap, 200 000 triangles,
    cannot be reached by real tessellation within this suite's 4 s CPU budget.)"""
    r = run_design(
        """
        from build123d import Compound, Pos, Sphere
        def build():
            grapes = Compound([Pos(i * 12, 0, 6) * Sphere(5) for i in range(8)])  # 8 solids
            grapes.label = "grapes"
            return grapes
        """,
        options={"limits": {"max_triangles": 5000}},
    )
    assert r.failure == FailureKind.GEOMETRY_LIMIT
    assert r.reason == (
        "The design's build failed: «The geometry was rejected: part 'grapes' takes the scene "
        "past the cap of 5000 triangles (the part has 5968 so far at this tessellation); choose "
        "a coarser `tessellation` in the options.»"
    )


HAIRBALL = """
import base64, json, os, struct, sys
import numpy as np
def send(n_triangles, n_vertices):
    fd = int(sys.argv[sys.argv.index("--frame-fd") + 1])
    v = np.random.default_rng(0).random((n_vertices, 3)).astype("<f4") * 10
    t = (np.arange(3 * n_triangles).reshape(n_triangles, 3) % len(v)).astype("<i4")
    b64 = lambda a: base64.b64encode(a.tobytes()).decode()
    part = {
        "label": "hairball", "source": "design", "volume_mm3": 500.0,
        "com_mm": [5, 5, 5], "inertia_mm5": [8e3, 8e3, 8e3, 0, 0, 0],
        "solids": [{"vertices": b64(v), "triangles": b64(t)}],
    }
    body = json.dumps({"type": "result", "payload": {"parts": [part]}}).encode()
    data = struct.pack(">I", len(body)) + body
    while data:
        data = data[os.write(fd, data):]
    os._exit(0)
"""


def test_million_triangle_frame_is_refused_from_its_length(run_design: RunDesign) -> None:
    """A million triangles (24 MB of base64) written straight to the frame pipe: more than the
    largest geometry the caps allow (~11.3 MB), so the frame is refused from its 4-byte length
    before the worker reads, let alone parses, any of it."""
    r = run_design(HAIRBALL + "\ndef build():\n    send(1_000_000, 500_000)\n")
    assert r.failure == FailureKind.PROTOCOL_VIOLATION
    assert r.reason.startswith("The design build step broke the result protocol: frame of ")
    assert r.reason.endswith(" bytes exceeds the cap of 11303936.")


def test_too_many_triangles_within_the_frame_cap_are_geometry_limit(
    run_design: RunDesign,
) -> None:
    """600 000 triangles over 4 vertices fit the frame (9.6 MB): the supervisor counts them
    from the buffer lengths and refuses them before decoding a single one for the physics."""
    r = run_design(HAIRBALL + "\ndef build():\n    send(600_000, 4)\n")
    assert r.failure == FailureKind.GEOMETRY_LIMIT
    assert r.reason == ("The geometry was rejected: 600000 triangles exceed the cap of 200000.")


def test_four_triangles_over_a_million_vertices_are_refused_at_once(run_design: RunDesign) -> None:
    """They once burned the whole physics time limit in MuJoCo's hull; now they are refused
    from the encoded length, before the physics starts."""
    r = run_design(HAIRBALL + "\ndef build():\n    send(4, 300_000)\n")
    assert r.failure == FailureKind.INVALID_GEOMETRY
    assert r.reason == (
        "The geometry was rejected: part 'hairball' has a solid of 300000 vertices for 4 triangles."
    )
    assert r.metrics["sim_time_s"] == 0  # the physics never started
    assert "physics" not in r.metrics["resources"]


def test_burning_cpu_in_every_process_it_may_start_gets_one_core(run_design: RunDesign) -> None:
    """8 busy processes for 4 s of wall clock (threads would share one GIL): the build jail's
    cgroup gives its design one core of CPU time per second (cgroup_cpu_ms_per_sec: 1000), so
    the other jail of the job, the other jobs and the worker keep theirs. Measured here: 1.15
    cores with the quota (its first period may burst), 1.94 of this machine's 2 without."""
    r = run_design(
        """
        import os, resource, time
        def build():
            start = time.monotonic()
            pids = []
            for _ in range(8):
                pid = os.fork()
                if pid == 0:
                    while time.monotonic() < start + 4.0:
                        pass
                    os._exit(0)
                pids.append(pid)
            for pid in pids:
                os.waitpid(pid, 0)
            c = resource.getrusage(resource.RUSAGE_CHILDREN)
            cores = (c.ru_utime + c.ru_stime) / (time.monotonic() - start)
            raise RuntimeError(f"cores={cores:.3f}")
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR, r.reason
    m = re.search(r"cores=([0-9.]+)", r.reason)
    assert m, r.reason
    assert float(m.group(1)) < 1.35, r.reason


def test_the_same_infinite_loop_gets_the_same_verdict_every_time(run_design: RunDesign) -> None:
    """It once came back CPU_LIMIT, TIMEOUT and CRASHED ("killed by SIGKILL"): a threshold on
    the CPU time read afterwards decided. The supervisor now ends the run at the budget itself
    and says so."""
    loop = """
        def build():
            while True:
                pass
        """
    verdicts = {(r.failure, r.reason) for r in (run_design(loop) for _ in range(3))}
    assert verdicts == {
        (FailureKind.CPU_LIMIT, "The design build step used up its CPU time limit.")
    }
