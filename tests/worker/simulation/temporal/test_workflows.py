"""SimulationWorkflow against stub activities (as samples-python tests a workflow): its retry,
error and cancellation policy, in seconds, on the real dev server, without any sandbox."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.worker import Worker

from common.models.simulation import FailureKind, SimulationRequest, SimulationResult
from worker.simulation.temporal import client as simclient
from worker.simulation.temporal.shared import (
    ACTIVITY_NAME,
    INFRASTRUCTURE_ERROR,
    INVALID_REQUEST,
    MAXIMUM_ATTEMPTS,
)
from worker.simulation.temporal.workflows import SimulationWorkflow

Stub = Callable[[SimulationRequest], Awaitable[SimulationResult]]


def request() -> SimulationRequest:
    return SimulationRequest.model_validate(
        {"request_id": f"stub-{uuid.uuid4().hex[:8]}", "design": {"code": "result = None"}}
    )


def result(outcome: str, failure: FailureKind | None) -> SimulationResult:
    return SimulationResult(outcome=outcome, reason="from the stub", failure=failure)  # type: ignore[arg-type]


async def run_with(server: Any, stub: Stub, go: Callable[[Any], Awaitable[Any]]) -> Any:
    """A worker on a fresh queue with SimulationWorkflow and `stub` as run_simulation."""
    queue = f"stub-{uuid.uuid4().hex[:8]}"
    async with Worker(
        server.client,
        task_queue=queue,
        workflows=[SimulationWorkflow],
        activities=[activity.defn(name=ACTIVITY_NAME)(stub)],
        max_heartbeat_throttle_interval=timedelta(milliseconds=200),
        default_heartbeat_throttle_interval=timedelta(milliseconds=200),
    ):
        handle = await simclient.submit(server.client, request(), task_queue=queue)
        return await go(handle)


async def attempts_started(handle: Any) -> list[int]:
    return [
        e.activity_task_started_event_attributes.attempt
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]


def test_a_fail_result_is_returned_after_one_attempt(temporal_server: Any) -> None:
    calls: list[int] = []

    async def stub(req: SimulationRequest) -> SimulationResult:
        calls.append(activity.info().attempt)
        return result("FAIL", FailureKind.USER_CODE_ERROR)

    async def go(handle: Any) -> tuple[SimulationResult, list[int]]:
        return await handle.result(), await attempts_started(handle)

    got, started = temporal_server.run(run_with(temporal_server, stub, go))
    assert got.outcome == "FAIL" and got.failure == FailureKind.USER_CODE_ERROR
    assert calls == [1]
    assert started == [1]


def test_an_invalid_request_is_not_retried(temporal_server: Any) -> None:
    """Retryable as far as the error itself says: the workflow's policy names the type."""
    calls: list[int] = []

    async def stub(req: SimulationRequest) -> SimulationResult:
        calls.append(activity.info().attempt)
        raise ApplicationError("invalid request: options.limits.wall_s", type=INVALID_REQUEST)

    async def go(handle: Any) -> BaseException:
        with pytest.raises(WorkflowFailureError) as e:
            await handle.result()
        return e.value

    err = temporal_server.run(run_with(temporal_server, stub, go))
    assert calls == [1]
    assert isinstance(err.cause, ActivityError)
    assert isinstance(err.cause.cause, ApplicationError)
    assert err.cause.cause.type == INVALID_REQUEST


def test_an_infrastructure_error_is_retried(temporal_server: Any) -> None:
    calls: list[int] = []

    async def stub(req: SimulationRequest) -> SimulationResult:
        calls.append(activity.info().attempt)
        if activity.info().attempt < MAXIMUM_ATTEMPTS:
            raise ApplicationError("the store is down", type=INFRASTRUCTURE_ERROR)
        return result("SUCCESS", None)

    async def go(handle: Any) -> SimulationResult:
        r: SimulationResult = await handle.result()
        return r

    got = temporal_server.run(run_with(temporal_server, stub, go))
    assert got.outcome == "SUCCESS"
    assert calls == list(range(1, MAXIMUM_ATTEMPTS + 1))


def test_infrastructure_errors_give_up_after_the_last_attempt(temporal_server: Any) -> None:
    calls: list[int] = []

    async def stub(req: SimulationRequest) -> SimulationResult:
        calls.append(activity.info().attempt)
        raise ApplicationError("the store is down", type=INFRASTRUCTURE_ERROR)

    async def go(handle: Any) -> BaseException:
        with pytest.raises(WorkflowFailureError) as e:
            await handle.result()
        return e.value

    err = temporal_server.run(run_with(temporal_server, stub, go))
    assert calls == list(range(1, MAXIMUM_ATTEMPTS + 1))
    assert isinstance(err.cause, ActivityError)
    assert err.cause.cause.type == INFRASTRUCTURE_ERROR


def test_cancelling_while_the_activity_heartbeats_ends_canceled(temporal_server: Any) -> None:
    """The cancellation reaches the heartbeating activity, which ends (cleaning up, as the real
    one kills its jails) before the workflow is CANCELED."""
    started = asyncio.Event()
    cleaned_up: list[bool] = []

    async def stub(req: SimulationRequest) -> SimulationResult:
        try:
            while True:
                activity.heartbeat({"phase": "simulate"})
                started.set()
                await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)  # the real activity waits for its jails to be reaped
            cleaned_up.append(True)
            raise

    async def go(handle: Any) -> tuple[BaseException, Any]:
        await asyncio.wait_for(started.wait(), 30)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as e:
            await handle.result()
        return e.value, (await handle.describe()).status

    err, status = temporal_server.run(run_with(temporal_server, stub, go))
    assert isinstance(err.cause, CancelledError)
    assert status == WorkflowExecutionStatus.CANCELED
    assert cleaned_up == [True]  # WAIT_CANCELLATION_COMPLETED: the workflow waited for it
