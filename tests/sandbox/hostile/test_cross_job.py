"""One job against the next: whatever a job plants (files, processes, memory, IPC, signals), the
next job sees nothing of it, and no job reaches the zygote it was forked from or a job running
beside it. With the warm path (the default) consecutive jobs are forked from the same zygote,
which is what these cases attack; with SIMJAIL_WARM=0 they hold for cold jails as well."""

from __future__ import annotations

import json
import re
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from common.models.simulation import FailureKind, SimulationRequest, SimulationResult
from worker.pipeline import run_request
from worker.sandbox.launcher import Launcher
from worker.settings import Settings
from worker.storage.local import LocalStore

pytestmark = pytest.mark.slow

RunDesign = Callable[..., SimulationResult]

PRELUDE = """
import json, os
def report(obj):
    raise RuntimeError("REPORT" + json.dumps(obj, sort_keys=True) + "REPORT")
"""
BOX = "\nfrom build123d import Box, Pos\nresult = Pos(0, 0, 9) * Box(9, 9, 9)\n"
SEE = """
import os, sys
def look():
    seen = {d: sorted(os.listdir(d)) for d in ("/tmp", "/dev/shm")}
    seen["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    seen["ppid"] = os.getppid()
    return seen
"""


def code(*parts: str) -> str:
    """A design made of parts, each dedented on its own."""
    return "".join(textwrap.dedent(p) for p in parts)


def reported(r: SimulationResult) -> Any:
    assert r.failure == FailureKind.USER_CODE_ERROR, r.reason
    m = re.search(r"REPORT(.*)REPORT", r.reason)
    assert m, r.reason
    return json.loads(m.group(1).replace("‹", "«").replace("›", "»"))


def _wait_for_no_job_processes(started: float, launcher: Launcher) -> list[str]:
    """Jail processes of this checkout started since `started`, other than the zygotes'."""
    checkout = str(Path(__file__).resolve().parents[3])
    end = time.time() + 5
    while True:
        left = [
            " ".join(p.info["cmdline"] or [])
            for p in psutil.process_iter(["pid", "cmdline", "create_time", "uids"])
            if p.info["create_time"] >= started - 1
            and p.pid not in zygote_pids(launcher)
            and p.info["uids"] is not None
            and p.info["uids"].real == 65534
            and checkout in " ".join(p.info["cmdline"] or [])
        ]
        if not left or time.time() > end:
            return left
        time.sleep(0.1)


def zygote_pids(launcher: Launcher) -> list[int]:
    return list(getattr(launcher, "zygote_pids", list)())


@pytest.fixture
def fresh_view(run_design: RunDesign) -> dict[str, Any]:
    """What a job sees when nothing was planted for it (the honest twin of every case)."""
    view: dict[str, Any] = reported(run_design(PRELUDE + SEE + "\nreport(look())\n"))
    return view


def test_files_planted_in_tmp_and_dev_shm_are_not_the_next_jobs(
    run_design: RunDesign, fresh_view: dict[str, Any]
) -> None:
    planted = run_design(
        code(
            """
        import os
        for d in ("/tmp", "/dev/shm"):
            with open(f"{d}/planted", "w") as f:
                f.write("for the next job")
            os.makedirs(f"{d}/dir/sub", exist_ok=True)
        assert os.path.exists("/tmp/planted")
        """,
            BOX,
        )
    )
    assert planted.outcome == "SUCCESS", planted.reason
    assert reported(run_design(PRELUDE + SEE + "\nreport(look())\n")) == fresh_view


def test_a_process_left_running_is_not_the_next_jobs(
    run_design: RunDesign, fresh_view: dict[str, Any]
) -> None:
    """A daemon (double fork, its own session) that would write into the next job's /tmp: it
    dies with its job, and the next job sees no process but its own."""
    planted = run_design(
        code(
            """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                for _ in range(300):
                    for d in ("/tmp", "/dev/shm"):
                        try:
                            open(f"{d}/from-the-daemon", "w").close()
                        except OSError:
                            pass
                    time.sleep(0.05)
            os._exit(0)
        time.sleep(0.3)
        """,
            BOX,
        )
    )
    assert planted.outcome == "SUCCESS", planted.reason
    later = PRELUDE + SEE + "\nimport time\ntime.sleep(0.5)\nreport(look())\n"
    assert reported(run_design(later)) == fresh_view


def test_memory_a_job_changes_is_not_the_next_jobs(run_design: RunDesign) -> None:
    """Everything a job shares with the zygote is a copy: module state, classes, the import
    system and the environment it changes are its own."""
    planted = run_design(
        code(
            """
        import os, sys, types
        import build123d
        from worker.simulation import cad
        build123d.planted = "for the next job"
        build123d.Box.volume = property(lambda self: 1e9)
        cad.PALETTE[0] = (1.0, 0.0, 0.0, 1.0)
        sys.modules["planted_module"] = types.ModuleType("planted_module")
        sys.path.insert(0, "/tmp/planted-path")
        os.environ["PLANTED"] = "1"
        """,
            BOX,
        )
    )
    assert planted.outcome == "SUCCESS", planted.reason
    got = reported(
        run_design(
            PRELUDE
            + """
import os, sys
import build123d
from worker.simulation import cad
report({
    "attribute": hasattr(build123d, "planted"),
    "volume": round(build123d.Box(2, 3, 4).volume, 6),
    "palette": list(cad.PALETTE[0]),
    "module": "planted_module" in sys.modules,
    "path": "/tmp/planted-path" in sys.path,
    "environ": "PLANTED" in os.environ,
})
"""
        )
    )
    assert got == {
        "attribute": False,
        "volume": 24.0,
        "palette": [0.9, 0.45, 0.15, 1.0],
        "module": False,
        "path": False,
        "environ": False,
    }


