"""The harness itself: a benign design passes every invariant check through the real jail."""

from __future__ import annotations

from common.models.simulation import FailureKind


def test_benign_design_succeeds_in_the_jail(run_design) -> None:  # type: ignore[no-untyped-def]
    r = run_design(
        """
        from build123d import Box, Pos
        def build():
            b = Pos(0, 0, 20) * Box(40, 40, 40)
            b.label = "b"
            return b
        """
    )
    assert r.outcome == "SUCCESS", r.reason
    assert r.policy_digest.startswith("sha256:")


def test_raising_design_is_user_code_error_in_the_jail(run_design) -> None:  # type: ignore[no-untyped-def]
    r = run_design("def build():\n    raise RuntimeError('nope')\n")
    assert r.failure == FailureKind.USER_CODE_ERROR
    assert "RuntimeError: nope" in r.reason
