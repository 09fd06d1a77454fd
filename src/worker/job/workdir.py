"""A job's own directory: made when the job starts, removed when it ends, whatever happened.

`<tmp>/simjail-<request id>-XXXX/` holds `.owner` (the worker's pid), one read-only input
directory per child (`build-design/`, `build-environment/`, `physics/`), the physics jail's one
writable directory (`out/`) and the files copied safely out of it (`collected/`). A worker
that died without cleaning up leaves it behind; `remove_stale_job_dirs` removes those of dead
owners at the next worker's start.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from types import TracebackType

from worker.owners import OWNER_FILE, mark_owner, owner_alive

JOB_DIR_PREFIX = "simjail-"


class JobDir:
    """Use as a context manager: `with JobDir(request_id) as d: d.input("physics")`."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.path = Path("/nonexistent")

    def __enter__(self) -> JobDir:
        self.path = Path(tempfile.mkdtemp(prefix=f"{JOB_DIR_PREFIX}{self.request_id[:32]}-"))
        try:
            # Traversable but not listable by others: the jail's uid reaches its own input
            # directory by name (nsjail binds it as that uid), nothing more.
            self.path.chmod(0o711)
            mark_owner(self.path)
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        shutil.rmtree(self.path, ignore_errors=True)  # never follows links a jail planted

    def input(self, name: str) -> Path:
        """A fresh directory for one child's inputs: readable by the jail's user, writable by
        none (the jail mounts it read-only at /job)."""
        d = self.path / name
        d.mkdir()
        d.chmod(0o755)
        return d

    def scratch(self, name: str) -> Path:
        """A fresh directory of the worker's own (the jail's writable `out`, `collected`)."""
        d = self.path / name
        d.mkdir()
        return d


def remove_stale_job_dirs(tmpdir: Path | None = None) -> list[Path]:
    """Remove the job directories (`<tmp>/simjail-*` with an owner file) whose worker process
    is no longer alive: what a SIGKILLed worker left. Directories of live workers, directories
    without a readable owner file (probes, other tools) and anything not owned by this user are
    left alone. Call it at worker start, before this process runs any job."""
    base = tmpdir or Path(tempfile.gettempdir())
    removed = []
    for d in sorted(base.glob(f"{JOB_DIR_PREFIX}*")):
        try:
            st = d.lstat()
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                continue
            marker = d / OWNER_FILE
            mst = marker.lstat()
            if not stat.S_ISREG(mst.st_mode) or mst.st_uid != os.geteuid() or mst.st_size > 32:
                continue
            pid = int(marker.read_text().strip())
        except (OSError, ValueError):
            continue
        if not owner_alive(pid):
            shutil.rmtree(d, ignore_errors=True)  # never follows links the jail planted
            removed.append(d)
    return removed
