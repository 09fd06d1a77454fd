"""The job-level figures: start latency and build CPU of a warm build against a cold jail, the
environment cache against a build of it, and throughput of the new path against the cold one.
Every job is a real request through the real pipeline and the real sandbox."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.models.simulation import SimulationRequest, SimulationResult
from worker.bench import BenchFailed
from worker.job.children import build_spec
from worker.job.workdir import JobDir
from worker.pipeline import run_request
from worker.request_files import request_from_files
from worker.sandbox.launcher import Launcher, make_launcher
from worker.sandbox.protocol import BuildJob, geometry_caps
from worker.sandbox.supervisor import classify, run_child
from worker.sandbox.zygote import WarmLauncher
from worker.settings import JobLimits, Reuse, Settings
from worker.storage.local import LocalStore

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
FIRST_LINE = (
    'import sys, time\nsys.stderr.write(f"FIRSTLINE {time.time()!r}\\n")\n'
    "from build123d import Box, Pos\nresult = Pos(0, 0, 15) * Box(10, 10, 10)\n"
)
OWN_CPU = (
    "import sys, time\nfrom build123d import Box, Pos\n_t0 = time.process_time()\n"
    "result = Pos(0, 0, 15) * Box(10, 10, 10)\n"
    'sys.stderr.write(f"OWNCPU {time.process_time() - _t0!r}\\n")\n'
)
"""Its own lines are what follows the import: the import is what a warm build saves."""


@dataclass(frozen=True)
class Size:
    start_jobs: int
    cold_start_jobs: int
    cpu_jobs: int
    cold_cpu_jobs: int
    cache_reads: int
    throughput_jobs: int
    cold_throughput_jobs: int
    render_jobs: int
    cold_render_jobs: int
    render_fps: int | None
    """Frames per second of the video jobs (None: the default, 30)."""


SIZES = {
    "tiny": Size(3, 1, 3, 1, 3, 2, 2, 2, 2, 3),
    "default": Size(15, 3, 10, 3, 10, 16, 6, 4, 4, None),
}


def p50(values: list[float]) -> float:
    return float(statistics.median(values))


def settings(data_dir: Path, *, warm: bool) -> Settings:
    """The new path's settings (warm builds, the environment cache) or today's (neither)."""
    reuse = {} if warm else {"warm": False, "env_cache_mb": 0}
    return Settings.from_flat({"data_dir": data_dir, "sandbox": "nsjail", **reuse})


class Dirs:
    """Fresh directories under one root, for the benchmark's jobs and stores."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.n = 0

    def new(self, name: str) -> Path:
        self.n += 1
        d = self.root / f"{name}-{self.n}"
        d.mkdir(parents=True)
        return d


@contextlib.contextmanager
def launchers(policy_root: Path) -> Iterator[tuple[Launcher, Launcher]]:
    """(new path, cold path): the default worker's launcher (warm builds) and today's."""
    warm = make_launcher("nsjail", policy_root, Reuse())
    try:
        cold = make_launcher("nsjail", policy_root, Reuse(warm=False))
        yield warm, cold
    finally:
        warm.close()


def _succeeded(r: SimulationResult) -> SimulationResult:
    if r.outcome != "SUCCESS":
        raise BenchFailed(f"a benchmark job did not succeed: {r.failure} {r.reason[:300]}")
    return r


def _logs(r: SimulationResult) -> str:
    return Path(r.artifact_urls["logs"].removeprefix("file://")).read_text()


def _request(code: str, **options: Any) -> SimulationRequest:
    return SimulationRequest.model_validate(
        {
            "request_id": f"bench-{uuid.uuid4().hex[:8]}",
            "design": {"code": code},
            "options": {"render": False, "duration_s": 0.1, **options},
        }
    )


def first_line_ms(launcher: Launcher, settings: Settings, store: LocalStore, n: int) -> list[float]:
    """From calling the pipeline (the job's arrival) to the design's first line, n times."""
    out = []
    for _ in range(n):
        t0 = time.time()
        r = _succeeded(run_request(_request(FIRST_LINE), settings, store, launcher=launcher))
        m = re.search(r"FIRSTLINE ([0-9.]+)", _logs(r))
        if m is None:
            raise BenchFailed("the design's first line left no mark in the logs")
        out.append((float(m.group(1)) - t0) * 1000)
    return out


