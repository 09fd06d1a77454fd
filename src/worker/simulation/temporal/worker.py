"""The simjail Temporal worker: `simjail worker` (and `simjail dev`) run `run_worker`.

Connection settings come from `client.ConnectOptions` (envconfig plus flags); the job policy
from SIMJAIL_* (worker.settings). `prepare_worker` makes the worker refuse to start when its jail
budgets do not fit the workflow's timeouts, when the sandbox is unusable or when a physics jail
cannot render (fail closed), and removes what dead workers left on this machine (their jails
and job directories; never those of a live worker). The worker sizes its activity slots to its
CPUs, optionally serves Prometheus metrics (worker.metrics), and on SIGTERM/SIGINT stops
polling, cancels the running jobs (their jails are killed and reaped before the activity
reports the cancellation) and exits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import structlog
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from worker.errors import InfrastructureError
from worker.job.workdir import remove_stale_job_dirs
from worker.metrics import MetricsServer, free_loopback_port
from worker.sandbox.launcher import Launcher, make_launcher
from worker.sandbox.zygote import WarmLauncher
from worker.settings import Settings
from worker.simulation.temporal.activities import SimulationActivities
from worker.simulation.temporal.shared import HEARTBEAT_INTERVAL_S, TASK_QUEUE, check_budgets
from worker.simulation.temporal.workflows import SimulationWorkflow
from worker.storage import make_store

log = structlog.get_logger("simjail.worker")


def start_metrics(port: int, host: str = "0.0.0.0") -> tuple[Runtime, MetricsServer]:
    """A Temporal runtime exporting the SDK's metrics on a loopback port, and simjail's metrics
    server on `port`, which serves both. Connect the worker's client with this runtime."""
    sdk_port = free_loopback_port()
    runtime = Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"127.0.0.1:{sdk_port}", durations_as_seconds=True
            )
        )
    )
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
    if isinstance(launcher, WarmLauncher):
        launcher.prewarm()  # it imports while the physics jail renders
    probed = probe(launcher, "physics")
    log.info("worker.render_probe", launcher=launcher.name, wall_s=probed.wall_s)
    if isinstance(launcher, WarmLauncher):
        # Serve once the zygote is ready (a few seconds: the import), or knowing it is not:
        # then builds go to cold jails, loudly, until it is.
        log.info("worker.zygote", ready=launcher.wait_ready())
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


def build_worker(
    client: Client,
    settings: Settings,
    *,
    launcher: Launcher | None = None,
    task_queue: str = TASK_QUEUE,
    slots: int | None = None,
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
    graceful_shutdown_s: float = 0.0,
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
    graceful_shutdown_s: float = 0.0,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run a worker until `stop` is set or SIGTERM/SIGINT arrives, then shut it down: running
    jobs get `graceful_shutdown_s` to finish, then are cancelled (jails killed and reaped).
    Without a `launcher`, `prepare_worker` makes one (cleaning up after dead workers); pass one
    from `prepare_worker` to fail before connecting."""
    owned = launcher is None
    if launcher is None:
        launcher = prepare_worker(settings)
    try:
        await _serve(client, settings, launcher, task_queue, slots, heartbeat_interval_s,
                     graceful_shutdown_s, stop, on_ready)  # fmt: skip
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
        task_queue=task_queue,
        namespace=client.namespace,
        slots=slots or default_slots(),
        launcher=launcher.name,
    )
    try:
        async with worker:
            if on_ready is not None:
                await on_ready()
            await stop.wait()
            log.info("worker.stopping")
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    log.info("worker.stopped")
