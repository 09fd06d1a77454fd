"""Runs inside a build child (jail): executes one untrusted build123d source and sends back its
geometry as a single `result` frame, or an `error` frame naming the user's mistake.

Everything this process reports is untrusted: the agent's code ran here and can write to the
frame pipe itself. The supervisor therefore accepts only geometry (validated) or a user-caused
error kind from it; a forged frame can only hurt the forger.

Every mistake is raised as `Failed` where it is found and sent as an error frame in one place,
`main`.
"""

from __future__ import annotations

import re
import sys
import traceback
import types
from pathlib import Path
from typing import Any

from common.models.simulation import FailureKind
from worker.errors import Failed
from worker.sandbox.child import exit_now, parse_args, send
from worker.sandbox.protocol import BuildJob, ErrorFrame, ResultFrame
from worker.simulation.geometry import Geometry
from worker.simulation.imports import defer_unused_imports


def _where(tb: types.TracebackType | None, filename: str) -> str:
    """'(design.py, line 7, in build)' for the innermost frame of the user's file."""
    found = ""
    for fs in traceback.extract_tb(tb):
        if fs.filename == filename:
            found = f" ({filename}, line {fs.lineno}, in {fs.name})"
    return found


STUBS = Path(__file__).resolve().parent / "stubs"
"""Stand-ins for modules published designs import but a jail cannot run (ocp_vscode, the
viewer): simjail's own code, put first on the jailed sys.path, never installed as packages."""


def use_stubs() -> None:
    if str(STUBS) not in sys.path:
        sys.path.insert(0, str(STUBS))


def _shown_objects() -> list[Any]:
    """What the design showed through the ocp_vscode stand-in, if it imported it."""
    viewer = sys.modules.get("ocp_vscode")
    shown = getattr(viewer, "shown", None)
    if viewer is None or getattr(viewer, "__file__", "").find(str(STUBS)) != 0 or shown is None:
        return []
    return [obj for obj, _ in shown()]


def run_code(code: str, filename: str, module_name: str) -> tuple[Any, Any]:
    """Execute the source; return what it built and its PARTS metadata. What it built is, in
    order: what `build()` returns, else the module-level `result`, else what the design showed
    with ocp_vscode's `show()` / `show_object()` / `show_all()` (README "Writing a design")."""
    try:
        compiled = compile(code, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as e:  # ValueError: NUL bytes in the source
        if isinstance(e, SyntaxError):
            # NUL bytes are a SyntaxError without a line (Python >= 3.12).
            where = filename if e.lineno is None else f"{filename}, line {e.lineno}"
            raise Failed(FailureKind.SYNTAX_ERROR, f"SyntaxError: {e.msg} ({where})") from None
        raise Failed(FailureKind.SYNTAX_ERROR, f"SyntaxError: {e}") from None
    module = types.ModuleType(module_name)
    module.__file__ = filename
    ns = module.__dict__
    found = False
    obj: Any = None
    try:
        exec(compiled, ns)
        build = ns.get("build")
        if callable(build):
            obj, found = build(), True
        elif "result" in ns:
            obj, found = ns["result"], True
        else:
            shown = _shown_objects()
            obj, found = shown, bool(shown)
    except BaseException as e:  # the user's code may raise anything, SystemExit included
        traceback.print_exc(file=sys.stderr)
        # All of it on one line, notes included: the supervisor quotes it as the design's own.
        text = " ".join(ln.strip() for ln in traceback.format_exception_only(e) if ln.strip())
        raise Failed(
            FailureKind.USER_CODE_ERROR, f"{text}{_where(e.__traceback__, filename)}"[:3900]
        ) from None
    if not found:
        raise Failed(
            FailureKind.NO_GEOMETRY,
            f"{filename} defines neither build() nor a module-level result, and shows nothing "
            "with ocp_vscode's show()",
        )
    return obj, ns.get("PARTS", {})


def read_step(path: Path) -> Any:
    """The STEP file's shapes, each leaf labelled with its product name (made a valid label,
    and unique: a repeated name gets `_2`, `_3`, ... in tree order; many exporters name every
    product `COMPOUND`)."""
    from build123d import import_step

    try:
        shape = import_step(str(path))
    except Exception as e:
        raise Failed(
            FailureKind.INVALID_GEOMETRY, f"the STEP file could not be read: {e}"[:3900]
        ) from None
    leaves = shape.leaves
    names = [re.sub(r"[^A-Za-z0-9_.:-]", "_", str(leaf.label or ""))[:58] for leaf in leaves]
    taken = set(names)
    used: set[str] = set()
    for leaf, base in zip(leaves, names, strict=True):
        if not base:
            continue  # no product name: a generated one (part_<n>)
        name, n = base, 1
        while name in used or (name != base and name in taken):
            n += 1
            name = f"{base}_{n}"
        used.add(name)
        leaf.label = name
    return shape


def run(job: BuildJob, job_dir: Path) -> Geometry:
    """The geometry of the job's source; raises Failed for every mistake of the source."""
    from pydantic import ValidationError

    from worker.simulation.cad import extract_geometry

    if job.code is not None:
        obj, parts_meta = run_code(job.code, job.filename, job.source_kind)
    else:
        assert job.step_file is not None
        obj, parts_meta = read_step(job_dir / job.step_file), {}
    if not isinstance(parts_meta, dict):
        raise Failed(FailureKind.INVALID_GEOMETRY, "PARTS must be a dict")
    try:
        return extract_geometry(
            obj,
            parts_meta,
            source=job.source_kind,
            max_parts=job.max_parts,
            max_triangles=job.max_triangles,
            tessellation=job.tessellation,
        )
    except Failed:
        raise
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise Failed(
            FailureKind.INVALID_GEOMETRY,
            f"PARTS metadata is invalid at {where or 'top level'}: {err['msg']}"[:3900],
        ) from None
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        raise Failed(
            FailureKind.INVALID_GEOMETRY,
            f"the built object could not be turned into parts: {type(e).__name__}: {e}"[:3900],
        ) from None


def main() -> None:
    defer_unused_imports()  # sklearn only if the design's code uses it (in a zygote: done)
    args = parse_args()  # --out is unused here: geometry goes on the frame pipe
    job = BuildJob.read(args.job_path)
    chan = args.channel()
    sys.setrecursionlimit(10_000)
    use_stubs()
    try:
        geom = run(job, args.job_path.parent)
    except Failed as f:
        send(chan, ErrorFrame.of(f.failure))
    else:
        send(chan, ResultFrame(payload=geom.model_dump(mode="json")))
    chan.close()
    exit_now()


if __name__ == "__main__":
    main()
