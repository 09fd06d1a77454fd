"""`simjail loadtest`: a bounded mix of benign and hostile jobs through a real Temporal server and
real workers, with faults injected while jobs are in flight, and a report of what held.

    report = asyncio.run(run_loadtest(LoadTestConfig(count=100, concurrency=8,
                                                     hostile_ratio=0.3, faults=FAULTS)))

A run starts (unless `address` names a loopback server to use) its own dev server persisting
to a file, `workers` `simjail worker` processes on a task queue of its own, all writing under
one directory, and submits `count` jobs (cases.job_mix), at most `concurrency` at a time, each
waited for through server outages. Each named fault is injected `fault_rounds` times, spread
over the run (fault i of F once i+1 in F+1 of the jobs were submitted, while jobs run). Then:

- completed / lost: a job is completed when its workflow returned a result; lost otherwise
  (failed, or not done when the run's time ran out);
- duplicated: a job whose request ran more than once to a result: more than one completed
  activity in its history, more than one workflow for its request id, or more than one
  stored result.json;
- mismatches: a verdict (outcome, failure kind) other than the case's expected one, or a
  stored result.json that says something else than the result returned;
- leaks: after the workers stopped, any process of theirs or their jobs, job directory or
  per-job cgroup left;
- latency (submit → result) p50 / p95 / max, throughput, each worker's RSS when it was ready
  and at the end.

`ok` (exit 0) only when nothing was lost, duplicated, mismatched or leaked, and every fault
asked for was injected. Everything is
bounded: at most MAX_COUNT jobs, MAX_CONCURRENCY in flight, MAX_WORKERS workers, `timeout_s`
in all; servers on loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import shutil
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError

from common.models.simulation import SimulationResult
from worker.errors import InfrastructureError, InvalidRequest
from worker.loadtest.cases import Job, job_mix
from worker.loadtest.cluster import Cluster
from worker.loadtest.faults import FAULTS, Fault, Injected, inject
from worker.metrics import free_loopback_port
from worker.simulation.temporal import client as simclient
from worker.simulation.temporal.dev import DevServer

log = structlog.get_logger("simjail.loadtest")

MAX_COUNT = 1000
MAX_CONCURRENCY = 64
MAX_WORKERS = 8
MAX_TIMEOUT_S = 4 * 3600.0
MAX_RESULT_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class LoadTestConfig:
    count: int
    concurrency: int = 4
    hostile_ratio: float = 0.3
    faults: tuple[Fault, ...] = ()
    fault_rounds: int = 1
    address: str | None = None
    workers: int = 2
    slots: int = 1
    render: bool = True
    seed: int = 0
    outage_s: float = 10.0
    timeout_s: float = 1800.0
    keep_dir: bool = False

    def check(self) -> None:
        """InvalidRequest naming what is out of bounds."""
        if not 1 <= self.count <= MAX_COUNT:
            raise InvalidRequest(f"--count must be 1..{MAX_COUNT}, not {self.count}")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise InvalidRequest(f"--concurrency must be 1..{MAX_CONCURRENCY}")
        if not 0.0 <= self.hostile_ratio <= 1.0:
            raise InvalidRequest("--hostile-ratio must be between 0 and 1")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise InvalidRequest(f"--workers must be 1..{MAX_WORKERS}")
        if not 1 <= self.slots <= 8:
            raise InvalidRequest("--slots must be 1..8")
        if not 1 <= self.fault_rounds <= 10:
            raise InvalidRequest("--fault-rounds must be 1..10")
        if not 0 < self.outage_s <= 120:
            raise InvalidRequest("--outage-s must be in (0, 120]")
        if not 0 < self.timeout_s <= MAX_TIMEOUT_S:
            raise InvalidRequest(f"--timeout must be in (0, {MAX_TIMEOUT_S:g}]")
        unknown = [f for f in self.faults if f not in FAULTS]
        if unknown:
            raise InvalidRequest(f"--faults: unknown {unknown}; choose from {list(FAULTS)}")
        if self.address is not None:
            check_loopback(self.address)
            if "restart-server" in self.faults:
                raise InvalidRequest(
                    "--faults restart-server restarts the load test's own server; it cannot "
                    "be combined with --address"
                )


def check_loopback(address: str) -> None:
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit():
        raise InvalidRequest(f"--address must be HOST:PORT, not {address!r}")
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InvalidRequest(
            f"--address {address!r} is not a loopback address: simjail loadtest submits hostile "
            "designs and injects faults, so it only runs against a server on this machine"
        )


@dataclass
class Outcome:
    job: Job
    submitted_at: float
    done_at: float | None = None
    result: SimulationResult | None = None
    error: str | None = None
    workflow_id: str = ""
    run_id: str = ""

    @property
    def latency_s(self) -> float | None:
        return None if self.done_at is None else self.done_at - self.submitted_at


@dataclass
class Progress:
    submitted: int = 0
    done: int = 0
    in_flight: int = 0
    all_submitted: asyncio.Event = field(default_factory=asyncio.Event)


async def run_loadtest(cfg: LoadTestConfig) -> dict[str, Any]:
    """Run the load test (see the module's docstring) and return its report."""
    cfg.check()
    run_id = uuid.uuid4().hex[:8]
    root = Path(tempfile.mkdtemp(prefix=f"loadtest-{run_id}-"))
    server: DevServer | None = None
    cluster: Cluster | None = None
    report: dict[str, Any] = {}
    ok = False
    try:
        if cfg.address is None:
            server = DevServer(
                free_loopback_port(), db=root / "temporal.db", log=root / "server.log"
            )
            await asyncio.to_thread(server.start)
            address = server.address
        else:
            address = cfg.address
        cluster = Cluster(
            root, address, f"loadtest-{run_id}", slots=cfg.slots, own_server=server is not None
        )
        cluster.prepare()
        workers = [cluster.start_worker() for _ in range(cfg.workers)]
        for w in workers:
            await asyncio.to_thread(cluster.wait_ready, w)
        if server is not None:
            client = await simclient.connect_local(address)
        else:
            client = await simclient.connect(simclient.ConnectOptions(address=address))
        jobs = job_mix(
            cfg.count, cfg.hostile_ratio, seed=cfg.seed, render=cfg.render, run_id=run_id
        )
        log.info("loadtest.start", jobs=len(jobs), address=address, dir=str(root))
        t0 = time.monotonic()
        outcomes, injected, fault_errors = await drive(cfg, client, cluster, server, jobs, t0)
        wall = time.monotonic() - t0
        rss_after = {w.pid: w.rss_mb() for w in cluster.live()}
        checks = await simclient.through_outages(
            lambda: verify(client, cluster, outcomes), what="checking the results"
        )
        checks.fault_errors = fault_errors
        await asyncio.to_thread(cluster.stop)
        if server is not None:
            await asyncio.to_thread(server.stop)
        leaks = cluster.leaks()
        report = summarize(cfg, outcomes, injected, checks, leaks, wall, cluster, rss_after)
        ok = bool(report["ok"])
        report["dir"] = str(root) if (cfg.keep_dir or not ok) else None
        return report
    finally:
        if cluster is not None:
            cluster.stop()
        if server is not None:
            await asyncio.to_thread(server.stop)
        if ok and not cfg.keep_dir:
            shutil.rmtree(root, ignore_errors=True)


async def drive(
    cfg: LoadTestConfig,
    client: Client,
    cluster: Cluster,
    server: DevServer | None,
    jobs: list[Job],
    t0: float,
) -> tuple[list[Outcome], list[Injected], list[str]]:
    """Submit every job (at most `concurrency` in flight) and wait for each, while the fault
    schedule runs; stop at the deadline."""
    progress = Progress()
    sem = asyncio.Semaphore(cfg.concurrency)
    outcomes: list[Outcome] = []
    outage_wait = max(120.0, 4 * cfg.outage_s)

    async def one(job: Job) -> None:
        async with sem:
            o = Outcome(job, time.monotonic())
            outcomes.append(o)
            progress.submitted += 1
            progress.in_flight += 1
            if progress.submitted == len(jobs):
                progress.all_submitted.set()
            try:
                handle = await simclient.through_outages(
                    lambda: simclient.submit(client, job.request, task_queue=cluster.task_queue),
                    what=f"submitting {job.request.request_id}",
                    outage_s=outage_wait,
                )
                o.workflow_id, o.run_id = handle.id, str(handle.result_run_id)
                o.result = await simclient.wait_result(handle, outage_s=outage_wait)
            except WorkflowFailureError as e:
                o.error = f"the workflow failed: {e.cause or e}"
            except InfrastructureError as e:
                o.error = e.message
            finally:
                o.done_at = time.monotonic()
                progress.in_flight -= 1
                progress.done += 1
                if progress.done % 10 == 0 or progress.done == len(jobs):
                    log.info("loadtest.progress", done=progress.done, of=len(jobs))

    plan = [f for _ in range(cfg.fault_rounds) for f in cfg.faults]
    injected: list[Injected] = []
    fault_errors: list[str] = []

    async def faults() -> None:
        for i, kind in enumerate(plan):
            threshold = math.ceil((i + 1) * len(jobs) / (len(plan) + 1))
            while progress.submitted < threshold or progress.in_flight == 0:
                if progress.done == len(jobs):
                    return
                await asyncio.sleep(0.1)
            log.info("loadtest.fault", kind=kind)
            try:
                got = await inject(kind, cluster, server, cfg.outage_s, t0)
            except Exception as e:  # a fault the tool could not inject (or undo): reported
                log.exception("loadtest.fault_failed", kind=kind)
                fault_errors.append(f"{kind}: {type(e).__name__}: {e}")
                return
            log.info("loadtest.fault_over", **got.as_dict())
            injected.append(got)

    tasks = [asyncio.ensure_future(one(j)) for j in jobs]
    fault_task = asyncio.ensure_future(faults())
    remaining = cfg.timeout_s - (time.monotonic() - t0)
    _, pending = await asyncio.wait(tasks, timeout=max(1.0, remaining))
    for t in pending:
        t.cancel()
    for t in pending:
        with contextlib.suppress(BaseException):
            await t
    for o in outcomes:
        if o.result is None and o.error is None:
            o.error = f"not done when the load test's {cfg.timeout_s:g} s ran out"
    # Let an injected fault finish restoring what it broke before anything is checked.
    if not fault_task.done():
        fault_task.cancel()
        with contextlib.suppress(BaseException):
            await fault_task
    return outcomes, injected, fault_errors


@dataclass
class Checks:
    duplicated: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    fault_errors: list[str] = field(default_factory=list)


async def verify(client: Client, cluster: Cluster, outcomes: list[Outcome]) -> Checks:
    """Exactly one result per job (history, visibility, store), each the verdict expected and
    the same as its stored result.json."""
    checks = Checks()
    for o in outcomes:
        if o.result is None:
            continue
        rid = o.job.request.request_id
        handle = client.get_workflow_handle(o.workflow_id)
        completed = 0
        async for e in handle.fetch_history_events():
            completed += e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        runs = await client.count_workflows(f'SimjailRequestId="{rid}"')
        stored = sorted((cluster.artifacts / rid).glob("*/result.json"))
        if completed != 1 or runs.count != 1 or len(stored) != 1:
            checks.duplicated.append(
                {
                    "request_id": rid,
                    "completed_activities": completed,
                    "workflows": runs.count,
                    "stored_results": len(stored),
                }
            )
        wrong = verdict_mismatch(o.job, o.result)
        if wrong is not None:
            checks.mismatches.append(wrong)
        for path in stored:
            try:
                same = SimulationResult.model_validate_json(path.read_bytes()) == o.result
            except (OSError, ValueError):
                same = False
            if not same:
                checks.mismatches.append(
                    {
                        "request_id": rid,
                        "case": o.job.case.name,
                        "expected": "result.json equal to the result returned",
                        "got": f"{path} differs",
                    }
                )
    return checks


def verdict_mismatch(job: Job, result: SimulationResult) -> dict[str, Any] | None:
    """What is wrong when `result` is not the verdict `job`'s case must get, else None."""
    got = f"{result.outcome} {result.failure}" if result.failure else result.outcome
    if got == str(job.expected):
        return None
    return {
        "request_id": job.request.request_id,
        "case": job.case.name,
        "expected": str(job.expected),
        "got": got,
        "reason": result.reason[:300],
    }


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    s = sorted(values)
    return round(s[max(0, math.ceil(p / 100 * len(s)) - 1)], 3)


def summarize(
    cfg: LoadTestConfig,
    outcomes: list[Outcome],
    injected: list[Injected],
    checks: Checks,
    leaks: dict[str, list[str]],
    wall_s: float,
    cluster: Cluster,
    rss_after: dict[int, float | None],
) -> dict[str, Any]:
    completed = [o for o in outcomes if o.result is not None]
    lost = [o for o in outcomes if o.result is None]
    latencies = [o.latency_s for o in completed if o.latency_s is not None]
    span = (
        max(o.done_at or 0 for o in completed) - min(o.submitted_at for o in outcomes)
        if completed
        else 0.0
    )
    leaked = sum(len(v) for v in leaks.values())
    by_outcome: dict[str, int] = {}
    for o in completed:
        assert o.result is not None
        key = o.result.outcome if o.result.failure is None else f"FAIL {o.result.failure}"
        by_outcome[key] = by_outcome.get(key, 0) + 1
    planned = [f for _ in range(cfg.fault_rounds) for f in cfg.faults]
    not_injected = planned[len(injected) :]
    report: dict[str, Any] = {
        "ok": not lost
        and not checks.duplicated
        and not checks.mismatches
        and leaked == 0
        and not not_injected
        and not checks.fault_errors,
        "submitted": len(outcomes),
        "completed": len(completed),
        "lost": len(lost),
        "duplicated": len(checks.duplicated),
        "mismatches": len(checks.mismatches),
        "leaked": leaked,
        "leaks": leaks,
        "hostile": sum(o.job.case.hostile for o in outcomes),
        "benign": sum(not o.job.case.hostile for o in outcomes),
        "outcomes": dict(sorted(by_outcome.items())),
        "latency_s": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "max": round(max(latencies), 3) if latencies else None,
        },
        "throughput_jobs_per_min": round(len(completed) / span * 60, 2) if span > 0 else None,
        "wall_s": round(wall_s, 2),
        "workers_rss_mb": [
            {
                "pid": w.pid,
                "before": w.rss_before_mb,
                "after": rss_after.get(w.pid),
                "killed": w.proc.returncode == -signal.SIGKILL,
            }
            for w in cluster.workers
        ],
        "faults": [f.as_dict() for f in injected],
        "faults_not_injected": not_injected,
        "fault_errors": checks.fault_errors,
        "lost_jobs": [
            {"request_id": o.job.request.request_id, "case": o.job.case.name, "error": o.error}
            for o in lost
        ],
        "duplicated_jobs": checks.duplicated,
        "mismatched_jobs": checks.mismatches,
        "config": {
            "count": cfg.count,
            "concurrency": cfg.concurrency,
            "hostile_ratio": cfg.hostile_ratio,
            "faults": list(cfg.faults),
            "fault_rounds": cfg.fault_rounds,
            "workers": cfg.workers,
            "slots": cfg.slots,
            "render": cfg.render,
            "seed": cfg.seed,
            "outage_s": cfg.outage_s,
            "address": cfg.address or "own dev server",
        },
    }
    return report
