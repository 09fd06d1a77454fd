"""Temporal worker start-up: `simjail worker` (and `simjail dev`) run `run_worker`.

Connection settings come from flags or the environment (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
TEMPORAL_TLS, TEMPORAL_TLS_CERT/TEMPORAL_TLS_KEY/TEMPORAL_TLS_CA, TEMPORAL_API_KEY); the job
policy from SIMJAIL_* (worker.settings). The worker refuses to start when the sandbox is
unusable or a physics jail cannot render (fail closed), removes what dead workers left on this
machine (their jails and job directories; never those of a live worker), sizes its activity
slots to its CPUs, optionally serves Prometheus metrics (worker.metrics), and on SIGTERM/SIGINT
stops polling, cancels the running jobs (their jails are killed and reaped before the activity
reports the cancellation) and exits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import structlog
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import TLSConfig
from temporalio.worker import Worker

from worker.metrics import MetricsServer
from worker.sandbox.launcher import Launcher
from worker.settings import Settings
from worker.simulation.temporal.activities import SimulationActivities
from worker.simulation.temporal.workflows import TASK_QUEUE, SimulationWorkflow
from worker.storage import make_store

log = structlog.get_logger("simjail.worker")


@dataclass(frozen=True)
class ConnectOptions:
    address: str = "localhost:7233"
    namespace: str = "default"
    tls: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, **overrides: object) -> ConnectOptions:
        env = os.environ
        kw: dict[str, object] = {
            "address": env.get("TEMPORAL_ADDRESS", cls.address),
            "namespace": env.get("TEMPORAL_NAMESPACE", cls.namespace),
            "tls": env.get("TEMPORAL_TLS", "").lower() in ("1", "true", "yes"),
            "api_key": env.get("TEMPORAL_API_KEY") or None,
        }
        for name in ("cert", "key", "ca"):
            v = env.get(f"TEMPORAL_TLS_{name.upper()}")
            if v:
                kw[f"tls_{name}"] = Path(v)
        kw.update({k: v for k, v in overrides.items() if v is not None and v is not False})
        return cls(**kw)  # type: ignore[arg-type]


def start_metrics(port: int, host: str = "0.0.0.0") -> tuple[Runtime, MetricsServer]:
    """A Temporal runtime exporting the SDK's metrics on a loopback port, and simjail's metrics
    server on `port`, which serves both. Connect the worker's client with this runtime."""
    from worker.metrics import MetricsServer, free_loopback_port

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


async def connect(opts: ConnectOptions | None = None, *, runtime: Runtime | None = None) -> Client:
    """A client with the pydantic data converter (both sides must use it)."""
    opts = opts or ConnectOptions.from_env()
    tls: bool | TLSConfig = False
    if opts.tls_cert or opts.tls_key or opts.tls_ca:
        tls = TLSConfig(
            client_cert=opts.tls_cert.read_bytes() if opts.tls_cert else None,
            client_private_key=opts.tls_key.read_bytes() if opts.tls_key else None,
            server_root_ca_cert=opts.tls_ca.read_bytes() if opts.tls_ca else None,
        )
    elif opts.tls or opts.api_key:
        tls = True  # an API key is only ever sent over TLS
    return await Client.connect(
        opts.address,
        namespace=opts.namespace,
        tls=tls,
        api_key=opts.api_key,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )


def default_slots() -> int:
    """One job per CPU this process may use: a job is CPU-bound in its jails."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def check_sandbox(settings: Settings, *, render: bool = True) -> Launcher:
    """The launcher every job will use, checked now: raises SandboxUnavailable or ProbeFailed
    (InfrastructureErrors with what to do) when nsjail cannot work here or, with `render`, when
    a physics jail cannot render offscreen (no EGL/llvmpipe, a policy that hides the drivers)."""
    from worker.pipeline import make_launcher
    from worker.sandbox.probe import probe

    launcher = make_launcher(settings)
    if render:
        seen = probe(launcher, "physics")
        log.info("worker.render_probe", launcher=launcher.name, wall_s=seen["wall_s"])
    return launcher


def prepare_worker(settings: Settings) -> Launcher:
    """Start-up of a worker process, before it takes any job: the sandbox is checked, what dead
    workers left on this machine is removed (first, so their jails stop as soon as possible),
    then a physics jail must render. Raises as check_sandbox does."""
    from worker.pipeline import make_launcher
    from worker.sandbox.probe import probe

    launcher = make_launcher(settings)
    cleanup_dead_workers(launcher)
    seen = probe(launcher, "physics")
    log.info("worker.render_probe", launcher=launcher.name, wall_s=seen["wall_s"])
    return launcher


def cleanup_dead_workers(launcher: Launcher) -> dict[str, object]:
    """Remove what workers that died without cleaning up (SIGKILL, OOM, a crash) left on this
    machine: their jails (killed through their per-job cgroups; nsjail runs in its own session
    and would otherwise live until the jail's time limit) and their job directories. Only
    leftovers whose owner pid is no longer alive are touched, so the jobs of other live workers
    on the same machine are safe. Call it before this process runs any job."""
    from worker.pipeline import remove_stale_job_dirs
    from worker.sandbox.nsjail import remove_stale_cgroups

    t = time.monotonic()
    groups = remove_stale_cgroups() if launcher.name == "nsjail" else []
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
    heartbeat_interval_s: float = 2.0,
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
    heartbeat_interval_s: float = 2.0,
    graceful_shutdown_s: float = 0.0,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run a worker until `stop` is set or SIGTERM/SIGINT arrives, then shut it down: running
    jobs get `graceful_shutdown_s` to finish, then are cancelled (jails killed and reaped).
    Without a `launcher`, `prepare_worker` makes one (cleaning up after dead workers); pass one
    from `prepare_worker` to fail before connecting."""
    if launcher is None:
        launcher = prepare_worker(settings)
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
