"""LocalStore: keys stay inside the root, writes are atomic overwrites, URLs are file://, reads
are capped and follow no link."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.storage import LocalStore, StorageError
from worker.storage.base import ObjectNotFound, ObjectTooLarge


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


def test_get_bytes_reads_back_what_was_put(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("r/run/result.json", b'{"a": 1}', "application/json")
    assert store.get_bytes("r/run/result.json", 100) == b'{"a": 1}'
    assert store.uri("r/run/result.json") == (tmp_path / "r/run/result.json").as_uri()


def test_get_bytes_of_a_missing_object_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        LocalStore(tmp_path).get_bytes("r/nothing.json", 100)
    with pytest.raises(ObjectNotFound):
        LocalStore(tmp_path / "no-root-yet").get_bytes("r/nothing.json", 100)


def test_get_bytes_refuses_more_than_asked(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("r/big", b"x" * 101, "text/plain")
    with pytest.raises(ObjectTooLarge):
        store.get_bytes("r/big", 100)
    assert store.get_bytes("r/big", 101) == b"x" * 101


def test_get_bytes_follows_no_link_and_opens_no_fifo(tmp_path: Path) -> None:
    import os

    secret = tmp_path / "secret"
    secret.write_text("not yours")
    (tmp_path / "store" / "r").mkdir(parents=True)
    (tmp_path / "store" / "r" / "link").symlink_to(secret)
    os.mkfifo(tmp_path / "store" / "r" / "fifo")
    store = LocalStore(tmp_path / "store")
    for key in ("r/link", "r/fifo"):
        with pytest.raises(StorageError) as e:
            store.get_bytes(key, 100)
        assert not isinstance(e.value, ObjectNotFound)


def test_a_root_that_is_not_a_directory_is_an_outage_not_a_missing_object(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError) as e:
        LocalStore(blocker).get_bytes("r/result.json", 100)
    assert not isinstance(e.value, ObjectNotFound)
