"""The simjail Temporal worker: `simjail worker` (and `simjail dev`) run `run_worker`.

Connection settings come from `client.ConnectOptions` (envconfig plus flags); the job policy
from SIMJAIL_* (worker.settings). `prepare_worker` makes the worker refuse to start when its jail
budgets do not fit the workflow's timeouts, when the sandbox is unusable or when a physics jail
cannot render (fail closed), and removes what dead workers left on this machine (their jails
and job directories; never those of a live worker). `run_worker` refuses a namespace without
simjail's search attributes (the workflow would fail its tasks setting them), logs one
`worker.start` line naming the server, namespace, task queue, store, limits and versions,
sizes its activity slots to its CPUs, optionally serves Prometheus metrics (worker.metrics),
and on SIGTERM/SIGINT stops polling, lets running jobs finish for the grace period
(`DEFAULT_GRACEFUL_SHUTDOWN_S` unless told otherwise), then cancels the rest (their jails are
killed and reaped; the workflow schedules them again elsewhere) and exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import structlog
import temporalio
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from worker import metrics
from worker.errors import InfrastructureError
from worker.job.workdir import remove_stale_job_dirs
from worker.metrics import MetricsServer, free_loopback_port
from worker.sandbox.launcher import Launcher, make_launcher
from worker.sandbox.zygote import WarmLauncher
from worker.settings import Settings
from worker.simulation.temporal.activities import SimulationActivities
from worker.simulation.temporal.client import make_runtime
from worker.simulation.temporal.shared import (
    DEFAULT_GRACEFUL_SHUTDOWN_S,
    HEARTBEAT_INTERVAL_S,
    SEARCH_ATTRIBUTES,
    TASK_QUEUE,
    check_budgets,
)
from worker.simulation.temporal.workflows import RequireOneArgument, SimulationWorkflow
from worker.storage import describe_store, make_store

log = structlog.get_logger("simjail.worker")


def start_metrics(port: int, host: str = "127.0.0.1") -> tuple[Runtime, MetricsServer]:
    """A Temporal runtime exporting the SDK's metrics on a loopback port, and simjail's metrics
    server on `host:port`, which serves both. Connect the worker's client with this runtime."""
    sdk_port = free_loopback_port()
    runtime = make_runtime(prometheus_bind=f"127.0.0.1:{sdk_port}")
    server = MetricsServer(port, host=host, temporal_url=f"http://127.0.0.1:{sdk_port}/metrics")
    server.start()
    log.info("metrics.serving", port=server.port, url=f"http://{host}:{server.port}/metrics")
    return runtime, server


def default_slots() -> int:
    """One job per CPU this process may use: a job is CPU-bound in its jails."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def prepare_worker(settings: Settings) -> Launcher:
    """Start-up of a worker process, before it takes any job: its budgets must fit the
    workflow's timeouts, the sandbox is checked, what dead workers left on this machine is
    removed (first, so their jails stop as soon as possible), then a physics jail must render.
    Raises InfrastructureError (SandboxUnavailable, ProbeFailed) saying what to do."""
    from worker.sandbox.probe import probe

    misfit = check_budgets(settings.limits)
    if misfit is not None:
        raise InfrastructureError(
            f"this worker's jail budgets do not fit SimulationWorkflow's timeouts ({misfit}); "
            "lower them, or the workflow would end jobs before their jails' limits fire"
        )
    launcher = make_launcher(settings.sandbox, settings.paths.policy_root, settings.reuse)
    cleanup_dead_workers(launcher)  # first: it removes every group named after this pid too
    try:
        if isinstance(launcher, WarmLauncher):
            launcher.prewarm()  # it imports while the physics jail renders
        probed = probe(launcher, "physics")
        log.info("worker.render_probe", launcher=launcher.name, wall_s=probed.wall_s)
        if isinstance(launcher, WarmLauncher):
            # Serve once the zygote is ready (a few seconds: the import), or knowing it is
            # not: then builds go to cold jails, loudly, until it is.
            log.info("worker.zygote", ready=launcher.wait_ready())
    except BaseException:
        launcher.close()  # a worker that cannot serve leaves no zygote behind
        raise
    return launcher


def cleanup_dead_workers(launcher: Launcher) -> dict[str, object]:
    """Remove what workers that died without cleaning up (SIGKILL, OOM, a crash) left on this
    machine: their jails (killed through their per-job cgroups; nsjail runs in its own session
    and would otherwise live until the jail's time limit) and their job directories. Only
    leftovers whose owner pid is no longer alive are touched, so the jobs of other live workers
    on the same machine are safe. Call it before this process runs any job."""
    from worker.sandbox.nsjail import remove_stale_cgroups

    t = time.monotonic()
    groups = remove_stale_cgroups() if launcher.policy is not None else []
    dirs = remove_stale_job_dirs()
    took = round(time.monotonic() - t, 3)
    if groups or dirs:
        log.warning(
            "worker.cleaned_dead_workers",
            cgroups=groups,
            job_dirs=[str(d) for d in dirs],
            wall_s=took,
        )
    return {"cgroups": groups, "job_dirs": dirs, "wall_s": took}


class ServerErrorCounter(logging.Handler):
    """Counts what the Temporal SDK logs at WARNING and above (its core's lines are about
    reaching the server: polls, heartbeats, completions that failed) as infrastructure errors
    of cause `server`."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("temporalio.core"):
            metrics.infrastructure_error("server")


async def check_search_attributes(client: Client) -> None:
    """Raise InfrastructureError, with the command that fixes it, when the client's namespace
    lacks simjail's search attributes; the workflow sets them and would otherwise fail every
    task that does. A server that does not let this worker look is trusted (and logged)."""
    try:
        resp = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
    except RPCError as e:
        if e.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED):
            log.warning("worker.search_attributes_unchecked", error=str(e)[:300])
            return
        raise
    have = {**resp.system_attributes, **resp.custom_attributes}
    keyword = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    missing = [k.name for k in SEARCH_ATTRIBUTES if have.get(k.name) != keyword]
    if missing:
        names = " ".join(f"--name {n}" for n in missing)
        raise InfrastructureError(
            f"namespace {client.namespace!r} lacks simjail's search attributes "
            f"({', '.join(missing)}, type Keyword); register them once with: temporal operator "
            f"search-attribute create --namespace {client.namespace} {names} --type Keyword",
            cause="server",
        )


