"""The Python API a controller uses to run simulations through Temporal, and the one way every
simjail process connects to a server.

    client = await connect()                        # envconfig + pydantic data converter
    handle = await submit(client, request)          # idempotent per request_id
    result = await handle.result()                  # or: result = await run(client, request)
    result = await wait_result(handle)              # the same, riding out server outages

Connection settings come from temporalio's environment configuration (the TEMPORAL_* variables
and the TOML profile of `temporal config`: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
TEMPORAL_API_KEY, TEMPORAL_TLS, TEMPORAL_TLS_CLIENT_CERT_PATH, TEMPORAL_TLS_CLIENT_KEY_PATH,
TEMPORAL_TLS_SERVER_CA_CERT_PATH, TEMPORAL_PROFILE, TEMPORAL_CONFIG_FILE, …), with the command
line's flags (`ConnectOptions`) applied on top.

Every connection uses a runtime (`make_runtime`) that forwards the SDK core's own log lines to
Python's logging, so they come out as JSON on stderr with the rest (`worker.logs`), and
`through_outages` / `wait_result` ride out a server that is down or restarting, for a bounded
time.

The workflow id is `simulation-<request_id>`: submitting the same request again returns the
running (or completed) workflow instead of starting a second one; only a run that failed, was
cancelled or terminated may be started again under the same id.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from common.models.simulation import SimulationRequest, SimulationResult
from worker.errors import InfrastructureError
from worker.simulation.temporal.shared import CLIENT_OUTAGE_S, TASK_QUEUE, WORKFLOW_NAME

log = structlog.get_logger("simjail.client")

DEFAULT_ADDRESS = "localhost:7233"
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class ConnectOptions:
    """What the command line says about the connection; unset fields leave the environment
    configuration's values (or the defaults) in force."""

    address: str | None = None
    namespace: str | None = None
    profile: str | None = None
    tls: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    api_key: str | None = field(default=None, repr=False)

    def connect_config(self) -> dict[str, Any]:
        """Keyword arguments for Client.connect: envconfig's profile, then these flags."""
        cfg: dict[str, Any] = dict(ClientConfig.load_client_connect_config(profile=self.profile))
        if self.address:
            cfg["target_host"] = self.address
        cfg.setdefault("target_host", DEFAULT_ADDRESS)
        if self.namespace:
            cfg["namespace"] = self.namespace
        cfg.setdefault("namespace", DEFAULT_NAMESPACE)
        if self.api_key:
            cfg["api_key"] = self.api_key
        if self.tls_cert or self.tls_key or self.tls_ca:
            cfg["tls"] = TLSConfig(
                client_cert=self.tls_cert.read_bytes() if self.tls_cert else None,
                client_private_key=self.tls_key.read_bytes() if self.tls_key else None,
                server_root_ca_cert=self.tls_ca.read_bytes() if self.tls_ca else None,
            )
        elif self.tls or (cfg.get("api_key") and not cfg.get("tls")):
            cfg["tls"] = True  # an API key is only ever sent over TLS
        return cfg


def make_runtime(*, prometheus_bind: str | None = None) -> Runtime:
    """A Temporal runtime whose own (Rust core) log lines are forwarded to Python's logging,
    logger `temporalio.core`, which `worker.logs.configure` renders as JSON on stderr: without
    it the core writes coloured text to stdout. With `prometheus_bind` (HOST:PORT) it also
    serves the SDK's metrics there."""
    return Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(
                filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
            ),
            metrics=PrometheusConfig(bind_address=prometheus_bind, durations_as_seconds=True)
            if prometheus_bind
            else None,
        )
    )


@functools.cache
def process_runtime() -> Runtime:
    """The runtime `connect` uses when given none: one per process, made on first use."""
    return make_runtime()


async def connect(opts: ConnectOptions | None = None, *, runtime: Runtime | None = None) -> Client:
    """A client with the pydantic data converter (both sides must use it)."""
    cfg = (opts or ConnectOptions()).connect_config()
    return await Client.connect(
        **cfg, data_converter=pydantic_data_converter, runtime=runtime or process_runtime()
    )


