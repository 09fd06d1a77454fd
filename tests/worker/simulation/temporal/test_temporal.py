"""SimulationWorkflow → run_simulation → jails, against a real Temporal dev server and worker."""

from __future__ import annotations

import asyncio
import itertools
import json
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psutil
import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, RetryState

from common.models.simulation import SimulationRequest, SimulationResult
from worker.settings import Settings
from worker.simulation.temporal import client as simclient
from worker.simulation.temporal import shared
from worker.simulation.temporal.shared import HeartbeatDetails

pytestmark = pytest.mark.slow

HEARTBEAT_INTERVAL_S = 1.0
"""The worker fixture's (conftest.py)."""

EXAMPLES = Path(__file__).resolve().parents[4] / "examples"
DROP_OBJECTIVES = {
    "target": "block",
    "goal_hold_s": 1.0,
    "zones": [{"name": "pad", "kind": "goal", "min": [-100, -100, 0], "max": [100, 100, 100]}],
    "bounds": {"min": [-1000, -1000, -10], "max": [1000, 1000, 1000]},
}


def drop_request(name: str, **options: Any) -> SimulationRequest:
    return SimulationRequest.model_validate(
        {
            "request_id": f"{name}-{uuid.uuid4().hex[:8]}",
            "design": {"code": (EXAMPLES / "drop" / "design.py").read_text()},
            "objectives": DROP_OBJECTIVES,
            "options": options,
        }
    )


def code_request(name: str, code: str, **options: Any) -> SimulationRequest:
    return SimulationRequest.model_validate(
        {
            "request_id": f"{name}-{uuid.uuid4().hex[:8]}",
            "design": {"code": textwrap.dedent(code)},
            "options": options,
        }
    )


async def _events(handle: WorkflowHandle[Any, Any]) -> list[Any]:
    return [e async for e in handle.fetch_history_events()]


async def _poll_heartbeats(
    temporal: Any, handle: WorkflowHandle[Any, Any], until: asyncio.Future[Any]
) -> list[tuple[float, HeartbeatDetails]]:
    """(server's last-heartbeat time, details) each time they change, until `until` is done."""
    seen: list[tuple[float, HeartbeatDetails]] = []
    last = None
    while not until.done():
        desc = await handle.describe()
        for pa in desc.raw_description.pending_activities:
            if pa.state != PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
                continue
            if not pa.heartbeat_details.payloads:
                continue
            stamp = pa.last_heartbeat_time.ToMicroseconds() / 1e6
            if stamp == last:
                continue
            last = stamp
            (d,) = await temporal.client.data_converter.decode(
                pa.heartbeat_details.payloads, [HeartbeatDetails]
            )
            seen.append((stamp, d))
        await asyncio.sleep(0.1)
    return seen


def _jails_of_this_process() -> list[str]:
    """Jails (and jailed processes) this process started, but for the worker's zygote itself
    (its nsjail and the zygote, which live as long as the worker): a job's reaper or job, their
    descendants, count."""
    procs = []
    for p in psutil.Process().children(recursive=True):
        try:
            procs.append((p.pid, p.ppid(), " ".join(p.cmdline())))
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    zygote_jails = {pid for pid, _, cmd in procs if "sandbox/zygote.cfg" in cmd}
    zygotes = {pid for pid, ppid, _ in procs if ppid in zygote_jails}
    return [
        f"{pid}: {cmd[:200]}"
        for pid, _, cmd in procs
        if pid not in zygote_jails | zygotes and ("nsjail" in cmd or "worker.sandbox" in cmd)
    ]


def _job_dirs(request: SimulationRequest) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"simjail-{request.request_id[:32]}-*"))


def test_workflow_defaults_match_worker_settings() -> None:
    s = Settings()
    assert s.limits.build_wall_s == shared.WORKFLOW_BUDGETS.build_wall_s
    assert s.limits.physics_wall_s == shared.WORKFLOW_BUDGETS.physics_wall_s