def test_two_warm_jobs_do_not_draw_the_same_random_numbers(run_design: RunDesign) -> None:
    """The zygote's random state is every job's starting point: each job draws a fresh seed,
    as a cold interpreter does (numpy's and Python's own)."""
    code = (
        PRELUDE
        + "import random, numpy as np\n"
        + "report([random.random(), float(np.random.random_sample())])\n"
    )
    first, second = reported(run_design(code)), reported(run_design(code))
    assert first[0] != second[0] and first[1] != second[1]


def test_sysv_ipc_a_job_creates_is_not_the_next_jobs(run_design: RunDesign) -> None:
    created = run_design(
        PRELUDE
        + """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
IPC_CREAT = 0o1000
shm = libc.shmget(0x51A1, 4096, IPC_CREAT | 0o666)
sem = libc.semget(0x51A1, 1, IPC_CREAT | 0o666)
report({"shm": shm >= 0, "sem": sem >= 0})
"""
    )
    assert reported(created) == {"shm": True, "sem": True}
    found = run_design(
        PRELUDE
        + """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
shm = libc.shmget(0x51A1, 4096, 0)
shm_errno = ctypes.get_errno()
sem = libc.semget(0x51A1, 1, 0)
lines = open("/proc/sysvipc/shm").read().count("\\n")
report({"shm": [shm, shm_errno], "sem": sem, "sysvipc": lines})
"""
    )
    assert reported(found) == {"shm": [-1, 2], "sem": -1, "sysvipc": 1}  # ENOENT; a header


def test_a_job_sees_and_signals_nothing_outside_itself(
    run_design: RunDesign, hostile_launcher: Launcher
) -> None:
    """No parent, no zygote, no other job in its pid namespace; kill(0) and kill(-1) reach only
    its own session; the zygote serves the next job as before."""
    before = zygote_pids(hostile_launcher)
    r = run_design(
        PRELUDE
        + """
import errno, os, signal
got = {"ppid": os.getppid(), "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}
got["session"] = [os.getsid(0), os.getpgrp()]
found = []
for pid in range(2, 4096):
    try:
        os.kill(pid, 0)
        found.append(pid)
    except OSError as e:
        assert e.errno == errno.ESRCH, e
got["signalable"] = found
signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.kill(0, signal.SIGTERM)  # the whole process group: itself alone
try:
    os.kill(-1, signal.SIGKILL)  # every process it may signal
    got["kill -1"] = "sent"
except ProcessLookupError:
    got["kill -1"] = "nobody"
report(got)
"""
    )
    assert reported(r) == {
        "ppid": 0,
        "pids": [1],
        "session": [1, 1],
        "signalable": [],
        "kill -1": "nobody",
    }
    assert zygote_pids(hostile_launcher) == before  # it lives, and serves the next job
    after = run_design(BOX)
    assert after.outcome == "SUCCESS", after.reason
    assert zygote_pids(hostile_launcher) == before
    assert getattr(hostile_launcher, "counts", {}).get("cold", 0) == 0


def test_ptrace_is_killed_before_it_reaches_anything(
    run_design: RunDesign, hostile_launcher: Launcher
) -> None:
    before = zygote_pids(hostile_launcher)
    r = run_design(
        """
        import ctypes
        ctypes.CDLL(None).ptrace(16, 1, 0, 0)  # PTRACE_ATTACH
        """
    )
    assert r.failure == FailureKind.SANDBOX_VIOLATION
    assert zygote_pids(hostile_launcher) == before


def test_concurrent_jobs_do_not_see_each_other(
    hostile_settings: Settings, hostile_launcher: Launcher, tmp_path: Path
) -> None:
    """Two jobs at once from one zygote: neither sees the other's files, processes or abstract
    sockets (each has its own network namespace)."""
    holder = code(
        PRELUDE,
        """
        import os, socket, time
        open("/tmp/holder-was-here", "w").close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind("\\0simjail-cross-job")
        s.listen(1)
        open("/dev/shm/holder-ready", "w").close()
        time.sleep(4)
        report({"held": True})
        """,
    )
    prober = code(
        PRELUDE,
        """
        import os, socket, time
        time.sleep(1.5)
        got = {"tmp": sorted(os.listdir("/tmp")), "shm": sorted(os.listdir("/dev/shm"))}
        got["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            c.connect("\\0simjail-cross-job")
            got["connect"] = "connected"
        except OSError as e:
            got["connect"] = e.errno
        report(got)
        """,
    )
    results: dict[str, SimulationResult] = {}

    def run(name: str, code: str) -> None:
        request = SimulationRequest.model_validate(
            {
                "request_id": f"hostile-{name}-{uuid.uuid4().hex[:6]}",
                "design": {"code": code},
                "options": {"render": False, "duration_s": 0.1},
            }
        )
        results[name] = run_request(
            request, hostile_settings, LocalStore(tmp_path / name), launcher=hostile_launcher
        )

    started = time.time()
    pairs = (("holder", holder), ("prober", prober))
    threads = [threading.Thread(target=run, args=a) for a in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    left = _wait_for_no_job_processes(started, hostile_launcher)
    assert left == [], f"processes left behind: {left}"
    assert reported(results["holder"]) == {"held": True}
    got = reported(results["prober"])
    assert "holder-was-here" not in got["tmp"] and got["shm"] == []
    assert got["pids"] == [1]
    assert got["connect"] == 111  # ECONNREFUSED: no such name in its own network namespace
