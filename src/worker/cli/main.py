"""`simjail`: parse, dispatch to a command, map every error to its exit status.

The one place where the command's exceptions become exit statuses: InvalidRequest → 2,
InfrastructureError → 3, anything else (a bug of ours) → 3 with the traceback in the log, never
1, which means FAIL.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import structlog

from worker import logs
from worker.cli import commands, output
from worker.cli.output import EXIT_INFRA, EXIT_INVALID
from worker.cli.parser import parser
from worker.errors import InfrastructureError, InvalidRequest

COMMANDS = {
    "run": commands.cmd_run,
    "submit": commands.cmd_submit,
    "worker": commands.cmd_worker,
    "dev": commands.cmd_dev,
    "loadtest": commands.cmd_loadtest,
    "policy": commands.cmd_policy,
    "bench": commands.cmd_bench,
}
TEMPORAL_COMMANDS = ("submit", "worker", "dev", "loadtest")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.configure(json=True if getattr(args, "json", False) else None)
    try:
        return COMMANDS[args.command](args)
    except InvalidRequest as e:
        output.error(e.message)
        return EXIT_INVALID
    except InfrastructureError as e:
        output.error(f"infrastructure error: {e.message}")
        return EXIT_INFRA
    except Exception:  # a bug of ours: never let it look like a FAIL (exit 1)
        structlog.get_logger("simjail.cli").exception("internal.error")
        output.error("internal error (see the log above); please report it")
        return EXIT_INFRA


def entry(argv: list[str] | None = None) -> NoReturn:
    """The console script. After a Temporal command the process ends without interpreter
    teardown: the SDK's Rust runtime threads can crash a finalizing interpreter (SIGSEGV or
    SIGABRT after the work is done, temporalio/sdk-python#300), which would replace the
    documented exit status with 139."""
    argv = sys.argv[1:] if argv is None else argv
    code = main(argv)
    if argv and argv[0] in TEMPORAL_COMMANDS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)
