"""InvalidRequest.from_validation: the one sentence both the CLI and the workflow give for a
request that does not validate."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from common.models.simulation import SimulationRequest
from worker.errors import MAX_VALIDATION_ERRORS, InvalidRequest


def invalid(data: object) -> InvalidRequest:
    with pytest.raises(ValidationError) as e:
        SimulationRequest.model_validate(data)
    return InvalidRequest.from_validation(e.value)


def test_it_names_the_field_and_never_quotes_the_value() -> None:
    msg = invalid({"request_id": "a", "design": {"code": "x"}, "options": {"fps": "SECRET"}})
    assert msg.message.startswith("invalid request: options.fps: Input should be")
    assert "SECRET" not in msg.message


def test_a_field_name_chosen_by_the_sender_is_escaped() -> None:
    msg = invalid({"request_id": "a", "design": {"code": "x"}, "\x1b[32mSUCCESS\x1b[0m": 1})
    assert "\x1b" not in msg.message
    assert "\\x1b[32mSUCCESS" in msg.message


def test_many_errors_are_capped() -> None:
    data = {"request_id": "a", "design": {"code": "x"}, **{f"f{i}": i for i in range(30)}}
    msg = invalid(data).message
    assert msg.count("Extra inputs are not permitted") == MAX_VALIDATION_ERRORS
    assert msg.endswith(f"and {30 - MAX_VALIDATION_ERRORS} more")
