"""What the `simjail` command prints and how it exits: one module, used by every command and by
the demo.

Exit status: 0 SUCCESS, 1 FAIL, 2 invalid request or usage, 3 infrastructure error. With
`--json`, stdout carries exactly one JSON object; everything else goes to stderr.

Without `--json`, when stdout is a terminal, `run` shows a progress bar through the phases
(build, compile, simulate, render, store) on stderr and ends with a short coloured summary and
the artifact paths on stdout; when stdout is not a terminal, the progress is one plain line per
phase on stderr and the summary has no colour. Colour also stays off with `NO_COLOR` set or
`TERM=dumb`. Every string from a job (reasons, phase names) goes through `printable` first.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

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


PHASES = ("build", "compile", "simulate", "render", "store")
"""The phases of a job, in order, as the progress bar counts them."""
BAR_WIDTH = 28


def use_colour(stream: TextIO) -> bool:
    """Colour on a terminal, unless NO_COLOR is set (https://no-color.org) or TERM is dumb."""
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM", "") != "dumb"


def phase_index(phase: str) -> int:
    """Where a reported phase stands among PHASES (a jitter run is part of simulate)."""
    if phase.startswith("jitter"):
        return PHASES.index("simulate")
    return PHASES.index(phase) if phase in PHASES else 0


class TerminalProgress:
    """The progress of a job on stderr: a self-overwriting bar through PHASES when the output is
    a terminal (`bar`), one plain line per phase change otherwise, or nothing."""

    def __init__(self, mode: str, stream: TextIO | None = None) -> None:
        assert mode in ("bar", "lines", "off")
        self.mode = mode
        self.stream = stream or sys.stderr
        self._last = ""
        self._shown = False

    @classmethod
    def for_run(cls, as_json: bool) -> TerminalProgress:
        """What `simjail run` shows: a bar when stdout (and stderr) is a terminal, plain lines
        when stdout is not one; with --json the bar only where stderr is a terminal (as the
        JSON consumer's own terminal), never lines."""
        if as_json:
            return cls("bar" if sys.stderr.isatty() else "off")
        if sys.stdout.isatty() and sys.stderr.isatty():
            return cls("bar")
        return cls("lines")

    def __call__(self, p: Progress) -> None:
        phase = printable(p.phase)[:32]
        i = phase_index(p.phase)
        if self.mode == "lines":
            if phase != self._last:
                self.stream.write(f"[{i + 1}/{len(PHASES)}] {phase}\n")
                self.stream.flush()
        elif self.mode == "bar":
            done = (i + min(1.0, max(0.0, p.fraction))) / len(PHASES)
            n = int(done * BAR_WIDTH)
            bar = "\u2588" * n + "\u2591" * (BAR_WIDTH - n)
            t = f"  t = {p.sim_time_s:.2f} s" if PHASES[i] == "simulate" else ""
            colour = use_colour(self.stream)
            bar = f"\x1b[36m{bar}\x1b[0m" if colour else bar
            self.stream.write(f"\r\x1b[2K{bar} {i + 1}/{len(PHASES)} {phase}{t}")
            self.stream.flush()
            self._shown = True
        self._last = phase

    def done(self) -> None:
        if self.mode == "bar" and self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


ARTIFACTS_SHOWN = (
    ("report_html", "report"),
    ("report", "report.md"),
    ("poster", "poster"),
    ("contact_sheet", "contact"),
    ("video", "video"),
    ("plots", "plots"),
    ("last_frame", "last"),
    ("mjcf", "mjcf"),
    ("logs", "logs"),
)
"""The artifacts the summary lists, in this order, under these names."""


def print_result(result: SimulationResult, stream: TextIO | None = None) -> None:
    """The summary: the verdict line (coloured on a terminal), when it was decided and what, the
    times, and where each artifact is."""
    out = stream or sys.stdout
    colour = use_colour(out)

    def c(code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if colour else text

    head = result.outcome if result.failure is None else f"{result.outcome} ({result.failure})"
    ok = result.outcome == "SUCCESS"
    print(f"{c('1;32' if ok else '1;31', head)}: {printable(result.reason)}", file=out)
    m = result.metrics
    facts = []
    runs = m.get("runs") or []
    decisive = next((r for r in runs if r.get("failure")), runs[0] if runs else None)
    if isinstance(decisive, dict) and decisive.get("decided_at_s") is not None:
        facts.append(f"decided at t={_num(decisive['decided_at_s'])} s")
        if isinstance(decisive.get("culprits"), list) and decisive["culprits"]:
            who = printable(", ".join(str(x) for x in decisive["culprits"]))
            facts.append(("target " if ok else "culprit ") + who)
    if runs:  # the physics ran (a build that failed simulated nothing)
        facts.append(f"simulated {_num(m.get('sim_time_s'))} s")
    phases = ", ".join(
        f"{printable(str(k))} {_num(v)}" for k, v in (m.get("phases_s") or {}).items()
    )
    facts.append(f"wall {_num(m.get('wall_time_s', 0))} s ({phases})")
    print(c("2", "  " + " · ".join(facts)), file=out)
    for key, name in ARTIFACTS_SHOWN:
        url = result.artifact_urls.get(key)
        if url:
            print(f"  {c('1', f'{name:<9}')} {printable(url.removeprefix('file://'))}", file=out)


def _num(v: object) -> str:
    """A metric as `1.23`; anything that is not a finite number as `?`."""
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v or abs(v) == float("inf"):
        return "?"
    return f"{v:.2f}"


def emit(result: SimulationResult, as_json: bool) -> int:
    """Print a result (one JSON object, or the summary) and return its exit status."""
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