def test_drop_succeeds_with_video_heartbeats_and_small_payload(temporal: Any) -> None:
    """SUCCESS with a video URL; heartbeats reach the server with increasing sim time; the
    result that travels through Temporal is small while the video sits in the store."""
    # full_video: 4 s of video, so that the job lasts a few heartbeats.
    request = drop_request("drop", duration_s=4.0, width=320, height=240, full_video=True)

    async def go() -> tuple[SimulationResult, list[tuple[float, HeartbeatDetails]], list[Any]]:
        nonlocal run_id
        handle = await simclient.submit(temporal.client, request)
        run_id = handle.result_run_id
        assert handle.id == f"simulation-{request.request_id}"
        result_f = asyncio.ensure_future(handle.result())
        beats = await _poll_heartbeats(temporal, handle, result_f)
        # Idempotent: the same request again is the same workflow (and result).
        again = await simclient.submit(temporal.client, request)
        assert again.id == handle.id
        assert (await again.result()) == result_f.result()
        return result_f.result(), beats, await _events(handle)

    run_id: str | None = None
    t0 = time.monotonic()
    result, beats, events = temporal.run(go())
    wall = time.monotonic() - t0
    assert result.outcome == "SUCCESS", result.reason
    assert result.video_url is not None
    video = Path(urlparse(result.video_url).path)
    assert video.is_file() and video.is_relative_to(temporal.artifacts)
    # Keys unique to this execution; the result lists result.json and a lasting URI for each.
    prefix = temporal.artifacts / request.request_id / str(run_id)
    assert video == prefix / "video.mp4"
    assert set(result.artifact_urls) == {
        "video",
        "poster",
        "contact_sheet",
        "last_frame",
        "plots",
        "mjcf",
        "geometry",
        "logs",
        "report",
        "report_html",
        "result",
    }
    assert result.artifact_urls["result"] == (prefix / "result.json").as_uri()
    assert result.artifact_uris == result.artifact_urls  # a local store: file:// both ways
    stored = SimulationResult.model_validate_json((prefix / "result.json").read_text())
    assert stored == result

    # Heartbeats: several, spaced about the interval apart, sim time never going back.
    assert len(beats) >= 3, beats
    phases = [d.phase for _, d in beats]
    assert phases[0] in ("queued", "build"), phases
    sim = [d.sim_time_s for _, d in beats]
    assert sim == sorted(sim), sim
    assert max(sim) > 0.5, beats
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(beats)]
    assert max(gaps) < 4 * HEARTBEAT_INTERVAL_S + 1, gaps
    print(f"\nworkflow wall {wall:.2f} s; heartbeat gaps {[round(g, 2) for g in gaps]}")
    print(f"heartbeats: {[(d.phase, d.sim_time_s, d.fraction) for _, d in beats]}")

    # The payloads that crossed Temporal are small; the video is in the store.
    completed = [
        e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    ]
    assert len(completed) == 1
    result_payloads = completed[0].workflow_execution_completed_event_attributes.result.payloads
    payload_bytes = sum(len(p.data) for p in result_payloads)
    assert payload_bytes < 16 * 1024, payload_bytes
    assert video.stat().st_size > payload_bytes
    largest = max(
        len(p.data)
        for e in events
        for attrs in (
            e.activity_task_completed_event_attributes.result,
            e.activity_task_scheduled_event_attributes.input,
        )
        for p in attrs.payloads
    )
    assert largest < 16 * 1024, largest


def test_hostile_design_is_fail_not_activity_failure(temporal: Any) -> None:
    request = code_request(
        "segfault",
        """\
        import ctypes

        def build():
            ctypes.string_at(0)
        """,
        render=False,
    )

    async def go() -> tuple[SimulationResult, list[Any]]:
        handle = await simclient.submit(temporal.client, request)
        return await handle.result(), await _events(handle)

    result, events = temporal.run(go())
    assert result.outcome == "FAIL"
    assert result.failure == "CRASHED", result.reason
    kinds = [e.event_type for e in events]
    assert kinds.count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == 1
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED in kinds
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED not in kinds
    started = [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED]
    assert [e.activity_task_started_event_attributes.attempt for e in started] == [1]