async def connect_local(address: str, *, runtime: Runtime | None = None) -> Client:
    """A client of a server simjail started itself (`DevServer`) on namespace `default`: no
    environment configuration applies (an operator's TEMPORAL_API_KEY or TLS settings are for
    their own servers, not for this one)."""
    return await Client.connect(
        address,
        namespace=DEFAULT_NAMESPACE,
        data_converter=pydantic_data_converter,
        runtime=runtime or process_runtime(),
    )


def workflow_id(request: SimulationRequest) -> str:
    return f"simulation-{request.request_id}"


async def submit(
    client: Client, request: SimulationRequest, *, task_queue: str = TASK_QUEUE
) -> WorkflowHandle[Any, SimulationResult]:
    """Start SimulationWorkflow for `request`, or return the handle of the one already started
    for the same request id. (The workflow is started by name: it takes its argument raw and
    validates it itself, whichever language the client is written in.)"""
    wid = workflow_id(request)
    try:
        return await client.start_workflow(
            WORKFLOW_NAME,
            request,
            id=wid,
            task_queue=task_queue,
            result_type=SimulationResult,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        )
    except WorkflowAlreadyStartedError:  # it completed already: same request, same result
        return client.get_workflow_handle(wid, result_type=SimulationResult)


async def run(
    client: Client, request: SimulationRequest, *, task_queue: str = TASK_QUEUE
) -> SimulationResult:
    """Submit and wait for the result. A FAIL is a result; a malformed request raises
    WorkflowFailureError whose cause is an ApplicationError of type `InvalidRequest`."""
    handle = await submit(client, request, task_queue=task_queue)
    return await handle.result()


# --- Riding out an outage of the server ---------------------------------------------------------

OUTAGE_STATUSES = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.UNKNOWN,
        RPCStatusCode.ABORTED,
    }
)
"""gRPC statuses of a server that is down, restarting or overloaded (a transport error shows as
UNAVAILABLE, a connection cut mid-call as UNKNOWN or CANCELLED)."""


class ServerUnreachable(InfrastructureError):
    """The Temporal server stayed unreachable longer than the caller was willing to wait."""

    cause = "server"


UNREACHABLE = (
    "tcp connect error",
    "connection refused",
    "connection reset",
    "timed out",
    "dns error",
)
"""What the SDK's bridge says (in a RuntimeError) when a connection cannot be made at all; a
TLS or credential problem says something else and is not waited for."""


def is_outage(e: BaseException) -> bool:
    """An error that says the server is unreachable now, not that the call was wrong."""
    if isinstance(e, RPCError):
        return e.status in OUTAGE_STATUSES
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(m in text for m in UNREACHABLE)


async def through_outages[T](
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    outage_s: float = CLIENT_OUTAGE_S,
    probe: Callable[[], Awaitable[object]] | None = None,
) -> T:
    """`call()`, again and again while the server is unreachable, for at most `outage_s` per
    outage (backoff 0.5 s doubling to 5 s). After a failed call `probe()` (default: `call`
    itself) is tried until the server answers, then `call` runs again. Raises
    ServerUnreachable naming `what` when an outage lasts longer; any other error at once."""
    while True:
        try:
            return await call()
        except Exception as e:
            if not is_outage(e):
                raise
            first = e
        down_since = time.monotonic()
        delay = 0.5
        log.warning("temporal.unreachable", waiting_for=what, error=_one_line(first))
        while True:
            if time.monotonic() - down_since > outage_s:
                raise ServerUnreachable(
                    f"the Temporal server stayed unreachable for more than {outage_s:g} s while "
                    f"{what}: {_one_line(first)}"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            try:
                if probe is None:
                    return await call()
                await probe()
                break
            except Exception as e:
                if not is_outage(e):
                    raise
        log.info(
            "temporal.reachable", waiting_for=what, down_s=round(time.monotonic() - down_since, 1)
        )


async def wait_result(
    handle: WorkflowHandle[Any, SimulationResult], *, outage_s: float = CLIENT_OUTAGE_S
) -> SimulationResult:
    """The workflow's result, waiting through outages of the server of up to `outage_s` each
    (WorkflowFailureError for a workflow that failed, ServerUnreachable after a longer one)."""
    return await through_outages(
        handle.result, what=f"waiting for {handle.id}", outage_s=outage_s, probe=handle.describe
    )


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__
