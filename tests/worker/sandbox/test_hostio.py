"""copy_out against what a jail can leave in its writable directory: only a regular file of
acceptable size, named plainly, is copied; everything else is refused without blocking, without
following a link, and without leaving a partial copy behind."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.sandbox.hostio import CHUNK, UnsafeOutput, copy_out


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    src, dest = tmp_path / "out", tmp_path / "collected"
    src.mkdir()
    dest.mkdir()
    return src, dest


@pytest.fixture
def deadline() -> Iterator[None]:
    """Fail instead of hanging: SIGALRM interrupts a blocking open() or read()."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError("copy_out blocked")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(5)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_a_regular_file_is_copied_exactly(dirs: tuple[Path, Path]) -> None:
    src, dest = dirs
    data = os.urandom(3 * CHUNK + 12345)  # more than one read
    (src / "video.mp4").write_bytes(data)
    assert copy_out(src, "video.mp4", dest / "video.mp4", max_bytes=len(data)) == len(data)
    assert (dest / "video.mp4").read_bytes() == data


def test_an_empty_file_is_copied(dirs: tuple[Path, Path]) -> None:
    src, dest = dirs
    (src / "empty").write_bytes(b"")
    assert copy_out(src, "empty", dest / "empty", max_bytes=10) == 0
    assert (dest / "empty").read_bytes() == b""


def test_a_symlink_to_a_host_secret_is_refused(dirs: tuple[Path, Path]) -> None:
    src, dest = dirs
    (src / "video.mp4").symlink_to("/etc/shadow")
    with pytest.raises(UnsafeOutput, match=r"video.mp4: Too many levels of symbolic links"):
        copy_out(src, "video.mp4", dest / "video.mp4", max_bytes=1 << 30)
    assert list(dest.iterdir()) == []


def test_a_symlink_to_a_directory_is_refused(dirs: tuple[Path, Path]) -> None:
    src, dest = dirs
    (src / "video.mp4").symlink_to("/etc")
    with pytest.raises(UnsafeOutput):
        copy_out(src, "video.mp4", dest / "video.mp4", max_bytes=1 << 30)
    assert list(dest.iterdir()) == []


@pytest.mark.usefixtures("deadline")
def test_a_fifo_is_refused_without_blocking(dirs: tuple[Path, Path]) -> None:
    src, dest = dirs
    os.mkfifo(src / "video.mp4")
    with pytest.raises(UnsafeOutput, match=r"video.mp4 is not a regular file"):
        copy_out(src, "video.mp4", dest / "video.mp4", max_bytes=1 << 30)
    assert list(dest.iterdir()) == []


def test_a_directory_is_refused(dirs: tuple[Path, Path]) -> None:
    src, dest = dirs
    (src / "video.mp4").mkdir()
    with pytest.raises(UnsafeOutput, match=r"video.mp4 is not a regular file"):
        copy_out(src, "video.mp4", dest / "video.mp4", max_bytes=1 << 30)
    assert list(dest.iterdir()) == []


@pytest.mark.usefixtures("deadline")
def test_a_device_node_is_refused(dirs: tuple[Path, Path]) -> None:
    """A character device like /dev/zero (1, 5): endless data if it were read."""
    src, dest = dirs
    os.mknod(src / "video.mp4", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    with pytest.raises(UnsafeOutput, match=r"video.mp4 is not a regular file"):
        copy_out(src, "video.mp4", dest / "video.mp4", max_bytes=1 << 30)
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize("name", ["../secret", "sub/video.mp4", "/etc/shadow", "", ".", ".."])
def test_a_name_that_is_not_a_plain_file_name_is_refused(
    dirs: tuple[Path, Path], name: str
) -> None:
    src, dest = dirs
    (src / "sub").mkdir()
    (src / "sub" / "video.mp4").write_bytes(b"x")
    (src.parent / "secret").write_bytes(b"secret")
    with pytest.raises(UnsafeOutput, match=r"is not a plain file name"):
        copy_out(src, name, dest / "out", max_bytes=1 << 30)
    assert list(dest.iterdir()) == []


def test_a_missing_file_is_refused(dirs: tuple[Path, Path]) -> None:
    src, dest = dirs
    with pytest.raises(UnsafeOutput, match=r"video.mp4: No such file or directory"):
        copy_out(src, "video.mp4", dest / "video.mp4", max_bytes=10)


def test_a_file_over_the_cap_is_refused_before_reading(dirs: tuple[Path, Path]) -> None:
    """A sparse 64 GiB file costs nothing to make: it is refused from its size alone."""
    src, dest = dirs
    with open(src / "video.mp4", "wb") as f:
        f.truncate(64 << 30)
    with pytest.raises(UnsafeOutput, match=f"video.mp4 is {64 << 30} bytes, over the cap of 1000"):
        copy_out(src, "video.mp4", dest / "video.mp4", max_bytes=1000)
    assert list(dest.iterdir()) == []


def test_a_file_exactly_at_the_cap_is_copied(dirs: tuple[Path, Path]) -> None:
    src, dest = dirs
    with open(src / "video.mp4", "wb") as f:
        f.truncate(2 * CHUNK)  # sparse: reads as zeros
    assert copy_out(src, "video.mp4", dest / "v", max_bytes=2 * CHUNK) == 2 * CHUNK
    assert (dest / "v").read_bytes() == bytes(2 * CHUNK)


@pytest.mark.parametrize(
    ("directory", "name", "cap"),
    [
        (f"/proc/{os.getpid()}", "status", 100),  # refused at the first read
        ("/proc", "kallsyms", 2 * CHUNK),  # ~5 MB: refused after two chunks were written
    ],
)
def test_a_file_that_grows_past_the_cap_while_read_is_refused_and_not_kept(
    tmp_path: Path, directory: str, name: str, cap: int
) -> None:
    """fstat said it fit; the data kept coming. /proc files are real instances: regular files
    whose size reads as 0 and whose content does not."""
    st = os.stat(Path(directory) / name)  # a real directory: /proc/self is a symlink
    assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    dest = tmp_path / name
    with pytest.raises(UnsafeOutput, match=f"{name} grew over the cap of {cap} bytes"):
        copy_out(Path(directory), name, dest, max_bytes=cap)
    assert not dest.exists()  # no partial copy left behind