def test_malformed_request_fails_non_retryably_naming_the_field(temporal: Any) -> None:
    request = code_request(
        "toolong", "def build():\n    return None\n", limits={"wall_s": 1e9}, render=False
    )

    async def go() -> tuple[BaseException, list[Any]]:
        handle = await simclient.submit(temporal.client, request)
        try:
            await handle.result()
        except WorkflowFailureError as e:
            return e, await _events(handle)
        raise AssertionError("the workflow did not fail")

    err, events = temporal.run(go())
    act = err.cause
    assert isinstance(act, ActivityError)
    assert act.retry_state == RetryState.NON_RETRYABLE_FAILURE
    app = act.cause
    assert isinstance(app, ApplicationError)
    assert app.type == "InvalidRequest"
    assert app.non_retryable
    assert "options.limits.wall_s" in app.message
    started = [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED]
    assert len(started) == 1


def test_cancel_kills_the_jail_within_seconds_and_leaves_nothing(temporal: Any) -> None:
    """A long run is cancelled while the physics jail renders: the workflow ends cancelled (not
    FAIL) only after the jail is dead and the job directory is gone."""
    # full_video: rendering the whole minute keeps the jail busy (the video would otherwise
    # end a second after the block lands, and the job with it).
    request = drop_request("cancel", duration_s=60.0, width=640, height=480, full_video=True)

    async def go() -> tuple[float, list[str], list[Path], BaseException]:
        handle = await simclient.submit(temporal.client, request)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            desc = await handle.describe()
            pas = desc.raw_description.pending_activities
            if pas and pas[0].heartbeat_details.payloads:
                (d,) = await temporal.client.data_converter.decode(
                    pas[0].heartbeat_details.payloads, [HeartbeatDetails]
                )
                if d.sim_time_s > 0.2:
                    break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the physics never started")
        assert _jails_of_this_process(), "no jail running before the cancel"
        t = time.monotonic()
        await handle.cancel()
        try:
            await handle.result()
        except WorkflowFailureError as e:
            took = time.monotonic() - t
            return took, _jails_of_this_process(), _job_dirs(request), e
        raise AssertionError("a cancelled workflow returned a result")

    took, jails, dirs, err = temporal.run(go())
    print(f"\ncancel → workflow cancelled in {took:.2f} s")
    assert isinstance(err.cause, CancelledError), repr(err.cause)
    assert took < 10, took
    assert jails == []
    assert dirs == []


def test_sigterms_during_one_job_do_not_fail_it(temporal: Any, tmp_path: Path) -> None:
    """A rolling restart done badly: three `simjail worker` processes (no grace period) each get
    SIGTERM while they run the same job. Each cancels it, kills and reaps its jails, removes
    the job directory and exits 0; the workflow schedules the job again each time, from
    attempt 1 (a shutdown is not a fault), and a fourth worker completes it."""
    import signal
    import subprocess

    queue = f"shutdown-{uuid.uuid4().hex[:6]}"
    cmd, env = _worker_cmd(temporal, queue, "--graceful-shutdown", "0")
    request = drop_request(  # full_video: a job long enough to be interrupted
        "sigterm", duration_s=4.0, width=320, height=240, full_video=True
    )
    procs: list[subprocess.Popen[bytes]] = []

    def worker() -> subprocess.Popen[bytes]:
        # Its log goes to a file: a pipe nobody reads until the end fills and blocks the worker.
        with open(tmp_path / f"worker{len(procs)}.log", "wb") as log:
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log))
        return procs[-1]

    try:
        handle = temporal.run(simclient.submit(temporal.client, request, task_queue=queue))
        for i in range(3):
            proc = worker()
            jails = _wait_for_jail(proc, tmp_path / f"worker{i}.log")
            t = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            err = (tmp_path / f"worker{i}.log").read_text()
            print(f"\nSIGTERM {i + 1} → worker exited in {time.monotonic() - t:.2f} s")
            assert proc.returncode == 0, err[-3000:]
            assert "activity.worker_shutdown" in err, err[-3000:]
            assert _alive(jails) == []
            assert _job_dirs(request) == []
        worker()
        result: SimulationResult = temporal.run(handle.result(), timeout=180)
        assert result.outcome == "SUCCESS", result.reason

        async def history() -> tuple[list[int], int]:
            events = await _events(handle)
            started = [
                e.activity_task_started_event_attributes.attempt
                for e in events
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
            ]
            scheduled = sum(
                e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED for e in events
            )
            return started, scheduled

        started, scheduled = temporal.run(history())
        assert scheduled == 4
        assert started == [1, 1, 1, 1]  # one started event per scheduled activity
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(60)


