"""SimulationWorkflow: runs `run_simulation` once per request, on task queue `simulation` (the
workflow's own queue).

Workflow code runs in Temporal's sandbox and is replayed: it imports only the contract models
(pydantic) and refers to the activity by name, never to build123d, mujoco or the pipeline.

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

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from common.models.simulation import SimulationRequest, SimulationResult

TASK_QUEUE = "simulation"
ACTIVITY_NAME = "run_simulation"
INVALID_REQUEST = "InvalidRequest"

DEFAULT_BUILD_WALL_S = 120.0
"""Settings.build_wall_s's default: the bound when the request sets no build limit."""
DEFAULT_PHYSICS_WALL_S = 600.0
"""Settings.physics_wall_s's default: the bound when the request sets no wall limit."""
MARGIN_S = 120.0
"""Start-up, supervisor grace periods, geometry checks, uploads to the store."""
HEARTBEAT_TIMEOUT = timedelta(seconds=30)
MAXIMUM_ATTEMPTS = 3


def start_to_close(request: SimulationRequest) -> timedelta:
    """How long one attempt may take: the build (design and environment build in parallel),
    then the physics, each under its wall budget, plus the margin."""
    lim = request.options.limits
    build = lim.build_wall_s if lim.build_wall_s is not None else DEFAULT_BUILD_WALL_S
    physics = lim.wall_s if lim.wall_s is not None else DEFAULT_PHYSICS_WALL_S
    return timedelta(seconds=build + physics + MARGIN_S)


RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=MAXIMUM_ATTEMPTS,
    non_retryable_error_types=[INVALID_REQUEST],
)


@workflow.defn(name="SimulationWorkflow")
class SimulationWorkflow:
    @workflow.run
    async def run(self, request: SimulationRequest) -> SimulationResult:
        result: SimulationResult = await workflow.execute_activity(
            ACTIVITY_NAME,
            request,
            # The queue the workflow was submitted to (`simulation` unless the caller chose
            # another): the workers that run this workflow run its activity.
            task_queue=workflow.info().task_queue,
            result_type=SimulationResult,
            start_to_close_timeout=start_to_close(request),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=RETRY_POLICY,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        return result
