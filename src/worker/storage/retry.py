"""A store whose operations ride out a store outage: `RetryingStore(store, budget_s=60)`.

Each operation that fails with a StorageError that may be transient (unreachable, throttled,
refused, a directory that cannot be written) is tried again after 1, 2, 4, 8, 16, then every
30 s, until `budget_s` has passed since its first try; then the last error is raised (an
InfrastructureError: the attempt fails and Temporal retries it). Errors that trying again
cannot change (no such object, too large, outside the store, an invalid key) are raised at
once. Every failed try is logged (`store.retry`) and counted in the metrics
(`simjail_infrastructure_errors_total{cause="store"}`). A set `cancel` event ends the wait
with JobCancelled. Writes are idempotent (a key is overwritten), so trying again is safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from worker import metrics
from worker.errors import JobCancelled
from worker.storage.base import PERMANENT_ERRORS, ArtifactStore, StorageError

log = structlog.get_logger("simjail.store")

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0


class RetryingStore:
    """An ArtifactStore that retries `store`'s operations (see the module's docstring)."""

    def __init__(
        self,
        store: ArtifactStore,
        *,
        budget_s: float,
        cancel: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.budget_s = budget_s
        self.cancel = cancel or threading.Event()

    def _retry[T](self, what: str, op: Callable[[], T]) -> T:
        started = time.monotonic()
        delay = FIRST_DELAY_S
        tries = 0
        while True:
            tries += 1
            try:
                result = op()
            except PERMANENT_ERRORS:
                raise
            except StorageError as e:
                metrics.infrastructure_error("store")
                left = self.budget_s - (time.monotonic() - started)
                if left <= 0:
                    log.error("store.gave_up", op=what, tries=tries, error=e.message)
                    raise
                wait = min(delay, left)
                log.warning(
                    "store.retry", op=what, tries=tries, retry_in_s=round(wait, 1), error=e.message
                )
                if self.cancel.wait(wait):
                    raise JobCancelled("the job was cancelled while the store was down") from e
                delay = min(delay * 2, MAX_DELAY_S)
                continue
            if tries > 1:
                log.info("store.recovered", op=what, tries=tries)
            return result

    def put_file(self, key: str, path: Path, content_type: str) -> str:
        return self._retry(f"put {key}", lambda: self.store.put_file(key, path, content_type))

    def put_bytes(self, key: str, data: bytes, content_type: str) -> str:
        return self._retry(f"put {key}", lambda: self.store.put_bytes(key, data, content_type))

    def get_bytes(self, key: str, max_bytes: int) -> bytes:
        return self._retry(f"get {key}", lambda: self.store.get_bytes(key, max_bytes))

    def read_uri(self, uri: str, max_bytes: int) -> bytes:
        return self._retry(f"read {uri[:200]}", lambda: self.store.read_uri(uri, max_bytes))

    def url(self, key: str) -> str:
        return self._retry(f"sign {key}", lambda: self.store.url(key))

    def uri(self, key: str) -> str:
        return self.store.uri(key)
