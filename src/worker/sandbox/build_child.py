"""Runs inside a build child (jail): executes one untrusted build123d source and sends back its
geometry as a single `result` frame, or an `error` frame naming the user's mistake.

Everything this process reports is untrusted: the agent's code ran here and can write to the
frame pipe itself. The supervisor therefore accepts only geometry (validated) or a user-caused
error kind from it; a forged frame can only hurt the forger.
"""

from __future__ import annotations

import sys
import traceback
import types
from pathlib import Path
from typing import Any, BinaryIO

from worker.sandbox.child import exit_now, parse_args
from worker.sandbox.child import send as _send


def _where(tb: types.TracebackType | None, filename: str) -> str:
    """'(design.py, line 7, in build)' for the innermost frame of the user's file."""
    found = ""
    for fs in traceback.extract_tb(tb):
        if fs.filename == filename:
            found = f" ({filename}, line {fs.lineno}, in {fs.name})"
    return found


def run(job: dict[str, Any], chan: BinaryIO, job_dir: Path) -> None:
    kind = job["source_kind"]
    filename = job["filename"]
    code: str | None = job.get("code")
    if code is not None:
        try:
            compiled = compile(code, filename, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as e:  # ValueError: NUL bytes in the source
            if isinstance(e, SyntaxError):
                # NUL bytes are a SyntaxError without a line (Python >= 3.12).
                where = filename if e.lineno is None else f"{filename}, line {e.lineno}"
                msg = f"SyntaxError: {e.msg} ({where})"
            else:
                msg = f"SyntaxError: {e}"
            _send(chan, {"type": "error", "kind": "SYNTAX_ERROR", "message": msg})
            return
        module = types.ModuleType(kind)
        module.__file__ = filename
        ns = module.__dict__
        try:
            exec(compiled, ns)
            build = ns.get("build")
            if callable(build):
                obj = build()
            elif "result" in ns:
                obj = ns["result"]
            else:
                _send(
                    chan,
                    {
                        "type": "error",
                        "kind": "NO_GEOMETRY",
                        "message": f"{filename} defines neither build() nor a module-level result",
                    },
                )
                return
        except BaseException as e:  # the user's code may raise anything, SystemExit included
            traceback.print_exc(file=sys.stderr)
            last = traceback.format_exception_only(e)[-1].strip()
            msg = f"{last}{_where(e.__traceback__, filename)}"
            _send(chan, {"type": "error", "kind": "USER_CODE_ERROR", "message": msg[:3900]})
            return
        parts_meta = ns.get("PARTS", {})
    else:
        from build123d import import_step

        try:
            obj = import_step(str(job_dir / job["step_file"]))
        except Exception as e:
            msg = f"the STEP file could not be read: {e}"
            _send(chan, {"type": "error", "kind": "INVALID_GEOMETRY", "message": msg[:3900]})
            return
        parts_meta = {}

    from pydantic import ValidationError

    from worker.simulation.cad import GeometryLimit, NoGeometry, extract_geometry

    if not isinstance(parts_meta, dict):
        _send(
            chan,
            {"type": "error", "kind": "INVALID_GEOMETRY", "message": "PARTS must be a dict"},
        )
        return
    try:
        geom = extract_geometry(
            obj,
            parts_meta,
            source=kind,
            max_parts=job.get("max_parts"),
            max_triangles=job.get("max_triangles"),
        )
    except NoGeometry as e:
        _send(chan, {"type": "error", "kind": "NO_GEOMETRY", "message": str(e)})
        return
    except GeometryLimit as e:
        msg = f"The geometry was rejected: {e}."
        _send(chan, {"type": "error", "kind": "GEOMETRY_LIMIT", "message": msg})
        return
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        msg = f"PARTS metadata is invalid at {where or 'top level'}: {err['msg']}"
        _send(chan, {"type": "error", "kind": "INVALID_GEOMETRY", "message": msg[:3900]})
        return
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        msg = f"the built object could not be turned into parts: {type(e).__name__}: {e}"
        _send(chan, {"type": "error", "kind": "INVALID_GEOMETRY", "message": msg[:3900]})
        return
    _send(chan, {"type": "result", "payload": geom.model_dump(mode="json")})


def main() -> None:
    args = parse_args()  # --out is unused here: geometry goes on the frame pipe
    job = args.job()
    chan = args.channel()
    sys.setrecursionlimit(10_000)
    run(job, chan, args.job_path.parent)
    chan.close()
    exit_now()


if __name__ == "__main__":
    main()
