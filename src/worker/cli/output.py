"""What the `simjail` command prints and how it exits: one module, used by every command and by
the demo.

Exit status: 0 SUCCESS, 1 FAIL, 2 invalid request or usage, 3 infrastructure error. With
`--json`, stdout carries exactly one JSON object; everything else goes to stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import ValidationError

from common.models.simulation import SimulationResult
from worker.errors import InvalidRequest
from worker.progress import Progress
from worker.text import printable

EXIT_SUCCESS, EXIT_FAIL, EXIT_INVALID, EXIT_INFRA = 0, 1, 2, 3


def error(message: str) -> None:
    """One line on stderr, prefixed `simjail: `."""
    print(f"simjail: {message}", file=sys.stderr)


def validation_message(e: ValidationError) -> str:
    """`invalid request: <field>: <what is wrong>; …` (the workflow says the same)."""
    return InvalidRequest.from_validation(e).message


class TerminalProgress:
    """One self-overwriting status line on stderr when it is a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        bar = "#" * int(p.fraction * 20)
        phase = printable(p.phase)[:24]
        sys.stderr.write(f"\r\x1b[2K{phase:>10} [{bar:<20}] t={p.sim_time_s:6.2f} s")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()


def print_result(result: SimulationResult) -> None:
    head = result.outcome if result.failure is None else f"{result.outcome} ({result.failure})"
    print(f"{head}: {result.reason}")
    m = result.metrics
    phases = ", ".join(f"{k} {v:.2f}s" for k, v in (m.get("phases_s") or {}).items())
    print(f"  wall time {m.get('wall_time_s', 0):.2f} s ({phases})")
    for name in ("video", "report", "poster", "mjcf", "logs"):
        url = result.artifact_urls.get(name)
        if url:
            print(f"  {name:<7} {url.removeprefix('file://')}")


def emit(result: SimulationResult, as_json: bool) -> int:
    """Print a result (one JSON object, or readable lines) and return its exit status."""
    if as_json:
        sys.stdout.write(result.model_dump_json() + "\n")
    else:
        print_result(result)
    return EXIT_SUCCESS if result.outcome == "SUCCESS" else EXIT_FAIL


def emit_loadtest(report: dict[str, Any], as_json: bool) -> None:
    """A load test's report: one JSON object, or a few readable lines."""
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
        return
    lat = report["latency_s"]
    print(
        f"{'PASSED' if report['ok'] else 'FAILED'}: {report['completed']}/{report['submitted']} "
        f"completed ({report['hostile']} hostile), lost {report['lost']}, duplicated "
        f"{report['duplicated']}, mismatches {report['mismatches']}, leaked {report['leaked']}"
    )
    print(
        f"  latency p50 {lat['p50']} s, p95 {lat['p95']} s, max {lat['max']} s; "
        f"{report['throughput_jobs_per_min']} jobs/min; wall {report['wall_s']} s"
    )
    for f in report["faults"]:
        print(f"  fault {f['kind']} at {f['at_s']} s: {f['detail']}")
    for w in report["workers_rss_mb"]:
        print(f"  worker {w['pid']}: RSS {w['before']} → {w['after']} MB")
    for key in ("lost_jobs", "duplicated_jobs", "mismatched_jobs"):
        for item in report[key]:
            print(f"  {key.removesuffix('_jobs')}: {json.dumps(item)}")
    for kind, items in report["leaks"].items():
        for item in items:
            print(f"  leaked {kind}: {printable(item)}")
    if report.get("dir"):
        print(f"  logs and artifacts: {report['dir']}")


def workflow_failure(e: BaseException) -> int:
    """Say why a workflow ended without a result; return the exit status for it."""
    from temporalio.exceptions import ApplicationError, CancelledError

    from worker.simulation.temporal.shared import INVALID_REQUEST

    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.type == INVALID_REQUEST:
            error(cause.message)
            return EXIT_INVALID
        if isinstance(cause, CancelledError):
            error("the workflow was cancelled")
            return EXIT_INFRA
        cause = cause.__cause__
    error(f"the workflow failed: {_chain(e)}")
    return EXIT_INFRA


def _chain(e: BaseException) -> str:
    parts = []
    cur: BaseException | None = e
    while cur is not None:
        parts.append(str(cur) or type(cur).__name__)
        cur = cur.__cause__
    return ": ".join(parts)