def test_sigterm_with_the_default_grace_period_lets_the_job_finish(
    temporal: Any, tmp_path: Path
) -> None:
    """A rolling restart with the default graceful shutdown: the old worker gets SIGTERM mid-job
    and a new one starts. The old one stops taking work, finishes its job (one attempt,
    SUCCESS) and only then exits 0; the new one runs no part of it."""
    import signal
    import subprocess

    queue = f"graceful-{uuid.uuid4().hex[:6]}"
    cmd, env = _worker_cmd(temporal, queue)
    request = drop_request("graceful", duration_s=3.0, width=320, height=240)
    logs = [tmp_path / "old.log", tmp_path / "new.log"]
    procs: list[subprocess.Popen[bytes]] = []

    def worker(log_path: Path) -> subprocess.Popen[bytes]:
        with open(log_path, "wb") as log:
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log))
        return procs[-1]

    try:
        old = worker(logs[0])
        handle = temporal.run(simclient.submit(temporal.client, request, task_queue=queue))
        _wait_for_jail(old, logs[0])
        old.send_signal(signal.SIGTERM)
        worker(logs[1])  # takes the workflow's last task (the old one polls no more)
        result: SimulationResult = temporal.run(handle.result(), timeout=180)
        old.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(60)
    text = logs[0].read_text()
    assert result.outcome == "SUCCESS", result.reason
    assert old.returncode == 0, text[-3000:]
    events = [json.loads(ln)["event"] for ln in text.splitlines()]
    assert events.index("worker.stopping") < events.index("activity.done"), events
    assert "activity.worker_shutdown" not in events
    assert '"graceful_shutdown_s": 60.0' in text
    assert "activity.start" not in logs[1].read_text()

    async def attempts() -> list[int]:
        return [
            e.activity_task_started_event_attributes.attempt
            for e in await _events(handle)
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        ]

    assert temporal.run(attempts()) == [1]


