"""SimulationWorkflow: runs `run_simulation` once per request, on the workflow's own task queue.

Workflow code runs in Temporal's sandbox and is replayed: it imports only the contract models,
`worker.errors` and `shared` (pydantic and constants), and refers to the activity by name,
never to build123d, mujoco or the pipeline.

- input: the workflow takes its one argument raw and validates it itself, so a controller in
  any language that sends a malformed request (an unknown field, no design, "NaN", a zone
  with min ≥ max, something that is not JSON at all, no argument) gets the workflow FAILED at
  once with a non-retryable `InvalidRequest` naming the field, instead of a workflow task that
  fails to decode its input and is retried for ever. The one case `run` cannot see itself,
  more than one argument, is caught by the worker interceptor `RequireOneArgument` that
  `build_worker` installs.
- start_to_close: the request's build and physics wall budgets (or the worker defaults) plus a
  margin for start-up, geometry checks and uploads; the jails' own limits fire first.
- heartbeat_timeout: a worker that died mid-job is noticed within it, and it is what lets a
  cancellation reach the activity at all.
- retries: `shared.RETRY_POLICY` (infrastructure faults and dead workers; a malformed request
  is never retried, and a FAIL is a normal result). An attempt ended by a worker's shutdown
  (`WorkerShutdown`) is not a fault: the activity is scheduled again with a fresh attempt
  count, up to `MAXIMUM_RESCHEDULES` times.
- cancellation: WAIT_CANCELLATION_COMPLETED, so a cancelled workflow ends only once the activity
  reports that its jails are dead and its directory is gone.
- visibility: every ended workflow carries the search attributes `SimjailOutcome` (SUCCESS,
  FAIL, INVALID_REQUEST, INFRASTRUCTURE_ERROR, CANCELLED) and `SimjailFailure` (the kind of a
  FAIL), and a memo `reason`; `SimjailRequestId` is set as soon as the request validated. So
  `temporal workflow list --query 'SimjailOutcome="FAIL"'` finds the FAIL runs.
"""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from common.models.simulation import SimulationRequest, SimulationResult
    from worker.errors import MAX_REASON_CHARS, InvalidRequest
    from worker.simulation.temporal import shared

NO_ARGUMENT = RawValue(Payload())
"""What `run` sees when a client started the workflow without an argument."""


@workflow.defn(name=shared.WORKFLOW_NAME)
class SimulationWorkflow:
    @workflow.run
    async def run(self, request: RawValue = NO_ARGUMENT) -> SimulationResult:
        """One argument: a SimulationRequest as JSON (Python callers pass the model itself)."""
        req = validate(request)
        workflow.upsert_search_attributes([shared.REQUEST_ID.value_set(req.request_id)])
        try:
            result = await self._simulate(req)
        except asyncio.CancelledError:
            ended("CANCELLED", None, "the workflow was cancelled")
            raise
        except ActivityError as e:
            app = e.cause if isinstance(e.cause, ApplicationError) else None
            if isinstance(e.cause, CancelledError):  # the activity reported the cancellation
                ended("CANCELLED", None, "the workflow was cancelled")
            elif app is not None and app.type == shared.INVALID_REQUEST:
                ended("INVALID_REQUEST", None, app.message)
            else:
                ended("INFRASTRUCTURE_ERROR", None, str(app or e.cause or e))
            raise
        ended(result.outcome, result.failure, result.reason)
        return result

    async def _simulate(self, req: SimulationRequest) -> SimulationResult:
        reschedules = 0
        while True:
            try:
                result: SimulationResult = await workflow.execute_activity(
                    shared.ACTIVITY_NAME,
                    req,
                    # The queue the workflow was submitted to (`simulation` unless the caller
                    # chose another): the workers that run this workflow run its activity.
                    task_queue=workflow.info().task_queue,
                    result_type=SimulationResult,
                    start_to_close_timeout=shared.start_to_close(req),
                    heartbeat_timeout=shared.HEARTBEAT_TIMEOUT,
                    retry_policy=shared.RETRY_POLICY,
                    cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                )
                return result
            except ActivityError as e:
                shutdown = (
                    isinstance(e.cause, ApplicationError) and e.cause.type == shared.WORKER_SHUTDOWN
                )
                if not shutdown or reschedules >= shared.MAXIMUM_RESCHEDULES:
                    raise
                reschedules += 1
                workflow.logger.info(
                    "a worker shut down during the job; rescheduling it (%d)", reschedules
                )


def validate(raw: RawValue) -> SimulationRequest:
    """The request, or the workflow fails now: InvalidRequest naming the field."""
    if raw is NO_ARGUMENT:
        fail_invalid("invalid request: the workflow takes one argument, a SimulationRequest")
    try:
        data = workflow.payload_converter().from_payload(raw.payload)
    except Exception as e:  # not JSON, an unknown encoding: say so, do not retry
        fail_invalid(f"invalid request: the argument cannot be decoded ({type(e).__name__})")
    try:
        return SimulationRequest.model_validate(data)
    except ValidationError as e:
        fail_invalid(InvalidRequest.from_validation(e).message)


def ended(outcome: str, failure: str | None, reason: str) -> None:
    """Mark the workflow's end for visibility: search attributes and the memo's reason."""
    workflow.upsert_search_attributes(
        [
            shared.OUTCOME.value_set(outcome),
            shared.FAILURE.value_set(failure)
            if failure is not None
            else shared.FAILURE.value_unset(),
        ]
    )
    workflow.upsert_memo({shared.MEMO_REASON: reason[:MAX_REASON_CHARS]})


def fail_invalid(message: str) -> NoReturn:
    """Fail the workflow now, non-retryably, as InvalidRequest (marked for visibility). The
    validation error is not chained: it would quote the offending values."""
    ended("INVALID_REQUEST", None, message)
    raise ApplicationError(message, type=shared.INVALID_REQUEST, non_retryable=True) from None


class RequireOneArgument(Interceptor):
    """A worker interceptor (`build_worker` installs it) for what `run` cannot see itself: a
    SimulationWorkflow started with more than one argument fails at once as InvalidRequest,
    instead of failing its workflow task for ever (the SDK would call `run` with too many
    arguments)."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return OneArgumentInbound


class OneArgumentInbound(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        if workflow.info().workflow_type == shared.WORKFLOW_NAME and len(input.args) > 1:
            fail_invalid(
                "invalid request: the workflow takes one argument, a SimulationRequest "
                f"(got {len(input.args)})"
            )
        return await super().execute_workflow(input)
