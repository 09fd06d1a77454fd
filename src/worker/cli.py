"""The `simjail` command.

`simjail run DESIGN.py` builds the design in a child process, simulates it in another and prints
the verdict and where the video and report are. Exit status: 0 SUCCESS, 1 FAIL, 2 invalid
request or usage, 3 infrastructure error.
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
    r.add_argument("design", type=Path, help="build123d source defining build()")
    r.add_argument("--environment", type=Path, help="build123d source of the task's fixtures")
    r.add_argument("--objectives", type=Path, help="objectives as YAML or JSON")
    r.add_argument("--options", type=Path, help="SimOptions as YAML or JSON")
    r.add_argument("--duration", type=float, help="simulated seconds (overrides --options)")
    r.add_argument("--no-render", action="store_true", help="skip the video")
    r.add_argument("--out", type=Path, help="artifact directory (default: the data dir)")
    r.add_argument("--request-id", help="names the artifacts (default: from the design file)")
    r.add_argument(
        "--json", action="store_true", help="print exactly one JSON SimulationResult on stdout"
    )
    r.add_argument(
        "--unsafe-subprocess",
        action="store_true",
        help="run the children WITHOUT the nsjail sandbox (development machines without "
        "namespaces only; never for untrusted code)",
    )
    pol = sub.add_parser("policy", help="show or check the sandbox policy")
    psub = pol.add_subparsers(dest="policy_command", required=True)
    show = psub.add_parser(
        "show", help="print the effective policy for a request: files, digest, per-job limits"
    )
    show.add_argument("--options", type=Path, help="SimOptions (YAML/JSON) whose limits apply")
    show.add_argument("--jail", choices=("build", "physics"), help="only this jail")
    psub.add_parser("check", help="validate the policy files by starting a real jail of each kind")
    return p


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
    store = LocalStore(args.out or settings.artifacts_root)
    progress = _TerminalProgress()
    try:
        result = run_request(request, settings, store, on_progress=progress)
    finally:
        progress.done()
    log.info(
        "job.done", request_id=request.request_id, outcome=result.outcome, failure=result.failure
    )
    if args.json:
        sys.stdout.write(result.model_dump_json() + "\n")
    else:
        _print_result(result)
    return EXIT_SUCCESS if result.outcome == "SUCCESS" else EXIT_FAIL


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
    import tempfile

    from worker.sandbox.launcher import LaunchSpec
    from worker.sandbox.supervisor import LaunchError, classify, run_child

    launcher.check()
    print(f"nsjail:  {launcher.binary}")
    print(f"digest:  {launcher.policy.digest()}")
    ok = True
    with tempfile.TemporaryDirectory(prefix="simjail-policy-") as tmp:
        root = Path(tmp)
        root.chmod(0o711)
        for jail in ("build", "physics"):
            job = root / jail
            job.mkdir()
            job.chmod(0o755)
            (job / "job.json").write_text(json.dumps({"render": jail == "physics"}))
            out = root / f"{jail}-out"
            out.mkdir()
            spec = LaunchSpec(
                name=f"{jail} probe",
                jail=jail,
                module="worker.sandbox.probe_child",
                job_dir=job,
                wall_s=60,
                cpu_s=60,
                memory_mb=1024,
                out_dir=out if jail == "physics" else None,
            )
            try:
                res = run_child(launcher, spec)
            except LaunchError as e:
                print(f"FAIL {jail}: {e}")
                ok = False
                continue
            failed = classify(res)
            seen = res.result.payload if res.result else {}
            if failed is not None or seen.get("uid") != 65534:
                print(f"FAIL {jail}: {failed[1] if failed else seen}\n{res.stderr[-2000:]}")
                ok = False
                continue
            extra = ""
            if "rendered_mean" in seen:
                extra = f", rendered (mean {seen['rendered_mean']:.0f})"
            print(
                f"ok   {jail}: uid {seen['uid']}, pid {seen['pid']}, hostname "
                f"{seen['hostname']!r}, env {seen['env_keys']}{extra}, {res.wall_s:.2f} s"
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


if __name__ == "__main__":
    raise SystemExit(main())
