"""Harness of the hostile suite: every case is a real attempt run through the real pipeline
and the real nsjail sandbox, then checked for the invariants that must hold after ANY job:

- the worker (this process) is alive and the job's result is a clean FAIL or SUCCESS;
- no process of the job survives (nsjail, python, grandchildren; with the warm path, the
  job's reaper and everything in its pid namespace: only the zygote itself lives on);
- no temp dir, no cgroup of the job is left;
- the canaries (a secret in the worker's environment, a file in the worker's home) are
  untouched and never appear in the result or its artifacts.

Every case runs through one launcher for the whole session, as a worker runs its jobs: by
default the warm one, whose build jobs all fork from one zygote (so each case is also a case
for the next job), and with `SIMJAIL_WARM=0` the cold one, a jail of its own per build.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from common.models.simulation import SimulationRequest, SimulationResult
from worker.pipeline import run_request
from worker.sandbox import cgroups
from worker.sandbox.launcher import Launcher, make_launcher
from worker.settings import Reuse, Settings
from worker.storage.local import LocalStore

SECRET_ENV = "SIMJAIL_TEST_CANARY_SECRET"


@dataclass(frozen=True)
class Canaries:
    secret: str
    home_file: Path
    home_content: bytes


@pytest.fixture(scope="session")
def canaries() -> Iterator[Canaries]:
    secret = "canary-" + secrets.token_hex(16)
    os.environ[SECRET_ENV] = secret  # in the worker's environment for the whole suite
    home_file = Path.home() / f".simjail-canary-{uuid.uuid4().hex[:8]}"
    content = ("home-canary-" + secrets.token_hex(16)).encode()
    home_file.write_bytes(content)
    home_file.chmod(0o644)  # world-readable on the host: only the jail's mounts keep it out
    try:
        yield Canaries(secret, home_file, content)
    finally:
        os.environ.pop(SECRET_ENV, None)
        home_file.unlink(missing_ok=True)


CODE_CPU_S = 5.0
"""CPU seconds a hostile design's own code gets, beyond what a build costs here before it: the
heaviest honest case burns one core for 4 s of wall clock (the CPU quota's case), and its first
period may burst above the core. (At 4.0 it only fit a cold build's unused import.)"""
WALL_MARGIN_S = 4.0
BURN_CPU_S = 1.0
"""CPU seconds the calibration's second design burns, to measure the CPU a busy build gets."""


@pytest.fixture(scope="session")
def hostile_launcher() -> Iterator[Launcher]:
    """The session's launcher: warm unless SIMJAIL_WARM=0 (then every build is a cold jail)."""
    env = Settings.from_env()
    launcher = make_launcher("nsjail", env.paths.policy_root, Reuse(warm=env.reuse.warm))
    try:
        yield launcher
    finally:
        launcher.close()


@dataclass(frozen=True)
class Budget:
    """The suite's build budgets, calibrated when it starts, so that no case depends on this
    machine's speed: `import build123d` alone costs 2.2 s of CPU on one machine of this kind and
    4.4 s on another, which a fixed 4 s budget cannot hold, and a warm build (forked from the
    zygote, the import done) costs almost nothing before the design's first line. Two builds
    are measured in real jails of the session's launcher: a box (what a build costs before the
    design's own code: `base_*`), and a box after BURN_CPU_S of busy loop (the CPU per wall
    second a busy build gets here: `speed`). The design's code then gets CODE_CPU_S of CPU
    beyond the base, and a wall budget that a busy loop cannot reach before its CPU budget, even
    where the CPU runs slower than the wall clock (a throttled machine)."""

    base_cpu_s: float
    base_wall_s: float
    speed: float
    """CPU seconds per wall second a busy build gets here (1 on an idle core)."""

    @property
    def cpu_s(self) -> float:
        return round(self.base_cpu_s + CODE_CPU_S, 1)

    @property
    def wall_s(self) -> float:
        return round(self.base_wall_s + CODE_CPU_S / self.speed + WALL_MARGIN_S, 1)

    @property
    def quick_s(self) -> float:
        """A bound on a build that ends soon after its start: it waited for no limit."""
        return round(1.5 * self.base_wall_s + 2.0, 1)


def _calibration_build(
    launcher: Launcher, settings: Settings, store: LocalStore, code: str
) -> dict[str, float]:
    request = SimulationRequest.model_validate(
        {
            "request_id": f"hostile-calibration-{uuid.uuid4().hex[:6]}",
            "design": {"code": code},
            "options": {"render": False, "duration_s": 0.1},
        }
    )
    result = run_request(request, settings, store, launcher=launcher)
    assert result.outcome == "SUCCESS", result.reason
    res: dict[str, float] = result.metrics["resources"]["build_design"]
    return res


@pytest.fixture(scope="session")
def budget(tmp_path_factory: pytest.TempPathFactory, hostile_launcher: Launcher) -> Budget:
    """Measured once, in real jails of the session's launcher (see Budget)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("calibration"), sandbox="nsjail")
    store = LocalStore(tmp_path_factory.mktemp("calibration-artifacts"))
    box = "from build123d import Box, Pos\nresult = Pos(0, 0, 9) * Box(9, 9, 9)\n"
    burn = (
        "import time\nt = time.process_time()\n"
        f"while time.process_time() - t < {BURN_CPU_S}:\n    pass\n" + box
    )
    base = _calibration_build(hostile_launcher, settings, store, box)
    busy = _calibration_build(hostile_launcher, settings, store, burn)
    extra_wall = max(busy["wall_s"] - base["wall_s"], 0.1)
    speed = min(1.0, max(0.1, (busy["cpu_s"] - base["cpu_s"]) / extra_wall))
    measured = Budget(base_cpu_s=base["cpu_s"], base_wall_s=base["wall_s"], speed=speed)
    print(
        f"\nhostile budgets ({hostile_launcher.name}): {measured} → cpu {measured.cpu_s} s, "
        f"wall {measured.wall_s} s"
    )
    return measured


@pytest.fixture(scope="session")
def hostile_settings(tmp_path_factory: pytest.TempPathFactory, budget: Budget) -> Settings:
    """Tight limits so that every exhaustion case ends within seconds."""
    return Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        sandbox="nsjail",
        build_wall_s=budget.wall_s,
        build_cpu_s=budget.cpu_s,
        memory_mb=768,
        physics_wall_s=60,
        max_output_bytes=256 * 1024,
    )


CHECKOUT = str(Path(__file__).resolve().parents[3])
"""Every jail of this test run names this checkout in its command line (the policy file for
nsjail, the venv's interpreter for the jailed process): jobs of another checkout or session
running on the same machine are not this suite's business."""


def _job_processes(started: float, launcher: Launcher) -> list[psutil.Process]:
    """Processes started during the job that belong to one of its jails: descendants of this
    process, or (reparented, e.g. a daemonised grandchild) jail processes of this checkout.
    The zygotes' own processes (nsjail and the zygote, never a job's) are the launcher's, not
    the job's; their descendants are not exempt: a job's reaper or a process it left counts."""
    me = psutil.Process()
    own = {p.pid for p in me.children(recursive=True)}
    zygotes = set(getattr(launcher, "zygote_pids", list)())
    found = []
    for p in psutil.process_iter(["pid", "name", "cmdline", "create_time", "uids"]):
        try:
            if p.info["create_time"] < started - 1 or p.pid == me.pid or p.pid in zygotes:
                continue
            cmd = " ".join(p.info["cmdline"] or [])
            ours = CHECKOUT in cmd and ("nsjail" in cmd or "worker.sandbox." in cmd)
            jailed = bool(p.info["uids"] and p.info["uids"].real == 65534 and CHECKOUT in cmd)
            if p.pid in own or ours or jailed:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _leftover_cgroups() -> list[Path]:
    """Per-job cgroups of this process (they are named `<worker pid>-<jail>-<uuid>`; the
    zygote's own, `<worker pid>-zygote-<uuid>`, belong to the launcher, not to a job)."""
    out = []
    for top in (
        cgroups.ROOT / "memory" / cgroups.PARENT,
        cgroups.ROOT / "pids" / cgroups.PARENT,
    ):
        if top.is_dir():
            out += [
                d
                for d in top.glob(f"{os.getpid()}-*")
                if d.is_dir() and not d.name.startswith(f"{os.getpid()}-zygote-")
            ]
    return out


def _simjail_tmp() -> set[str]:
    """Job (and probe) directories owned by this process: each records its worker's pid in
    .owner as soon as it is made, so those of other processes on the machine do not count."""
    mine = set()
    for p in Path(tempfile.gettempdir()).glob("simjail-*"):
        try:
            owner = (p / ".owner").read_text().strip()
        except OSError:
            continue  # another process's, just made or being removed
        if owner == str(os.getpid()):
            mine.add(p.name)
    return mine


RunDesign = Callable[..., SimulationResult]


@pytest.fixture
def run_design(
    hostile_settings: Settings, hostile_launcher: Launcher, canaries: Canaries, tmp_path: Path
) -> Iterator[RunDesign]:
    """`run_design(code, **request_fields)` → SimulationResult, checking every invariant."""
    store_dir = tmp_path / "artifacts"

    def run(code: str, **fields: Any) -> SimulationResult:
        before_tmp = _simjail_tmp()
        started = time.time()
        request = SimulationRequest.model_validate(
            {
                "request_id": f"hostile-{uuid.uuid4().hex[:8]}",
                "design": {"code": textwrap.dedent(code)},
                "options": {"render": False, "duration_s": 1.0, **fields.pop("options", {})},
                **fields,
            }
        )
        result = run_request(
            request, hostile_settings, LocalStore(store_dir), launcher=hostile_launcher
        )
        # Nothing of the job survives it.
        deadline = time.time() + 5
        while (left := _job_processes(started, hostile_launcher)) and time.time() < deadline:
            time.sleep(0.1)
        assert not left, f"processes left behind: {[p.info for p in left]}"
        assert _simjail_tmp() <= before_tmp, "a job temp dir was left behind"
        assert not _leftover_cgroups(), f"cgroups left behind: {_leftover_cgroups()}"
        # The canaries are untouched and never leak into what the job returned.
        assert canaries.home_file.read_bytes() == canaries.home_content
        assert os.environ[SECRET_ENV] == canaries.secret
        blob = result.model_dump_json()
        for f in store_dir.rglob("*"):
            if f.is_file():
                blob += f.read_bytes().decode("utf-8", "replace")
        assert canaries.secret not in blob, "the worker's secret leaked into the result"
        assert canaries.home_content.decode() not in blob, "the home canary leaked"
        return result

    yield run


@pytest.fixture
def loopback_listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP listener on 127.0.0.1 in the worker's network namespace; records what arrives."""
    import socket
    import threading

    received: list[bytes] = []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    received.append(conn.recv(4096) or b"<connected>")
                except OSError:
                    received.append(b"<connected>")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1], received
    finally:
        stop.set()
        t.join(2)
        srv.close()
