"""The `run_simulation` Temporal activity: one SimulationRequest through the sandboxed pipeline.

The pipeline (worker.pipeline.run_request) runs in a thread of this worker process; the jails it
starts are separate processes in their own sessions, so a crash of the submitted code never
touches the worker. The activity itself stays on the event loop, where it

- first looks in the store for the result a finished attempt of the same execution left
  (result.json under `<request_id>/<workflow run id>/`, written last): an attempt whose
  completion never reached the server (the server was unreachable as the job finished) or
  whose worker died after storing is not run again, its stored result is returned;
- heartbeats every `heartbeat_interval_s` with the latest progress (phase, sim time, fraction),
  also while a build is silent, so a dead worker is noticed within the heartbeat timeout and a
  cancellation reaches the job at all (Temporal delivers it only through heartbeats);
- stores through a RetryingStore, so a store outage of up to `STORE_RETRY_S` costs time, not
  the job;
- on cancellation (workflow cancel, heartbeat timeout, worker shutdown) sets the job's cancel
  event, waits until the pipeline thread has killed and reaped every jail and removed its job
  directory, and re-raises the cancellation: a cancelled job is never a FAIL. A cancellation by
  the worker's own shutdown becomes a `WorkerShutdown` error instead, which the workflow
  answers by scheduling the job again (not counted against the attempts meant for faults);
- maps the pipeline's outcomes, in this one place: a FAIL result is returned (the user's
  fault, no retry), InvalidRequest becomes a non-retryable ApplicationError naming the field,
  InfrastructureError a retryable one (counted in the metrics by its cause).

The result carries URLs (and lasting URIs) only; artifacts go to the store under
`<request_id>/<workflow run id>/`, so executions never overwrite each other while a retried
attempt overwrites its own files.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from common.models.simulation import SimulationRequest, SimulationResult
from worker import metrics
from worker.errors import InfrastructureError, InvalidRequest, JobCancelled
from worker.progress import Progress
from worker.sandbox.launcher import Launcher
from worker.settings import Settings
from worker.simulation.temporal.shared import (
    ACTIVITY_NAME,
    HEARTBEAT_INTERVAL_S,
    INFRASTRUCTURE_ERROR,
    INVALID_REQUEST,
    STORE_RETRY_S,
    WORKER_SHUTDOWN,
    HeartbeatDetails,
)
from worker.storage.base import ArtifactStore
from worker.storage.retry import RetryingStore

log = structlog.get_logger("simjail.activity")


class SimulationActivities:
    """Holds what every job of this worker shares: the policy, the store, the (checked)
    launcher. Register `run_simulation` (the bound method) with a Worker."""

    def __init__(
        self,
        settings: Settings,
        store: ArtifactStore,
        *,
        launcher: Launcher | None = None,
        heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
        store_retry_s: float = STORE_RETRY_S,
    ) -> None:
        self.settings = settings
        self.store = store
        self.launcher = launcher
        self.heartbeat_interval_s = heartbeat_interval_s
        self.store_retry_s = store_retry_s

    @activity.defn(name=ACTIVITY_NAME)
    async def run_simulation(self, request: SimulationRequest) -> SimulationResult:
        info = activity.info()
        # Bound in this activity's own task context: every line it logs, and every line of the
        # pipeline thread (asyncio.to_thread copies the context, the pipeline copies it again
        # into its build threads), carries the job's ids; the pipeline rebinds `phase`.
        with structlog.contextvars.bound_contextvars(
            request_id=request.request_id,
            workflow_id=info.workflow_id,
            run_id=info.workflow_run_id,
            attempt=info.attempt,
            phase="activity",
        ):
            return await self._run(request, info.workflow_run_id or info.activity_id)

    async def _run(self, request: SimulationRequest, execution: str) -> SimulationResult:
        from worker.job.publish import artifact_prefix

        started = time.monotonic()
        latest = Progress("queued", 0.0, 0.0)
        lock = threading.Lock()
        cancel = threading.Event()
        store = RetryingStore(self.store, budget_s=self.store_retry_s, cancel=cancel)
        prefix = artifact_prefix(request.request_id, execution)
        reused = False

        def on_progress(p: Progress) -> None:  # called from the pipeline's threads
            nonlocal latest
            with lock:
                latest = p

        def details() -> HeartbeatDetails:
            with lock:
                p = latest
            return HeartbeatDetails(
                phase=p.phase,
                sim_time_s=round(p.sim_time_s, 4),
                fraction=round(p.fraction, 4),
                elapsed_s=round(time.monotonic() - started, 3),
            )

        def work() -> SimulationResult:
            # Heavy imports stay out of workflow code.
            from worker.job.publish import stored_result
            from worker.pipeline import run_request

            nonlocal reused
            previous = stored_result(store, prefix)
            if previous is not None:
                reused = True
                return previous
            return run_request(
                request,
                self.settings,
                store,
                launcher=self.launcher,
                on_progress=on_progress,
                cancel=cancel,
                prefix=prefix,
            )

        log.info("activity.start", prefix=prefix)
        activity.heartbeat(details())
        job = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            while True:
                done, _ = await asyncio.wait({job}, timeout=self.heartbeat_interval_s)
                if done:
                    break
                activity.heartbeat(details())
            result = job.result()
        except asyncio.CancelledError:
            # Cancelled (by the workflow, a heartbeat timeout or the worker's shutdown): end the
            # jails, wait until the pipeline thread saw them reaped and removed its directory,
            # then let the cancellation through. The wait itself must not be cancelled again.
            cancel.set()
            log.info("activity.cancelling", **_as_dict(details()))
            with contextlib.suppress(BaseException):
                await asyncio.shield(job)
            wall_s = round(time.monotonic() - started, 3)
            why = activity.cancellation_details()
            if why is not None and why.worker_shutdown and not why.cancel_requested:
                # Not the workflow's wish: the job is scheduled again, on another worker.
                log.info("activity.worker_shutdown", wall_s=wall_s)
                metrics.job_done("worker_shutdown", None)
                raise ApplicationError(
                    "the worker shut down before the job finished; the job runs again",
                    type=WORKER_SHUTDOWN,
                    category=ApplicationErrorCategory.BENIGN,
                ) from None
            log.info("activity.cancelled", wall_s=wall_s)
            metrics.job_done("cancelled", None)
            raise
        except JobCancelled:
            # Only we set the event, and only on a cancellation handled above.
            raise asyncio.CancelledError() from None
        except InvalidRequest as e:
            log.warning("activity.invalid_request", error=e.message)
            metrics.job_done("invalid_request", None)
            msg = e.message
            raise ApplicationError(
                msg if msg.startswith("invalid request") else f"invalid request: {msg}",
                type=INVALID_REQUEST,
                non_retryable=True,
                category=ApplicationErrorCategory.BENIGN,
            ) from None
        except InfrastructureError as e:
            log.error("activity.infrastructure_error", cause=e.cause, error=e.message)
            metrics.job_done("infrastructure_error", None)
            if e.cause != "store":  # the store counts each of its failed tries itself
                metrics.infrastructure_error(e.cause)
            raise ApplicationError(e.message, type=INFRASTRUCTURE_ERROR) from None
        wall_s = round(time.monotonic() - started, 3)
        if reused:
            log.info(
                "activity.reused_result",
                outcome=result.outcome,
                failure=result.failure,
                wall_s=wall_s,
            )
            return result
        log.info("activity.done", outcome=result.outcome, failure=result.failure, wall_s=wall_s)
        metrics.job_done(result.outcome, result.failure)
        metrics.phases(result.metrics.get("phases_s") or {})
        return result


def _as_dict(d: HeartbeatDetails) -> dict[str, object]:
    return {"phase": d.phase, "sim_time_s": d.sim_time_s, "fraction": d.fraction}
