"""structlog set-up: JSON lines on stderr (or a readable console format on a terminal).

Context (request id, workflow id, attempt, phase) is bound by the callers with
`structlog.contextvars.bind_contextvars` or `log.bind`, so every line carries it.

Everything else that logs in a simjail process goes the same way: Python's `logging` (the
Temporal SDK's `temporalio.*` loggers, boto3, …), `warnings`, and the Temporal SDK's Rust core,
whose lines the runtime of `worker.simulation.temporal.client.make_runtime` forwards to the
`temporalio.core` logger. Each becomes one line rendered by the same processors, with its
traceback (if any) inside the JSON object, never as loose lines; nothing is written to stdout,
which belongs to the command's output (`--json`: exactly one object).
"""

from __future__ import annotations

import logging
import sys

import structlog

LIBRARY_LEVEL = logging.WARNING
"""Python loggers other than the Temporal SDK's log from this level (boto3 is chatty)."""


def configure(*, json: bool | None = None, level: str = "INFO") -> None:
    use_json = (not sys.stderr.isatty()) if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamper,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(LIBRARY_LEVEL)
    logging.getLogger("temporalio").setLevel(logging.getLevelName(level))
    logging.captureWarnings(True)