def _wait_for_jail(proc: Any, log_path: Path, timeout: float = 90) -> list[psutil.Process]:
    """The jails of a worker process, once one of a job runs (not the render probe at start;
    say why if the worker exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = log_path.read_text()[-3000:]
            raise AssertionError(f"the worker exited {proc.returncode}: {err}")
        try:
            # Its janitor (worker.janitor, own session) outlives it by design, to clean up.
            jails = [
                p
                for p in psutil.Process(proc.pid).children(recursive=True)
                if "worker.janitor" not in " ".join(_cmdlines([p]))
            ]
            cmds = _cmdlines(jails)
            if "activity.start" in log_path.read_text() and any(
                "build_child" in c or "physics_child" in c for c in cmds
            ):
                return jails
        except psutil.Error:
            pass
        time.sleep(0.1)
    raise AssertionError("no jail ever ran")


def _worker_cmd(temporal: Any, queue: str, *extra: str) -> tuple[list[str], dict[str, str]]:
    import os
    import sys

    address = temporal.client.service_client.config.target_host
    env = {**os.environ, "SIMJAIL_DATA_DIR": str(temporal.settings.paths.data_dir)}
    cmd = [sys.executable, "-m", "worker.cli", "worker", "--address", address]
    return [*cmd, "--task-queue", queue, "--slots", "1", *extra], env


def _cmdlines(procs: list[psutil.Process]) -> list[str]:
    """The command lines of those still there (a zombie or a process gone has none)."""
    out = []
    for p in procs:
        try:
            out.append(" ".join(p.cmdline()))
        except psutil.Error:
            continue
    return out


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


def _cgroups_of(pid: int) -> list[Path]:
    from worker.sandbox import cgroups

    found: list[Path] = []
    for top in (
        cgroups.ROOT / "memory" / cgroups.PARENT,
        cgroups.ROOT / "pids" / cgroups.PARENT,
        cgroups.ROOT / cgroups.PARENT,
    ):
        if top.is_dir():
            found += [d for d in top.iterdir() if d.is_dir() and d.name.startswith(f"{pid}-")]
    return found


def test_a_sigkilled_workers_jail_dies_with_it_and_the_workflow_completes_on_retry(
    temporal: Any, tmp_path: Path
) -> None:
    """`simjail worker` is SIGKILLed mid-job. Its jail dies with it (nsjail runs under
    `setpriv --pdeathsig KILL` and passes the same to its jailed child), and its janitor
    removes the job's cgroups and directory within seconds, without waiting for a new worker.
    A new worker then completes the workflow on retry once the heartbeat timeout has noticed
    the dead attempt. The jobs of the live worker of this test session (another process on the
    same machine) are never touched."""
    import signal
    import subprocess

    queue = f"sigkill-{uuid.uuid4().hex[:6]}"
    cmd, env = _worker_cmd(temporal, queue)
    # A build that is silent for minutes when it starts before `until` (the first attempt),
    # and quick after it (the retry, which starts only after the heartbeat timeout).
    until = time.time() + 20
    drop = (EXAMPLES / "drop" / "design.py").read_text()
    request = SimulationRequest.model_validate(
        {
            "request_id": f"sigkill-{uuid.uuid4().hex[:8]}",
            "design": {
                "code": f"import time\nif time.time() < {until}:\n    time.sleep(600)\n" + drop
            },
            "objectives": DROP_OBJECTIVES,
            "options": {"duration_s": 2.0, "render": False},
        }
    )

    def worker(name: str) -> subprocess.Popen[bytes]:
        with open(tmp_path / f"{name}.log", "wb") as log:
            return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)

    first = worker("first")
    second: subprocess.Popen[bytes] | None = None
    try:
        handle = temporal.run(simclient.submit(temporal.client, request, task_queue=queue))
        deadline = time.monotonic() + 60
        jails: list[psutil.Process] = []
        while time.monotonic() < deadline:
            jails = psutil.Process(first.pid).children(recursive=True)
            if any("build_child" in c for c in _cmdlines(jails)):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the build jail never started")
        time.sleep(4.0)  # past the build123d import, inside the silent sleep
        first_jails = psutil.Process(first.pid).children(recursive=True)
        assert any("nsjail" in c for c in _cmdlines(first_jails))
        dirs = _job_dirs(request)
        assert dirs, "no job directory while the job runs"
        assert _cgroups_of(first.pid)
        first.kill()
        first.wait(10)
        killed_at = time.monotonic()
        while (
            _alive(first_jails) or _cgroups_of(first.pid) or [d for d in dirs if d.exists()]
        ) and time.monotonic() - killed_at < 30:
            time.sleep(0.02)
        all_gone = time.monotonic() - killed_at
        assert _alive(first_jails) == [], [p.cmdline() for p in _alive(first_jails)]
        assert _cgroups_of(first.pid) == []
        assert [d for d in dirs if d.exists()] == []
        print(f"\nSIGKILL → the worker's jail, cgroups and job directory gone in {all_gone:.2f} s")

        second = worker("second")
        result: SimulationResult = temporal.run(handle.result(), timeout=120)
        took = time.monotonic() - killed_at
        print(f"SIGKILL → workflow completed on retry in {took:.2f} s")
        assert result.outcome == "SUCCESS", result.reason

        async def attempts() -> list[int]:
            return [
                e.activity_task_started_event_attributes.attempt
                for e in await _events(handle)
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
            ]

        assert temporal.run(attempts())[-1] >= 2
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)


def test_worker_logs_carry_the_job_ids_and_metrics_are_served(
    temporal: Any, tmp_path: Path
) -> None:
    """A `simjail worker --metrics-port` process runs one job: every JSON log line it wrote
    while the job ran carries request_id, workflow_id, run_id, attempt and phase (also the
    lines of the build threads), and its metrics endpoint counts the job, its phases and jail
    starts next to the Temporal SDK's own metrics."""
    import json
    import signal
    import subprocess
    import urllib.request

    from worker.metrics import free_loopback_port

    queue = f"obs-{uuid.uuid4().hex[:6]}"
    port = free_loopback_port()
    cmd, env = _worker_cmd(temporal, queue, "--metrics-port", str(port))
    request = drop_request("obs", duration_s=2.0, render=False)
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        result = temporal.run(simclient.run(temporal.client, request, task_queue=queue))
        assert result.outcome == "SUCCESS", result.reason
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    assert proc.returncode == 0, log_path.read_text()[-3000:]

    def value(line_start: str) -> float:
        hits = [ln for ln in text.splitlines() if ln.startswith(line_start)]
        assert hits, f"{line_start} not in the metrics"
        return float(hits[0].rsplit(" ", 1)[1])

    assert value('simjail_jobs_total{failure="",outcome="SUCCESS"}') == 1.0
    assert value('simjail_jail_start_seconds_count{jail="build"}') == 1.0
    assert value('simjail_jail_start_seconds_count{jail="physics"}') == 1.0
    assert 0 < value('simjail_jail_start_seconds_sum{jail="build"}') < 5
    assert value('simjail_phase_seconds_count{phase="build"}') == 1.0
    assert value('simjail_phase_seconds_count{phase="simulate"}') == 1.0
    assert value('simjail_active_jails{jail="physics"}') == 0.0
    assert "\ntemporal_" in text, text[-2000:]  # the SDK's runtime metrics, same endpoint

    # Every line the worker wrote is one JSON object (the SDK's too).
    lines = [json.loads(raw) for raw in log_path.read_text().splitlines()]
    events = [ln.get("event") for ln in lines]
    (start_line,) = [ln for ln in lines if ln["event"] == "worker.start"]
    assert start_line["server"] == temporal.client.service_client.config.target_host
    assert start_line["namespace"] == "default"
    assert start_line["task_queue"] == queue
    assert start_line["store"] == {"kind": "local", "root": str(temporal.artifacts)}
    assert start_line["limits"]["physics_wall_s"] == 600.0
    assert start_line["metrics"] == f"http://127.0.0.1:{port}/metrics"
    assert {"simjail", "mujoco", "build123d", "temporalio", "python"} <= set(start_line["versions"])

    start, end = events.index("activity.start"), events.index("activity.done")
    job_lines = lines[start : end + 1]
    assert any(ln["event"] == "child.start" for ln in job_lines)
    keys = ("request_id", "workflow_id", "run_id", "attempt", "phase")
    missing = [ln for ln in job_lines if any(k not in ln for k in keys)]
    assert missing == [], missing
    assert {ln["request_id"] for ln in job_lines} == {request.request_id}
    assert {ln["workflow_id"] for ln in job_lines} == {simclient.workflow_id(request)}
    assert {ln["attempt"] for ln in job_lines} == {1}
    phases = {ln["phase"] for ln in job_lines}
    assert {"activity", "design build", "physics"} <= phases, phases
    print(f"\n{len(job_lines)} job log lines, phases {sorted(phases)}")


