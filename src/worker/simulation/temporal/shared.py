"""What the workflow, the activity, the worker and every client agree on: names, error types,
timeouts and the retry policy. One place, imported by all of them (the workflow imports it
through Temporal's sandbox, so it holds no heavy import: pydantic models and constants only).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.common import RetryPolicy, SearchAttributeKey

from common.models.simulation import SimulationRequest
from worker.settings import JobLimits

TASK_QUEUE = "simulation"
WORKFLOW_NAME = "SimulationWorkflow"
ACTIVITY_NAME = "run_simulation"

INVALID_REQUEST = "InvalidRequest"
"""ApplicationError type of a malformed request; never retried. Raised by the workflow itself
when its input does not validate, and by the activity for what only a worker can check."""
INFRASTRUCTURE_ERROR = "InfrastructureError"
"""ApplicationError type of a fault of the worker (store, sandbox, renderer); retried."""
WORKER_SHUTDOWN = "WorkerShutdown"
"""ApplicationError type of an attempt ended by its worker's shutdown (SIGTERM after the grace
period): not a fault. The workflow schedules the activity again with a fresh attempt count, so
rolling restarts never use up the attempts meant for faults."""

HEARTBEAT_INTERVAL_S = 2.0
"""How often the activity heartbeats (also while a build is silent)."""
HEARTBEAT_TIMEOUT = timedelta(seconds=30)
"""A worker that died mid-job is noticed within this; it is also what lets a cancellation
reach the activity at all."""
MARGIN_S = 180.0
"""Start-up, supervisor grace periods, geometry checks, and uploads to the store including
their retries through a store outage (`STORE_RETRY_S`)."""
STORE_RETRY_S = 60.0
"""How long one store operation keeps retrying (backoff 1, 2, 4, 8, 16, then 30 s) before the
attempt fails with an infrastructure error; part of MARGIN_S."""

WORKFLOW_BUDGETS = JobLimits()
"""The jail budgets the workflow's timeouts are derived from when a request sets no limits: the
worker defaults. A worker whose own budgets exceed them refuses to start (`check_budgets`)."""

MAXIMUM_ATTEMPTS = 10
"""Attempts of one scheduled activity (first one included). Only infrastructure faults and
dead workers use them: a FAIL is a result, a malformed request is never retried, and a worker
shutdown reschedules the activity instead (`MAXIMUM_RESCHEDULES`)."""
RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=MAXIMUM_ATTEMPTS,
    non_retryable_error_types=[INVALID_REQUEST, WORKER_SHUTDOWN],
)
"""Waits 2, 4, 8, 16, 32 s, then 60 s between attempts: about 5 minutes of faults (plus the
time the attempts themselves take) before the workflow fails."""
MAXIMUM_RESCHEDULES = 20
"""How many worker shutdowns one workflow rides out (each reschedules the activity)."""

DEFAULT_GRACEFUL_SHUTDOWN_S = 60.0
"""How long a worker that got SIGTERM lets its running jobs finish before it cancels them
(they are then rescheduled on another worker). A typical job (10 s simulated, rendered at
640×480) takes 10–30 s on two cores. Give the orchestrator's own grace period (Kubernetes'
terminationGracePeriodSeconds) a little more than this."""

CLIENT_OUTAGE_S = 300.0
"""How long `simjail submit --wait` (and `client.wait_result`) keeps waiting while the server
is unreachable before giving up."""

OUTCOME = SearchAttributeKey.for_keyword("SimjailOutcome")
"""Search attribute set on every ended workflow: SUCCESS, FAIL, INVALID_REQUEST,
INFRASTRUCTURE_ERROR or CANCELLED."""
FAILURE = SearchAttributeKey.for_keyword("SimjailFailure")
"""Search attribute: the FailureKind of a FAIL (unset otherwise)."""
REQUEST_ID = SearchAttributeKey.for_keyword("SimjailRequestId")
"""Search attribute: the request id, set as soon as the request validated."""
SEARCH_ATTRIBUTES = (OUTCOME, FAILURE, REQUEST_ID)
"""Every namespace that runs SimulationWorkflow needs these registered (Keyword): `simjail dev`
does it for its server, a production namespace once with `temporal operator search-attribute
create --namespace NS --name SimjailOutcome --name SimjailFailure --name SimjailRequestId --type
Keyword`; a worker refuses to start without them."""
MEMO_REASON = "reason"
"""Memo key: the result's reason (or the error's message) of an ended workflow."""


def start_to_close(request: SimulationRequest) -> timedelta:
    """How long one attempt may take: the build (design and environment build in parallel),
    then the physics, each under its wall budget, plus the margin."""
    lim = request.options.limits
    build = lim.build_wall_s if lim.build_wall_s is not None else WORKFLOW_BUDGETS.build_wall_s
    physics = lim.wall_s if lim.wall_s is not None else WORKFLOW_BUDGETS.physics_wall_s
    return timedelta(seconds=build + physics + MARGIN_S)


def check_budgets(limits: JobLimits) -> str | None:
    """Why a worker with these budgets would be cut off by the workflow's timeouts before its
    own jails' limits fire, or None when they fit."""
    over = []
    for name in ("build_wall_s", "physics_wall_s"):
        mine, theirs = getattr(limits, name), getattr(WORKFLOW_BUDGETS, name)
        if mine > theirs:
            over.append(f"{name} = {mine:g} s exceeds the workflow's {theirs:g} s")
    return "; ".join(over) or None


@dataclass(frozen=True)
class HeartbeatDetails:
    """What every heartbeat carries (small: a few dozen bytes). On a retried attempt Temporal
    hands previous details back as plain dicts; simjail does not resume from them."""

    phase: str
    sim_time_s: float
    fraction: float
    elapsed_s: float
