"""Start-up refusals that need no server: a worker whose budgets do not fit the workflow, `simjail
dev` on a port in use."""

from __future__ import annotations

import subprocess
import sys

import pytest

from worker.errors import InfrastructureError
from worker.settings import Settings
from worker.simulation.temporal.shared import WORKFLOW_BUDGETS, check_budgets
from worker.simulation.temporal.worker import prepare_worker


def test_default_budgets_fit_the_workflow() -> None:
    assert check_budgets(Settings().limits) is None
    assert check_budgets(Settings(build_wall_s=30, physics_wall_s=60).limits) is None


def test_a_worker_whose_physics_budget_outlasts_the_workflow_refuses_to_start() -> None:
    over = WORKFLOW_BUDGETS.physics_wall_s + 1
    with pytest.raises(InfrastructureError) as e:
        prepare_worker(Settings(physics_wall_s=over, sandbox="unsafe-subprocess"))
    assert e.value.message.startswith(
        "this worker's jail budgets do not fit SimulationWorkflow's timeouts "
        f"(physics_wall_s = {over:g} s exceeds the workflow's 600 s)"
    )


def test_simjail_worker_with_too_long_a_build_budget_exits_3() -> None:
    env = {"SIMJAIL_BUILD_WALL_S": "121", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "worker.cli", "worker", "--address", "127.0.0.1:9"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 3, r.stderr
    assert "build_wall_s = 121 s exceeds the workflow's 120 s" in r.stderr
    assert "cannot connect" not in r.stderr


@pytest.mark.parametrize("which", ["--port", "--ui-port"])
def test_simjail_dev_refuses_a_port_in_use_before_starting_anything(which: str) -> None:
    """Something listens on the port: `simjail dev` exits 3 naming it, instead of starting a
    server that cannot bind and attaching to whatever listens there."""
    import socket

    import psutil

    from worker.metrics import free_loopback_port

    ports = {"--port": free_loopback_port(), "--ui-port": free_loopback_port()}
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports[which]))
        squatter.listen()
        cmd = [sys.executable, "-m", "worker.cli", "dev"]
        cmd += ["--port", str(ports["--port"]), "--ui-port", str(ports["--ui-port"])]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 3, r.stderr
    assert f"port 127.0.0.1:{ports[which]} is already in use" in r.stderr
    assert r.stdout == ""
    servers = [
        p.info["cmdline"]
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and str(ports["--port"]) in " ".join(p.info["cmdline"])
    ]
    assert servers == []
