"""Hostile designs that crash, exit or raise in ways ordinary code does not.

Each must end as one exact, user-caused failure kind: never an infrastructure error (which would
make the controller retry), never a dead worker. The jailed program is PID 1 of its namespace,
which changes how some signals land (DESIGN.md §8).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import pytest
from pydantic import ValidationError

from common.models.simulation import FailureKind, SimulationResult

pytestmark = pytest.mark.slow

RunDesign = Callable[..., SimulationResult]


def logs_of(r: SimulationResult) -> str:
    return Path(urlparse(r.artifact_urls["logs"]).path).read_text()


def test_segfault_via_ctypes_is_crashed(run_design: RunDesign) -> None:
    r = run_design(
        """
        import ctypes
        def build():
            ctypes.string_at(0)
        """
    )
    assert r.failure == FailureKind.CRASHED
    assert r.reason == "The design build step was killed by SIGSEGV."


def test_abort_is_crashed(run_design: RunDesign) -> None:
    # As PID 1 the process ignores its own SIGABRT; glibc's abort() then faults on purpose,
    # so the jail ends by SIGSEGV (DESIGN.md §8), still a crash and never a result.
    r = run_design(
        """
        import os
        def build():
            os.abort()
        """
    )
    assert r.failure == FailureKind.CRASHED
    assert r.reason == "The design build step was killed by SIGSEGV."


def test_os_exit_zero_before_any_result_is_no_result(run_design: RunDesign) -> None:
    r = run_design(
        """
        import os
        def build():
            os._exit(0)
        """
    )
    assert r.failure == FailureKind.NO_RESULT
    assert r.reason == "The design build step exited without a result."


def test_sys_exit_inside_build_is_user_code_error(run_design: RunDesign) -> None:
    r = run_design(
        """
        import sys
        def build():
            sys.exit(0)
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    assert r.reason == "The design's build failed: «SystemExit: 0 (design.py, line 4, in build)»"


def test_sys_exit_at_module_level_is_user_code_error(run_design: RunDesign) -> None:
    r = run_design(
        """
        import sys
        sys.exit("leaving before build()")
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    assert r.reason == (
        "The design's build failed: «SystemExit: leaving before build() (design.py, line 3, in "
        "<module>)»"
    )


def test_keyboard_interrupt_is_user_code_error(run_design: RunDesign) -> None:
    r = run_design(
        """
        def build():
            raise KeyboardInterrupt("ctrl-c from the design")
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    assert r.reason == (
        "The design's build failed: «KeyboardInterrupt: ctrl-c from the design (design.py, "
        "line 3, in build)»"
    )


def test_custom_base_exception_is_user_code_error(run_design: RunDesign) -> None:
    r = run_design(
        """
        class Escape(BaseException):
            pass
        def build():
            raise Escape("not an Exception")
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    assert r.reason == (
        "The design's build failed: «design.Escape: not an Exception (design.py, line 5, in build)»"
    )


def test_exception_whose_str_raises_is_user_code_error(run_design: RunDesign) -> None:
    r = run_design(
        """
        class Sneaky(Exception):
            def __str__(self):
                raise SystemExit(0)
        def build():
            raise Sneaky()
        """
    )
    assert r.failure == FailureKind.USER_CODE_ERROR
    assert r.reason.startswith("The design's build failed: «design.Sneaky: <exception str() fai")


def test_nul_bytes_in_source_are_syntax_error(run_design: RunDesign) -> None:
    r = run_design("def build():\n    return 1\x00\n")
    assert r.failure == FailureKind.SYNTAX_ERROR
    assert r.reason == (
        "The design's build failed: «SyntaxError: source code string cannot contain null bytes "
        "(design.py)»"
    )


def test_invalid_utf8_decoded_with_replacement_is_syntax_error(run_design: RunDesign) -> None:
    # What the CLI does with a file that is not UTF-8: decode with U+FFFD replacements.
    code = b"def build():\n    return 1 \xff\xfe\n".decode("utf-8", "replace")
    assert "\ufffd" in code
    r = run_design(code)
    assert r.failure == FailureKind.SYNTAX_ERROR
    assert r.reason == (
        "The design's build failed: «SyntaxError: invalid character '\ufffd' (U+FFFD) "
        "(design.py, line 2)»"
    )


def test_lone_surrogate_source_is_refused_before_any_jail(run_design: RunDesign) -> None:
    # Bytes decoded with surrogateescape are not UTF-8 text: the request itself is malformed
    # (a non-retryable error naming the field), not a FAIL of a job that never ran.
    code = b"def build():\n    return '\xff'\n".decode("utf-8", "surrogateescape")
    with pytest.raises(ValidationError, match="source code is not valid UTF-8 text"):
        run_design(code)


def test_exit_status_255_is_crashed_not_an_infrastructure_error(run_design: RunDesign) -> None:
    # 255 is also nsjail's own failure status; the design's 255 must still be its own crash.
    r = run_design(
        """
        import os
        def build():
            os._exit(255)
        """
    )
    assert r.outcome == "FAIL"
    assert r.failure == FailureKind.CRASHED
    assert r.reason == "The design build step exited with status 255 before finishing."


def test_forged_nsjail_log_lines_then_255_are_crashed(run_design: RunDesign) -> None:
    # The design prints what nsjail logs when it cannot launch a child: the supervisor reads
    # nsjail's log from its own pipe, never the design's output, so this is still a crash.
    r = run_design(
        """
        import os, sys
        LINES = ("[E][2026-01-01T00:00:00+0000] Couldn't launch the child process\\n"
                 "[F][2026-01-01T00:00:00+0000] Launching child process failed\\n"
                 "[I][2026-01-01T00:00:00+0000] run time >= time limit\\n")
        def build():
            sys.stdout.write(LINES)
            sys.stderr.write(LINES)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(255)
        """
    )
    assert r.failure == FailureKind.CRASHED
    assert r.reason == "The design build step exited with status 255 before finishing."
    assert "Couldn't launch the child process" in logs_of(r)  # the forgery was delivered