def test_worker_refuses_to_start_when_the_physics_jail_cannot_render(tmp_path: Path) -> None:
    """A copy of the policy whose physics jail lacks the EGL vendor files (so Mesa cannot be
    found): `simjail worker` exits 3 naming the render probe, before it connects anywhere."""
    import os
    import shutil
    import subprocess
    import sys

    from worker.sandbox.policy import default_root

    for d in ("sandbox", "seccomp"):
        shutil.copytree(default_root() / d, tmp_path / d)
    cfg = tmp_path / "sandbox" / "physics.cfg"
    text = cfg.read_text()
    assert '"/usr/share/glvnd"' in text
    cfg.write_text(
        "\n".join(ln for ln in text.splitlines() if '"/usr/share/glvnd"' not in ln) + "\n"
    )
    env = {**os.environ, "SIMJAIL_POLICY_DIR": str(tmp_path)}
    # Nothing listens there: the worker must fail before it would try to connect.
    cmd = [sys.executable, "-m", "worker.cli", "worker", "--address", "127.0.0.1:9"]
    t = time.monotonic()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    took = time.monotonic() - t
    print(f"\nworker refused to start in {took:.2f} s")
    assert r.returncode == 3, r.stderr[-3000:]
    assert "the physics jail probe failed" in r.stderr, r.stderr[-3000:]
    assert "cannot connect" not in r.stderr


