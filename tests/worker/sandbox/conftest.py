"""Real nsjail jails running small test programs.

`CodeLauncher` is the real NsjailLauncher (policy files, cgroups, nsjail's log) with one change:
the jailed command is `python -I -c CODE FRAME_FD` instead of `python -m <module> ...`. The jail
binds only the venv, the base Python and src/, so the test code travels on the command line.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from worker.sandbox.launcher import JailReport, LaunchSpec
from worker.sandbox.nsjail import NsjailLauncher, _NsjailRun
from worker.sandbox.policy import Policy, default_root
from worker.sandbox.supervisor import ChildOutcome, run_child

# Frames written by hand: the jailed test code does not import simjail.
PRELUDE = textwrap.dedent(
    """\
    import json, os, struct, sys, time
    FD = int(sys.argv[1])
    def send(obj):
        data = json.dumps(obj).encode()
        os.write(FD, struct.pack(">I", len(data)) + data)
    def result(payload):
        send({"type": "result", "payload": payload})
    """
)


@dataclass
class Finished:
    returncode: int
    log: str
    cpu_s: float
    report: JailReport


@dataclass
class CodeRun:
    """A prepared nsjail run that records what `finish` saw (nsjail's real exit status)."""

    inner: _NsjailRun
    finished: list[Finished] = field(default_factory=list)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def finish(self, returncode: int, log: str, cpu_s: float) -> JailReport:
        report = self.inner.finish(returncode, log, cpu_s)
        self.finished.append(Finished(returncode, log, cpu_s, report))
        return report


class CodeLauncher:
    name = "nsjail"

    def __init__(self, code: str, policy: Policy | None = None) -> None:
        self.inner = NsjailLauncher(policy or Policy(default_root()))
        self.code = PRELUDE + textwrap.dedent(code)
        self.runs: list[CodeRun] = []

    def prepare(self, spec: LaunchSpec, *, frame_fd: int, log_fd: int) -> CodeRun:
        prepared = self.inner.prepare(spec, frame_fd=frame_fd, log_fd=log_fd)
        python = prepared.argv.index("--") + 1
        assert prepared.argv[python] == str(self.inner.python)
        prepared.argv[python + 1 :] = ["-I", "-c", self.code, str(frame_fd)]
        run = CodeRun(prepared)
        self.runs.append(run)
        return run


@pytest.fixture(scope="session")
def jail_job(jail_tmp: Callable[[str], Path]) -> Path:
    """A job directory the jail can mount at /job (like pipeline.Job makes them)."""
    d = jail_tmp("nsjail") / "job"
    d.mkdir()
    (d / "job.json").write_text(json.dumps({"test": True}))
    d.chmod(0o755)
    return d


def make_spec(job_dir: Path, **kw: object) -> LaunchSpec:
    fields: dict[str, object] = {
        "name": "test",
        "jail": "build",
        "module": "unused",
        "job_dir": job_dir,
        "wall_s": 20.0,
        "cpu_s": 20.0,
        "memory_mb": 512,
        **kw,
    }
    return LaunchSpec(**fields)  # type: ignore[arg-type]


def run_jail(
    job: Path, code: str, policy: Policy | None = None, **kw: object
) -> tuple[ChildOutcome, Finished, float]:
    """Run `code` in a real jail (build unless jail= says otherwise); return the outcome, what
    finish() saw, and the time it took. Checks that the run released its cgroups."""
    launcher = CodeLauncher(code, policy)
    t = time.monotonic()
    out = run_child(launcher, make_spec(job, **kw))
    elapsed = time.monotonic() - t
    (run,) = launcher.runs
    (finished,) = run.finished
    assert out.report == finished.report
    # The job's parent cgroups (and nsjail's group inside them) are gone.
    assert [d for d in run.inner.cgroups.dirs if d.exists()] == []
    return out, finished, elapsed


@pytest.fixture(scope="session")
def code_launcher() -> type[CodeLauncher]:
    """The class: `code_launcher(code, policy=None)` is a Launcher running `code` in a jail."""
    return CodeLauncher


@pytest.fixture(scope="session")
def spec() -> Callable[..., LaunchSpec]:
    """`spec(job_dir, **fields)`: a LaunchSpec with roomy defaults (build jail, 20 s, 512 MB)."""
    return make_spec


@pytest.fixture(scope="session")
def jail() -> Callable[..., tuple[ChildOutcome, Finished, float]]:
    """`jail(job_dir, code, policy=None, **spec_fields)` → (outcome, finish record, seconds)."""
    return run_jail
