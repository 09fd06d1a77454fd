"""Prometheus metrics of a worker: simjail's own and the Temporal SDK's, on one HTTP port.

`simjail worker --metrics-port N [--metrics-host HOST]` (env SIMJAIL_METRICS_PORT,
SIMJAIL_METRICS_HOST; off by default, loopback 127.0.0.1 unless a host is given: use 0.0.0.0
in a container that Prometheus scrapes from outside) serves `http://HOST:N/metrics` with

- `simjail_jobs_total{outcome, failure}`: jobs this worker finished; outcome is SUCCESS, FAIL,
  cancelled, invalid_request or infrastructure_error, failure the FailureKind of a FAIL (else "");
- `simjail_phase_seconds{phase}`: histogram of each job's phase durations (build, compile,
  simulate, render, store);
- `simjail_jail_start_seconds{jail}`: histogram of the time from starting nsjail to nsjail
  executing the jailed program (namespaces, mounts, cgroups and seccomp set up);
- `simjail_active_jails{jail}`: jails running now;
- `simjail_build_starts_total{path}`: build jails started warm (forked from the zygote) or
  cold (a jail of their own: the zygote is off, not ready, or broken: `cold_fallback`);
- `simjail_env_cache_total{result}`: environments read from the cache (`hit`) or built (`miss`);
- `simjail_infrastructure_errors_total{cause}`: infrastructure faults met, by cause: `store`
  (each failed try of a store operation, also one a retry then recovered), `sandbox` (a jail
  that could not start), `render` (the physics jail could not render), `worker` (another
  fault of the worker's own), `server` (each error the Temporal SDK logged about reaching its
  server: failed polls, heartbeats or completions);
- everything the Temporal SDK's runtime exports (`temporal_*`: polls, task latencies, slots…).
  The SDK serves those on a loopback port of its own; this server appends them to every scrape.

The counters live in this module's registry and are updated whether or not they are served.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)

JOBS = Counter(
    "simjail_jobs",
    "Jobs this worker finished, by outcome and failure kind.",
    ["outcome", "failure"],
    registry=REGISTRY,
)
PHASE_SECONDS = Histogram(
    "simjail_phase_seconds",
    "Duration of each phase of a job.",
    ["phase"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)
JAIL_START_SECONDS = Histogram(
    "simjail_jail_start_seconds",
    "From starting the launcher to it executing the jailed program.",
    ["jail"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
INFRA_ERRORS = Counter(
    "simjail_infrastructure_errors",
    "Infrastructure faults this worker met, by cause (store, sandbox, render, server, worker).",
    ["cause"],
    registry=REGISTRY,
)
ACTIVE_JAILS = Gauge(
    "simjail_active_jails",
    "Jails running now.",
    ["jail"],
    registry=REGISTRY,
)

BUILD_STARTS = Counter(
    "simjail_build_starts",
    "Build jails by how they started: warm (the zygote), cold_fallback (the zygote failed).",
    ["path"],
    registry=REGISTRY,
)
ENV_CACHE = Counter(
    "simjail_env_cache",
    "Environment geometry read from the cache (hit) or built (miss).",
    ["result"],
    registry=REGISTRY,
)


def job_done(outcome: str, failure: object) -> None:
    JOBS.labels(outcome=outcome, failure=str(failure) if failure is not None else "").inc()


def infrastructure_error(cause: str) -> None:
    INFRA_ERRORS.labels(cause=cause).inc()


def phases(durations: Mapping[str, Any]) -> None:
    for phase, secs in durations.items():
        if isinstance(secs, int | float) and secs >= 0:
            PHASE_SECONDS.labels(phase=phase).observe(secs)


@contextlib.contextmanager
def active_jail(jail: str) -> Iterator[None]:
    gauge = ACTIVE_JAILS.labels(jail=jail)
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


def jail_started(jail: str, seconds: float) -> None:
    JAIL_START_SECONDS.labels(jail=jail).observe(seconds)


def build_started(path: str) -> None:
    BUILD_STARTS.labels(path=path).inc()


def env_cache(result: str) -> None:
    ENV_CACHE.labels(result=result).inc()


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class MetricsServer:
    """Serves REGISTRY plus, when given, the text of the Temporal SDK's own endpoint."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", temporal_url: str | None = None):
        self.temporal_url = temporal_url
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server calls it by this name
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = outer.render()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # no access log on stderr
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="simjail-metrics", daemon=True
        )

    def render(self) -> bytes:
        body = generate_latest(REGISTRY)
        if self.temporal_url is not None:
            try:
                with urllib.request.urlopen(self.temporal_url, timeout=2) as r:
                    body += r.read(8 * 1024 * 1024)
            except OSError as e:
                body += f"# the Temporal SDK's metrics are unavailable: {e}\n".encode()
        return body

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