def test_cli_submit_exit_codes(temporal: Any, tmp_path: Path) -> None:
    """`simjail submit` prints the workflow id; with --wait the result and `run`'s exit codes:
    1 for a FAIL (with --json exactly one SimulationResult), 2 for an invalid request."""
    import json
    import subprocess
    import sys

    address = temporal.client.service_client.config.target_host
    design = tmp_path / "crash.py"
    design.write_text("import ctypes\n\ndef build():\n    ctypes.string_at(0)\n")
    options = tmp_path / "options.yaml"
    options.write_text("render: false\nlimits: {wall_s: 1.0e9}\n")
    base = [sys.executable, "-m", "worker.cli", "submit", str(design), "--address", address]
    rid = f"cli-{uuid.uuid4().hex[:8]}"

    def sub(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *extra], capture_output=True, text=True, timeout=120, check=False
        )

    started = sub("--request-id", rid, "--no-render")
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == f"simulation-{rid}"
    waited = sub("--request-id", rid, "--no-render", "--wait", "--json")
    assert waited.returncode == 1, waited.stderr
    result = SimulationResult.model_validate_json(waited.stdout)
    assert result.failure == "CRASHED"
    assert len(waited.stdout.strip().splitlines()) == 1
    json.loads(waited.stdout)
    bad = sub("--options", str(options), "--wait")
    assert bad.returncode == 2, bad.stderr
    assert "options.limits.wall_s" in bad.stderr


