"""The Python API a controller uses to run simulations through Temporal.

    client = await worker.main.connect()            # pydantic data converter
    handle = await submit(client, request)          # idempotent per request_id
    result = await handle.result()                  # or: result = await run(client, request)

The workflow id is `simulation-<request_id>`: submitting the same request again returns the
running (or completed) workflow instead of starting a second one; only a run that failed, was
cancelled or terminated may be started again under the same id.
"""

from __future__ import annotations

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from common.models.simulation import SimulationRequest, SimulationResult
from worker.simulation.temporal.workflows import TASK_QUEUE, SimulationWorkflow


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
