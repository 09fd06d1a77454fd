"""The `simjail` subcommands. Each turns its flags into calls of the library (a request from
files, the pipeline, the Temporal client, worker and dev server, the sandbox policy) and prints
through `worker.cli.output`; none does domain work of its own. Heavy modules are imported inside
the command that needs them, so `simjail --help` loads neither MuJoCo nor build123d.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from common.models.simulation import SimulationRequest
from worker import logs
from worker.cli import output
from worker.cli.output import EXIT_FAIL, EXIT_INFRA, EXIT_INVALID, EXIT_SUCCESS
from worker.errors import InfrastructureError, InvalidRequest
from worker.janitor import Janitor
from worker.request_files import load_mapping, request_from_files
from worker.settings import Settings, examples_dir


def _request(args: argparse.Namespace) -> SimulationRequest:
    """The request the flags describe; InvalidRequest naming every bad field."""
    try:
        return request_from_files(
            args.design,
            environment=args.environment,
            objectives=args.objectives,
            options=args.options,
            duration_s=args.duration,
            render=False if args.no_render else None,
            full_video=True if args.full_video else None,
            request_id=args.request_id,
        )
    except ValidationError as e:
        raise InvalidRequest(output.validation_message(e)) from None


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    if getattr(args, "unsafe_subprocess", False):
        settings = settings.replace(sandbox="unsafe-subprocess")
    return settings


def _connect_options(args: argparse.Namespace) -> Any:
    from worker.simulation.temporal.client import ConnectOptions

    return ConnectOptions(
        address=args.address,
        namespace=args.namespace,
        profile=args.profile,
        tls=args.tls,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        api_key=os.environ.get(args.api_key_env) or None,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from worker.pipeline import run_request
    from worker.storage import make_store
    from worker.storage.local import LocalStore

    request = _request(args)
    settings = _settings(args)
    # --out names a local directory for the artifacts; s3:// sources still come from the
    # configured S3 store.
    store = LocalStore(args.out) if args.out else make_store(settings)
    sources = make_store(settings) if args.out and settings.store.kind == "s3" else store
    progress = output.TerminalProgress.for_run(args.json)
    if progress.mode == "bar" and not args.json:
        # A person at a terminal reads the bar and the summary; info lines would break the bar
        # (warnings still show; the children's output is in the logs artifact).
        logs.configure(json=False, level="WARNING")
    try:
        with Janitor():  # a SIGKILLed `simjail run` leaves no job directory or cgroup
            result = run_request(request, settings, store, on_progress=progress, sources=sources)
    finally:
        progress.done()
    structlog.get_logger("simjail.cli").info(
        "job.done", request_id=request.request_id, outcome=result.outcome, failure=result.failure
    )
    return output.emit(result, args.json)


def cmd_submit(args: argparse.Namespace) -> int:
    from temporalio.client import WorkflowFailureError

    from worker.simulation.temporal import client as simclient

    request = _request(args)
    opts = _connect_options(args)
    outage_s = args.outage_wait

    async def go() -> int:
        # An unreachable server (down, restarting) is waited for, up to --outage-wait per
        # outage; then ServerUnreachable (exit 3). Other connection errors fail at once.
        try:
            client = await simclient.through_outages(
                lambda: simclient.connect(opts),
                what=f"connecting to {_address(opts)}",
                outage_s=outage_s,
            )
        except simclient.ServerUnreachable:
            raise
        except Exception as e:  # bad TLS, a refused API key: infrastructure
            output.error(f"cannot connect to Temporal at {_address(opts)}: {e}")
            return EXIT_INFRA
        handle = await simclient.through_outages(
            lambda: simclient.submit(client, request, task_queue=args.task_queue),
            what="starting the workflow",
            outage_s=outage_s,
        )
        if not args.wait:
            if args.json:
                sys.stdout.write(json.dumps({"workflow_id": handle.id}) + "\n")
            else:
                print(handle.id)
            return EXIT_SUCCESS
        try:
            result = await simclient.wait_result(handle, outage_s=outage_s)
        except WorkflowFailureError as e:
            return output.workflow_failure(e)
        return output.emit(result, args.json)

    return asyncio.run(go())


def _address(opts: Any) -> str:
    try:
        return str(opts.connect_config()["target_host"])
    except Exception:
        return str(opts.address or "the configured address")


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.simulation.temporal import client as simclient
    from worker.simulation.temporal.worker import prepare_worker, run_worker, start_metrics

    settings = _settings(args)
    # Fail fast, before connecting (budgets, SandboxUnavailable, ProbeFailed → 3).
    launcher = prepare_worker(settings)
    opts = _connect_options(args)
    janitor = Janitor()  # cleans up after this process, however it ends

    async def go() -> int:
        runtime, metrics_url = None, None
        if args.metrics_port is not None:
            try:
                runtime, server = start_metrics(args.metrics_port, args.metrics_host)
            except OSError as e:
                output.error(
                    f"cannot serve metrics on {args.metrics_host}:{args.metrics_port}: {e}"
                )
                return EXIT_INFRA
            metrics_url = f"http://{args.metrics_host}:{server.port}/metrics"
        try:
            client = await simclient.connect(opts, runtime=runtime)
        except Exception as e:
            output.error(f"cannot connect to Temporal at {_address(opts)}: {e}")
            return EXIT_INFRA
        await run_worker(
            client,
            settings,
            launcher=launcher,
            task_queue=args.task_queue,
            slots=args.slots,
            graceful_shutdown_s=args.graceful_shutdown,
            metrics_url=metrics_url,
        )
        return EXIT_SUCCESS

    with janitor:
        try:
            return asyncio.run(go())
        finally:
            launcher.close()  # its zygote


def demo_request() -> SimulationRequest:
    """examples/ramp under a fresh id: the same id would return the stored result of the last
    demo (submission is idempotent) instead of running it again."""
    import uuid

    ramp = examples_dir() / "ramp"
    return request_from_files(
        ramp / "design.py",
        environment=ramp / "environment.py",
        objectives=ramp / "objectives.yaml",
        request_id=f"ramp-demo-{uuid.uuid4().hex[:8]}",
    )


def cmd_dev(args: argparse.Namespace) -> int:
    from temporalio.client import WorkflowFailureError

    from worker.simulation.temporal.dev import run_dev

    def say(line: str) -> None:
        print(line, flush=True)

    with Janitor() as janitor:  # also stops the dev server if this process is SIGKILLed
        demo = asyncio.run(
            run_dev(
                _settings(args),
                port=args.port,
                ui_port=args.ui_port,
                db_filename=args.db_filename,
                demo=demo_request() if args.demo else None,
                slots=args.slots,
                graceful_shutdown_s=args.graceful_shutdown,
                metrics_port=args.metrics_port,
                metrics_host=args.metrics_host,
                say=say,
                on_server=janitor.also_kill,
            )
        )
    print("Temporal dev server stopped.", flush=True)
    if demo is None:
        return EXIT_SUCCESS
    if isinstance(demo.error, WorkflowFailureError):
        return output.workflow_failure(demo.error)
    if demo.error is not None or demo.result is None:
        output.error(f"the demo failed: {demo.error}")
        return EXIT_INFRA
    print(f"End to end through Temporal: {demo.seconds:.2f} s")
    return output.emit(demo.result, False)


def cmd_loadtest(args: argparse.Namespace) -> int:
    """Exit 0 when nothing was lost, duplicated, mismatched or leaked, 1 otherwise; 2 for bad
    flags, 3 when the server or the workers cannot start."""
    from worker.loadtest.run import LoadTestConfig, run_loadtest

    cfg = LoadTestConfig(
        count=args.count,
        concurrency=args.concurrency,
        hostile_ratio=args.hostile_ratio,
        faults=args.faults,
        fault_rounds=args.fault_rounds,
        address=args.address,
        workers=args.workers,
        slots=args.slots,
        render=not args.no_render,
        seed=args.seed,
        outage_s=args.outage_s,
        timeout_s=args.timeout,
        keep_dir=args.keep_dir,
    )
    try:
        report = asyncio.run(run_loadtest(cfg))
    except RuntimeError as e:  # a worker that would not start, a server that would not
        raise InfrastructureError(str(e)) from None
    output.emit_loadtest(report, args.json)
    return EXIT_SUCCESS if report["ok"] else EXIT_FAIL


def cmd_policy(args: argparse.Namespace) -> int:
    from worker.job.children import build_spec, physics_spec, policy_digest
    from worker.sandbox.nsjail import NsjailLauncher
    from worker.sandbox.policy import Policy

    settings = Settings.from_env()
    policy = Policy(settings.paths.policy_root)
    launcher = NsjailLauncher(policy)
    if args.policy_command == "check":
        return _policy_check(launcher)
    options = load_mapping(args.options, "options") if args.options else {}
    try:
        request = SimulationRequest.model_validate(
            {"request_id": "policy-show", "design": {"code": ""}, "options": options}
        )
    except ValidationError as e:
        output.error(output.validation_message(e))
        return EXIT_INVALID
    limits = settings.limits.tighten(request.options.limits)
    # The launcher a worker with these settings judges with (its name is part of the digest);
    # made, not started: no zygote runs for `show`.
    from worker.sandbox.zygote import WarmLauncher

    judging = WarmLauncher(launcher) if settings.reuse.warm else launcher
    job = Path("<job dir>")
    specs = {"build": build_spec(limits, "design", job), "physics": physics_spec(limits, job, job)}
    print(f"policy directory:    {policy.root}")
    print(f"policy files digest: {policy.digest()}")
    print(f"launcher:            {judging.name}")
    print(f"policy digest:       {policy_digest(judging, limits)}  (what a result carries)")
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


def _policy_check(launcher: Any) -> int:
    """Start a real jail of each kind and check every promise of its policy file from inside
    it (and its cgroups from outside), then a warm build job forked from a zygote against the
    same promises and the zygote's own; exit 3 loudly if anything differs."""
    from worker.sandbox.probe import ProbeFailed, verify, verify_warm
    from worker.sandbox.zygote import WarmLauncher, ZygoteFailed

    launcher.check()
    print(f"nsjail:  {launcher.binary}")
    print(f"digest:  {launcher.policy.digest()}")
    failed = 0
    warm = WarmLauncher(launcher)
    for jail in ("build", "physics", "build (warm)"):
        try:
            checks = verify_warm(warm) if jail == "build (warm)" else verify(launcher, jail)
        except (ProbeFailed, ZygoteFailed) as e:
            print(f"FAIL {jail}: {e}")
            failed += 1
            continue
        finally:
            if jail == "build (warm)":
                warm.close()
        for c in checks:
            print(
                f"{'ok  ' if c.ok else 'FAIL'} {jail}: {c.name}" + ("" if c.ok else f": {c.detail}")
            )
            failed += not c.ok
    if failed:
        output.error(
            f"{failed} promise(s) of the sandbox policy do not hold here; refusing untrusted code"
        )
        return EXIT_INFRA
    print("every policy line checked holds in a real jail of each kind")
    return EXIT_SUCCESS


def cmd_bench(args: argparse.Namespace) -> int:
    """Every figure of issue 12 against its raw baseline, measured now (minutes): one JSON
    object with --json, a table otherwise. Exit 3 only when something could not be measured."""
    from worker.bench import KEYS, BenchFailed
    from worker.bench.run import run

    def say(line: str) -> None:
        if not args.json:
            print(f"… {line}", file=sys.stderr, flush=True)

    try:
        result = run(args.size, say)
    except BenchFailed as e:
        output.error(f"could not measure: {e}")
        return EXIT_INFRA
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
        return EXIT_SUCCESS
    for key in KEYS:
        print(f"{key:<26} {result[key]}")
    print(json.dumps(result["raw"], indent=2))
    return EXIT_SUCCESS
