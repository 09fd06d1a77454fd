"""Worker start-up refusals that need no server: budgets that do not fit the workflow."""

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
