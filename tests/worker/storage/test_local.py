"""LocalStore: keys stay inside the root, writes are atomic overwrites, URLs are file://."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.storage import LocalStore, StorageError


def test_put_and_overwrite(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    url = store.put_bytes("req-1/report.md", b"one", "text/markdown")
    assert url == (tmp_path / "req-1" / "report.md").as_uri() == store.url("req-1/report.md")
    store.put_bytes("req-1/report.md", b"two", "text/markdown")
    assert (tmp_path / "req-1" / "report.md").read_bytes() == b"two"
    assert sorted(p.name for p in (tmp_path / "req-1").iterdir()) == ["report.md"]


def test_put_file_copies(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x00\x01")
    store = LocalStore(tmp_path / "store")
    store.put_file("r/video.mp4", src, "video/mp4")
    assert (tmp_path / "store" / "r" / "video.mp4").read_bytes() == b"\x00\x01"


@pytest.mark.parametrize("key", ["../escape", "r/../../x", "/abs", "", "r//x", ".hidden/x"])
def test_keys_cannot_leave_the_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(StorageError, match="invalid artifact key"):
        LocalStore(tmp_path).put_bytes(key, b"x", "text/plain")


def test_unwritable_root_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="cannot write"):
        LocalStore(blocker).put_bytes("r/x", b"x", "text/plain")