def test_executions_with_the_same_request_id_never_share_artifacts(temporal: Any) -> None:
    """Two workflows with different ids and the same request id (a controller reusing an id
    for a different design): one SUCCESS, one FAIL. Each keeps its own artifacts, and each
    result.json and report say what its own result says."""
    from worker.simulation.temporal.shared import WORKFLOW_NAME

    rid = f"shared-{uuid.uuid4().hex[:8]}"
    good = drop_request("unused", duration_s=2.0, render=False).model_copy(
        update={"request_id": rid}
    )
    bad = code_request("unused", "def build():\n    return 1 / 0\n", render=False)
    bad = bad.model_copy(update={"request_id": rid})

    async def go() -> list[tuple[str, SimulationResult]]:
        handles = [
            await temporal.client.start_workflow(
                WORKFLOW_NAME,
                req,
                id=f"{name}-{rid}",
                task_queue=shared.TASK_QUEUE,
                result_type=SimulationResult,
            )
            for name, req in (("good", good), ("bad", bad))
        ]
        return [(str(h.result_run_id), await h.result()) for h in handles]

    (good_run, good_result), (bad_run, bad_result) = temporal.run(go())
    assert good_result.outcome == "SUCCESS", good_result.reason
    assert bad_result.failure == "USER_CODE_ERROR", bad_result.reason
    for run, result in ((good_run, good_result), (bad_run, bad_result)):
        prefix = temporal.artifacts / rid / run
        stored = SimulationResult.model_validate_json((prefix / "result.json").read_text())
        assert stored == result
        report = (prefix / "report.md").read_text()
        assert result.outcome in report and result.reason[:60] in report
        assert all(url.startswith(prefix.as_uri() + "/") for url in result.artifact_urls.values())
    assert "SUCCESS" not in (temporal.artifacts / rid / bad_run / "report.md").read_text()
    assert not (temporal.artifacts / rid / "result.json").exists()


def test_a_result_stored_by_an_earlier_attempt_is_returned_without_running_again(
    temporal: Any, tmp_path: Path
) -> None:
    """What an attempt whose completion was lost leaves: result.json under the execution's
    prefix. An attempt of that execution returns it (with fresh URLs) and starts no jail.
    (The execution's run id is known before any worker polls its queue, so the stored result
    is put there first; test_outages shows the same after a real server outage.)"""
    import subprocess

    queue = f"reuse-{uuid.uuid4().hex[:6]}"
    request = drop_request("reuse", duration_s=1.0, render=False)
    handle = temporal.run(simclient.submit(temporal.client, request, task_queue=queue))
    prefix = temporal.artifacts / request.request_id / str(handle.result_run_id)
    prefix.mkdir(parents=True)
    earlier = SimulationResult(
        outcome="FAIL",
        reason="Stored by an earlier attempt.",
        failure="GOAL_NOT_REACHED",  # type: ignore[arg-type]
        artifact_urls={"result": "file:///old/result.json", "report": "file:///old/report.md"},
        metrics={"wall_time_s": 12.5},
    )
    (prefix / "result.json").write_text(earlier.model_dump_json())
    cmd, env = _worker_cmd(temporal, queue)
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        result: SimulationResult = temporal.run(handle.result(), timeout=120)
    finally:
        proc.terminate()
        proc.wait(60)
    assert result.reason == "Stored by an earlier attempt."
    assert result.metrics == {"wall_time_s": 12.5}
    assert result.artifact_urls == {
        "result": (prefix / "result.json").as_uri(),
        "report": (prefix / "report.md").as_uri(),
    }
    events = [json.loads(ln)["event"] for ln in log_path.read_text().splitlines()]
    assert "activity.reused_result" in events
    assert "child.start" not in events


def test_a_worker_refuses_a_namespace_without_the_search_attributes(
    temporal: Any, tmp_path: Path
) -> None:
    """A namespace whose operator never registered SimjailOutcome & co: `simjail worker` exits
    3 with the command that registers them (the workflow would fail its tasks setting them)."""
    import subprocess

    from worker.simulation.temporal.dev import temporal_binary

    ns = f"bare-{uuid.uuid4().hex[:6]}"
    address = temporal.client.service_client.config.target_host
    created = subprocess.run(
        [str(temporal_binary()), "operator", "namespace", "create", "--namespace", ns,
         "--address", address],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    cmd, env = _worker_cmd(temporal, "unused", "--namespace", ns)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 3, r.stderr[-3000:]
    assert f"namespace '{ns}' lacks simjail's search attributes" in r.stderr
    assert (
        f"temporal operator search-attribute create --namespace {ns} --name SimjailOutcome "
        "--name SimjailFailure --name SimjailRequestId --type Keyword"
    ) in r.stderr
