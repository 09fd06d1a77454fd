"""RetryingStore against a real LocalStore whose directory really stops being writable (its
root replaced by a file, as a full or unmounted disk refuses writes; root ignores modes), then
comes back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker import metrics
from worker.errors import JobCancelled
from worker.storage import LocalStore, StorageError
from worker.storage.base import ObjectNotFound
from worker.storage.retry import RetryingStore


class Outage:
    """Makes `root` unusable (a file where the directory was) until `end()`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.aside = root.with_name(root.name + ".aside")

    def begin(self) -> None:
        self.root.rename(self.aside)
        self.root.write_text("the store is down")

    def end(self) -> None:
        self.root.unlink()
        self.aside.rename(self.root)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    r = tmp_path / "artifacts"
    r.mkdir()
    yield r


def store_errors() -> float:
    v = metrics.REGISTRY.get_sample_value("simjail_infrastructure_errors_total", {"cause": "store"})
    return v or 0.0


def test_a_write_during_an_outage_succeeds_once_the_store_is_back(root: Path) -> None:
    outage = Outage(root)
    outage.begin()
    ended = threading.Timer(2.5, outage.end)
    ended.start()
    before = store_errors()
    t = time.monotonic()
    try:
        url = RetryingStore(LocalStore(root), budget_s=60).put_bytes(
            "r/run/result.json", b"{}", "application/json"
        )
    finally:
        ended.join()
    took = time.monotonic() - t
    assert url == (root / "r/run/result.json").as_uri()
    assert (root / "r/run/result.json").read_bytes() == b"{}"
    assert took >= 2.5  # it really waited for the store
    assert store_errors() - before >= 2  # tries at 0, 1, (3) s failed


def test_an_outage_longer_than_the_budget_raises_the_store_error(root: Path) -> None:
    outage = Outage(root)
    outage.begin()
    try:
        t = time.monotonic()
        with pytest.raises(StorageError, match="cannot write"):
            RetryingStore(LocalStore(root), budget_s=2).put_bytes("r/x", b"x", "text/plain")
        took = time.monotonic() - t
    finally:
        outage.end()
    assert 2 <= took < 30


def test_a_missing_object_is_not_retried(root: Path) -> None:
    t = time.monotonic()
    with pytest.raises(ObjectNotFound):
        RetryingStore(LocalStore(root), budget_s=60).get_bytes("r/none.json", 100)
    assert time.monotonic() - t < 5


def test_a_cancel_ends_the_wait(root: Path) -> None:
    outage = Outage(root)
    outage.begin()
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    try:
        t = time.monotonic()
        with pytest.raises(JobCancelled):
            RetryingStore(LocalStore(root), budget_s=60, cancel=cancel).put_bytes(
                "r/x", b"x", "text/plain"
            )
        assert time.monotonic() - t < 30
    finally:
        outage.end()
