"""What a job leaves in the store, read back: keys per execution, result.json last and listed,
and `stored_result` for a retried attempt."""

from __future__ import annotations

import time
from pathlib import Path

from common.models.simulation import FailureKind, SimulationResult
from worker.errors import Failure
from worker.job.publish import artifact_prefix, publish, stored_result
from worker.storage import LocalStore


def publish_one(store: LocalStore, prefix: str, tmp_path: Path) -> SimulationResult:
    return publish(
        request_id="req",
        prefix=prefix,
        store=store,
        files_dir=tmp_path,
        failure=Failure(FailureKind.NO_GEOMETRY, "No solid."),
        reason="",
        metrics={},
        files={},
        phases={},
        started=time.monotonic(),
        logs="log line\n",
    )


def test_prefixes() -> None:
    assert artifact_prefix("req") == "req"
    assert artifact_prefix("req", "01a2-run") == "req/01a2-run"


def test_every_artifact_is_listed_with_a_lasting_uri(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    result = publish_one(store, "req/run-1", tmp_path)
    root = tmp_path / "store" / "req" / "run-1"
    assert result.artifact_urls == {
        "logs": (root / "logs.txt").as_uri(),
        "report": (root / "report.md").as_uri(),
        "result": (root / "result.json").as_uri(),
    }
    assert result.artifact_uris == result.artifact_urls
    assert SimulationResult.model_validate_json((root / "result.json").read_text()) == result


def test_stored_result_returns_what_the_execution_stored(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    assert stored_result(store, "req/run-1") is None
    result = publish_one(store, "req/run-1", tmp_path)
    assert stored_result(store, "req/run-1") == result
    assert stored_result(store, "req/run-2") is None  # another execution's are its own


def test_a_stored_result_that_does_not_validate_counts_as_none(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_bytes("req/run-1/result.json", b'{"outcome": "MAYBE"}', "application/json")
    assert stored_result(store, "req/run-1") is None