def versions() -> dict[str, str]:
    from worker.job.publish import versions as job_versions

    return {
        **job_versions(),
        "temporalio": temporalio.__version__,
        "python": platform.python_version(),
    }


def build_worker(
    client: Client,
    settings: Settings,
    *,
    launcher: Launcher | None = None,
    task_queue: str = TASK_QUEUE,
    slots: int | None = None,
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
    graceful_shutdown_s: float = DEFAULT_GRACEFUL_SHUTDOWN_S,
) -> Worker:
    activities = SimulationActivities(
        settings,
        make_store(settings),
        launcher=launcher,
        heartbeat_interval_s=heartbeat_interval_s,
    )
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[SimulationWorkflow],
        activities=[activities.run_simulation],
        interceptors=[RequireOneArgument()],
        max_concurrent_activities=slots or default_slots(),
        # Heartbeats reach the server (and a cancellation reaches the job) within this.
        max_heartbeat_throttle_interval=timedelta(seconds=heartbeat_interval_s),
        default_heartbeat_throttle_interval=timedelta(seconds=heartbeat_interval_s),
        graceful_shutdown_timeout=timedelta(seconds=graceful_shutdown_s),
    )


async def run_worker(
    client: Client,
    settings: Settings,
    *,
    launcher: Launcher | None = None,
    task_queue: str = TASK_QUEUE,
    slots: int | None = None,
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
    graceful_shutdown_s: float = DEFAULT_GRACEFUL_SHUTDOWN_S,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[], Awaitable[None]] | None = None,
    metrics_url: str | None = None,
) -> None:
    """Run a worker until `stop` is set or SIGTERM/SIGINT arrives, then shut it down: running
    jobs get `graceful_shutdown_s` to finish, then are cancelled (jails killed and reaped).
    Without a `launcher`, `prepare_worker` makes one (cleaning up after dead workers); pass one
    from `prepare_worker` to fail before connecting (the caller then closes it). Raises
    InfrastructureError when the namespace lacks the search attributes."""
    owned = launcher is None
    if launcher is None:
        launcher = prepare_worker(settings)
    try:
        await check_search_attributes(client)
        await _serve(client, settings, launcher, task_queue, slots, heartbeat_interval_s,
                     graceful_shutdown_s, stop, on_ready, metrics_url)  # fmt: skip
    finally:
        if owned:
            launcher.close()  # its zygote


async def _serve(
    client: Client,
    settings: Settings,
    launcher: Launcher,
    task_queue: str,
    slots: int | None,
    heartbeat_interval_s: float,
    graceful_shutdown_s: float,
    stop: asyncio.Event | None,
    on_ready: Callable[[], Awaitable[None]] | None,
    metrics_url: str | None,
) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
    worker = build_worker(
        client,
        settings,
        launcher=launcher,
        task_queue=task_queue,
        slots=slots,
        heartbeat_interval_s=heartbeat_interval_s,
        graceful_shutdown_s=graceful_shutdown_s,
    )
    log.info(
        "worker.start",
        **start_line(
            client, settings, launcher, task_queue, slots, graceful_shutdown_s, metrics_url
        ),
    )
    counter = ServerErrorCounter()
    logging.getLogger("temporalio").addHandler(counter)
    try:
        async with worker:
            if on_ready is not None:
                await on_ready()
            await stop.wait()
            log.info("worker.stopping", graceful_shutdown_s=graceful_shutdown_s)
    finally:
        logging.getLogger("temporalio").removeHandler(counter)
        for sig in installed:
            loop.remove_signal_handler(sig)
    log.info("worker.stopped")


def start_line(
    client: Client,
    settings: Settings,
    launcher: Launcher,
    task_queue: str,
    slots: int | None,
    graceful_shutdown_s: float,
    metrics_url: str | None,
) -> dict[str, Any]:
    """What the `worker.start` line says: where this worker is and where its results go."""
    return {
        "server": client.service_client.config.target_host,
        "namespace": client.namespace,
        "task_queue": task_queue,
        "store": describe_store(settings),
        "slots": slots or default_slots(),
        "launcher": launcher.name,
        "graceful_shutdown_s": graceful_shutdown_s,
        "limits": settings.limits.model_dump(),
        "metrics": metrics_url,
        "pid": os.getpid(),
        "versions": versions(),
    }
