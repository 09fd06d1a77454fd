"""Temporal worker start-up (a seed path other services import; the code lives in
`worker.simulation.temporal`): `python -m worker.main` runs a worker with the settings from the
environment, exactly as `simjail worker` does without flags."""

from __future__ import annotations

from worker.simulation.temporal.client import ConnectOptions, connect
from worker.simulation.temporal.worker import (
    build_worker,
    cleanup_dead_workers,
    default_slots,
    prepare_worker,
    run_worker,
    start_metrics,
)

__all__ = [
    "ConnectOptions",
    "build_worker",
    "cleanup_dead_workers",
    "connect",
    "default_slots",
    "main",
    "prepare_worker",
    "run_worker",
    "start_metrics",
]


def main() -> None:
    from worker.cli.main import entry

    entry(["worker"])


if __name__ == "__main__":
    main()
