"""The Python API a controller uses to run simulations through Temporal, and the one way every
simjail process connects to a server.

    client = await connect()                        # envconfig + pydantic data converter
    handle = await submit(client, request)          # idempotent per request_id
    result = await handle.result()                  # or: result = await run(client, request)

Connection settings come from temporalio's environment configuration (the TEMPORAL_* variables
and the TOML profile of `temporal config`: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
TEMPORAL_API_KEY, TEMPORAL_TLS, TEMPORAL_TLS_CLIENT_CERT_PATH, TEMPORAL_TLS_CLIENT_KEY_PATH,
TEMPORAL_TLS_SERVER_CA_CERT_PATH, TEMPORAL_PROFILE, TEMPORAL_CONFIG_FILE, …), with the command
line's flags (`ConnectOptions`) applied on top.

The workflow id is `simulation-<request_id>`: submitting the same request again returns the
running (or completed) workflow instead of starting a second one; only a run that failed, was
cancelled or terminated may be started again under the same id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from common.models.simulation import SimulationRequest, SimulationResult
from worker.simulation.temporal.shared import TASK_QUEUE
from worker.simulation.temporal.workflows import SimulationWorkflow

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


async def connect(opts: ConnectOptions | None = None, *, runtime: Runtime | None = None) -> Client:
    """A client with the pydantic data converter (both sides must use it)."""
    cfg = (opts or ConnectOptions()).connect_config()
    return await Client.connect(**cfg, data_converter=pydantic_data_converter, runtime=runtime)


def workflow_id(request: SimulationRequest) -> str:
    return f"simulation-{request.request_id}"


async def submit(
    client: Client, request: SimulationRequest, *, task_queue: str = TASK_QUEUE
) -> WorkflowHandle[SimulationWorkflow, SimulationResult]:
    """Start SimulationWorkflow for `request`, or return the handle of the one already started
    for the same request id."""
    wid = workflow_id(request)
    try:
        return await client.start_workflow(
            SimulationWorkflow.run,
            request,
            id=wid,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        )
    except WorkflowAlreadyStartedError:  # it completed already: same request, same result
        return client.get_workflow_handle_for(SimulationWorkflow.run, wid)


async def run(
    client: Client, request: SimulationRequest, *, task_queue: str = TASK_QUEUE
) -> SimulationResult:
    """Submit and wait for the result. A FAIL is a result; a malformed request raises
    WorkflowFailureError whose cause is an ApplicationError of type `InvalidRequest`."""
    handle = await submit(client, request, task_queue=task_queue)
    return await handle.result()
