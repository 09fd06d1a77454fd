"""What the workflow, the activity, the worker and every client agree on: names, error types,
timeouts and the retry policy. One place, imported by all of them (the workflow imports it
through Temporal's sandbox, so it holds no heavy import: pydantic models and constants only).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.common import RetryPolicy

from common.models.simulation import SimulationRequest
from worker.settings import JobLimits

TASK_QUEUE = "simulation"
WORKFLOW_NAME = "SimulationWorkflow"
ACTIVITY_NAME = "run_simulation"

INVALID_REQUEST = "InvalidRequest"
"""ApplicationError type of a malformed request; never retried."""
INFRASTRUCTURE_ERROR = "InfrastructureError"
"""ApplicationError type of a fault of the worker (store, sandbox, renderer); retried."""

HEARTBEAT_INTERVAL_S = 2.0
"""How often the activity heartbeats (also while a build is silent)."""
HEARTBEAT_TIMEOUT = timedelta(seconds=30)
"""A worker that died mid-job is noticed within this; it is also what lets a cancellation
reach the activity at all."""
MAXIMUM_ATTEMPTS = 3
MARGIN_S = 120.0
"""Start-up, supervisor grace periods, geometry checks, uploads to the store."""

WORKFLOW_BUDGETS = JobLimits()
"""The jail budgets the workflow's timeouts are derived from when a request sets no limits: the
worker defaults. A worker whose own budgets exceed them refuses to start (`check_budgets`)."""

RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=MAXIMUM_ATTEMPTS,
    non_retryable_error_types=[INVALID_REQUEST],
)


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
