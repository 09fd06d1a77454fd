"""Host-side reads of files a jail wrote. The jail controls the directory: any name in it may be
a symlink to a host secret, a FIFO that blocks forever, a device, or a file that grows while we
read. `copy_out` opens with O_NOFOLLOW | O_NONBLOCK, accepts only a regular file, caps the size,
and copies from the open descriptor, so a swap after the check changes nothing.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

CHUNK = 1 << 20


class UnsafeOutput(ValueError):
    """The jail left something other than a regular file of acceptable size under that name."""


def copy_out(src_dir: Path, name: str, dest: Path, max_bytes: int) -> int:
    """Copy `src_dir/name` (a plain name, no slashes) to `dest`; return its size."""
    if "/" in name or name in ("", ".", ".."):
        raise UnsafeOutput(f"{name!r} is not a plain file name")
    dir_fd = os.open(src_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError as e:  # ELOOP: a symlink; ENXIO: a FIFO without writer; ENOENT
            raise UnsafeOutput(f"{name}: {e.strerror}") from None
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeOutput(f"{name} is not a regular file")
        if st.st_size > max_bytes:
            raise UnsafeOutput(f"{name} is {st.st_size} bytes, over the cap of {max_bytes}")
        total = 0
        try:
            with open(dest, "wb") as out:
                while chunk := os.read(fd, CHUNK):
                    total += len(chunk)
                    if total > max_bytes:  # it grew after fstat
                        raise UnsafeOutput(f"{name} grew over the cap of {max_bytes} bytes")
                    out.write(chunk)
        except BaseException:
            dest.unlink(missing_ok=True)  # a refused file leaves no partial copy behind
            raise
        return total
    finally:
        os.close(fd)


def read_capped(path: Path, max_bytes: int) -> bytes:
    """The bytes of `path`, a regular file of at most `max_bytes` (no link followed, no FIFO
    blocked on): for files a jail's output went into, such as the environment cache."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as e:  # ELOOP: a symlink; ENXIO: a FIFO without writer
        raise UnsafeOutput(f"{path.name}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeOutput(f"{path.name} is not a regular file")
        if st.st_size > max_bytes:
            raise UnsafeOutput(f"{path.name} is {st.st_size} bytes, over the cap of {max_bytes}")
        data = bytearray()
        while chunk := os.read(fd, CHUNK):
            data += chunk
            if len(data) > max_bytes:
                raise UnsafeOutput(f"{path.name} grew over the cap of {max_bytes} bytes")
        return bytes(data)
    finally:
        os.close(fd)