def _zygote_tree_cpu_s(launcher: Launcher) -> float | None:
    """CPU of the zygote and everything it reaped (its reapers, and through them their jobs),
    once it has reaped them; None for a launcher without a zygote."""
    if not isinstance(launcher, WarmLauncher):
        return None
    host = launcher.facts().host_pid
    end = time.monotonic() + 5
    while time.monotonic() < end:
        with open(f"/proc/{host}/task/{host}/children") as f:
            if not f.read().split():
                break
        time.sleep(0.05)
    with open(f"/proc/{host}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def build_cpu(launcher: Launcher, paths: Dirs, n: int) -> dict[str, float]:
    """n builds of a one-box design straight through the supervisor: everything they cost in
    CPU (the jail's side: a cold jail's whole process tree, or the zygote's fork, the reaper and
    the job; and the supervisor thread's) beyond what the design's own lines used."""
    limits = JobLimits()
    caps = geometry_caps(limits.max_parts, limits.max_triangles, limits.max_vertices)
    jail = supervisor = own = 0.0
    zygote_before = _zygote_tree_cpu_s(launcher)
    for i in range(n):
        with JobDir(f"bench-cpu-{i}") as jobdir:
            d = jobdir.input("build-design")
            BuildJob(
                source_kind="design",
                filename="design.py",
                code=OWN_CPU,
                max_parts=limits.max_parts,
                max_triangles=limits.max_triangles,
            ).write(d / "job.json")
            before = resource.getrusage(resource.RUSAGE_THREAD)
            out = run_child(launcher, build_spec(limits, "design", d), frame_caps=caps)
            after = resource.getrusage(resource.RUSAGE_THREAD)
        if classify(out) is not None or out.result is None:
            raise BenchFailed(f"a benchmark build failed: {out.report} {out.stderr[-500:]}")
        m = re.search(r"OWNCPU ([0-9.e-]+)", out.stderr)
        if m is None:
            raise BenchFailed("the design did not report its own CPU")
        own += float(m.group(1))
        supervisor += after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        jail += out.cpu_s
    zygote_after = _zygote_tree_cpu_s(launcher)
    if zygote_before is not None and zygote_after is not None:
        jail = zygote_after - zygote_before  # the whole tree, the jobs included
    return {
        "jobs": n,
        "overhead_s": round((jail + supervisor - own) / n, 4),
        "jail_side_s": round(jail / n, 4),
        "supervisor_s": round(supervisor / n, 4),
        "design_own_s": round(own / n, 4),
    }


def env_cache(
    warm: Launcher, cold: Launcher, paths: Dirs, n: int
) -> tuple[list[float], dict[str, float]]:
    """n repeats of the ramp task (design and environment): how long its environment takes
    from the cache (what the pipeline logs), and, as baselines, its build in a warm and in a
    cold jail (the first run of each path)."""
    ramp = EXAMPLES / "ramp"

    def request() -> SimulationRequest:
        return request_from_files(
            ramp / "design.py",
            environment=ramp / "environment.py",
            objectives=ramp / "objectives.yaml",
            render=False,
            request_id=f"bench-env-{uuid.uuid4().hex[:8]}",
        )

    new = settings(paths.new("env-new"), warm=True)
    today = settings(paths.new("env-cold"), warm=False)
    store = LocalStore(paths.new("env-store"))
    cold_build = _succeeded(run_request(request(), today, store, launcher=cold))
    warm_build = _succeeded(run_request(request(), new, store, launcher=warm))
    hits = []
    for _ in range(n):
        r = _succeeded(run_request(request(), new, store, launcher=warm))
        m = re.search(r"environment build: from the cache \([0-9a-f]+…\), ([0-9.]+) ms", _logs(r))
        if m is None or "build_environment" in r.metrics["resources"]:
            raise BenchFailed("a repeated environment was not read from the cache")
        hits.append(float(m.group(1)))
    return hits, {
        "env_build_cold_ms": cold_build.metrics["resources"]["build_environment"]["wall_s"] * 1000,
        "env_build_warm_ms": warm_build.metrics["resources"]["build_environment"]["wall_s"] * 1000,
    }


def throughput(
    launcher: Launcher,
    settings: Settings,
    store: LocalStore,
    jobs: int,
    *,
    render: bool,
    fps: int | None = None,
    concurrency: int = 2,
) -> dict[str, float]:
    """Jobs per minute of the ramp task (design, environment, objectives), `concurrency` at a
    time, after one job that is not counted (it fills the environment cache of the new path)."""
    ramp = EXAMPLES / "ramp"

    def request() -> SimulationRequest:
        r = request_from_files(
            ramp / "design.py",
            environment=ramp / "environment.py",
            objectives=ramp / "objectives.yaml",
            render=render,
            request_id=f"bench-tp-{uuid.uuid4().hex[:8]}",
        )
        if fps is None:
            return r
        return r.model_copy(update={"options": r.options.model_copy(update={"fps": fps})})

    _succeeded(run_request(request(), settings, store, launcher=launcher))
    todo = list(range(jobs))
    lock = threading.Lock()
    failures: list[str] = []
    cpu = [0.0]

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            try:
                r = _succeeded(run_request(request(), settings, store, launcher=launcher))
                used = sum(v["cpu_s"] for v in r.metrics["resources"].values())
                with lock:
                    cpu[0] += used
            except Exception as e:  # reported after the others finished
                failures.append(str(e))

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    if failures:
        raise BenchFailed(failures[0])
    return {
        "jobs": jobs,
        "concurrency": concurrency,
        "wall_s": round(wall, 2),
        "jobs_per_min": round(jobs / wall * 60, 2),
        "jail_cpu_s_per_job": round(cpu[0] / jobs, 3),
    }
