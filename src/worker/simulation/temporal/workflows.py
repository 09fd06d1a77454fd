"""SimulationWorkflow: runs `run_simulation` once per request, on the workflow's own task queue.

Workflow code runs in Temporal's sandbox and is replayed: it imports only the contract models
and `shared` (pydantic and constants), and refers to the activity by name, never to build123d,
mujoco or the pipeline.

- start_to_close: the request's build and physics wall budgets (or the worker defaults) plus a
  margin for start-up, geometry checks and uploads; the jails' own limits fire first.
- heartbeat_timeout: a worker that died mid-job is noticed within it, and it is what lets a
  cancellation reach the activity at all.
- retries: at most 3 attempts; a malformed request (`InvalidRequest`) is never retried. A FAIL is
  a normal result, so it is never retried either.
- cancellation: WAIT_CANCELLATION_COMPLETED, so a cancelled workflow ends only once the activity
  reports that its jails are dead and its directory is gone.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from common.models.simulation import SimulationRequest, SimulationResult
    from worker.simulation.temporal import shared


@workflow.defn(name=shared.WORKFLOW_NAME)
class SimulationWorkflow:
    @workflow.run
    async def run(self, request: SimulationRequest) -> SimulationResult:
        result: SimulationResult = await workflow.execute_activity(
            shared.ACTIVITY_NAME,
            request,
            # The queue the workflow was submitted to (`simulation` unless the caller chose
            # another): the workers that run this workflow run its activity.
            task_queue=workflow.info().task_queue,
            result_type=SimulationResult,
            start_to_close_timeout=shared.start_to_close(request),
            heartbeat_timeout=shared.HEARTBEAT_TIMEOUT,
            retry_policy=shared.RETRY_POLICY,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        return result
