"""The public contract: what is refused (naming the field), the documented defaults, and that a
valid request or result survives a JSON round trip unchanged."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from common.models.simulation import (
    MAX_CODE_BYTES,
    MAX_DURATION_S,
    MAX_STEP_BYTES,
    MAX_URI_CHARS,
    Box,
    CadSource,
    FailureKind,
    Limits,
    Objectives,
    SimOptions,
    SimulationRequest,
    SimulationResult,
)

NAN, INF = float("nan"), float("inf")


def errors_of(model: type[BaseModel], data: Any, *, json: bool = False) -> list[str]:
    """Every error as 'dotted.loc: message', the form the CLI prints."""
    with pytest.raises(ValidationError) as exc:
        if json:
            model.model_validate_json(data)
        else:
            model.model_validate(data)
    return [
        f"{'.'.join(str(x) for x in e['loc']) or '<model>'}: {e['msg']}" for e in exc.value.errors()
    ]


def assert_rejected(
    model: type[BaseModel], data: Any, loc: str, msg: str, *, json: bool = False
) -> None:
    """`data` is refused with exactly one error at `loc` whose message contains `msg`."""
    errs = errors_of(model, data, json=json)
    assert len(errs) == 1, errs
    got_loc, _, got_msg = errs[0].partition(": ")
    assert got_loc == loc, errs
    assert msg in got_msg, errs


def request(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"request_id": "r1", "design": {"code": "result = 1"}}
    base.update(kw)
    return base


ZONE = {"name": "pad", "kind": "forbid", "min": [0, 0, 0], "max": [1, 1, 1]}


# --- unknown fields ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        (request(bogus=1), "bogus"),
        (request(design={"code": "x", "lang": "py"}), "design.lang"),
        (request(objectives={"zones": [{**ZONE, "colour": "red"}]}), "objectives.zones.0.colour"),
        (
            request(objectives={"bounds": {"min": [0, 0, 0], "max": [1, 1, 1], "name": "b"}}),
            "objectives.bounds.name",
        ),
        (request(options={"jitter": {"runs": 1, "sigma": 2}}), "options.jitter.sigma"),
        (request(options={"limits": {"cpu_s": 5}}), "options.limits.cpu_s"),
        (
            request(options={"controls": [{"actuator": "a", "kind": "constant", "gain": 1}]}),
            "options.controls.0.gain",
        ),
    ],
)
def test_unknown_field_is_refused_by_name(data: dict[str, Any], loc: str) -> None:
    assert_rejected(SimulationRequest, data, loc, "Extra inputs are not permitted")


def test_unknown_result_field_is_refused() -> None:
    assert_rejected(
        SimulationResult,
        {"outcome": "SUCCESS", "reason": "ok", "verdict": "SUCCESS"},
        "verdict",
        "Extra inputs are not permitted",
    )


# --- non-finite numbers --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
@pytest.mark.parametrize(
    ("build", "loc"),
    [
        (lambda v: {"zones": [{**ZONE, "min": [v, 0, 0]}]}, "zones.0.min.0"),
        (lambda v: {"zones": [{**ZONE, "max": [1, 1, v]}]}, "zones.0.max.2"),
        (lambda v: {"bounds": {"min": [0, v, 0], "max": [1, 1, 1]}}, "bounds.min.1"),
        (lambda v: {"goal_hold_s": v}, "goal_hold_s"),
    ],
)
def test_objectives_refuse_non_finite(build: Any, loc: str, bad: float) -> None:
    assert_rejected(Objectives, build(bad), loc, "finite number")


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
@pytest.mark.parametrize(
    ("build", "loc"),
    [
        (lambda v: {"duration_s": v}, "duration_s"),
        (lambda v: {"timestep_s": v}, "timestep_s"),
        (lambda v: {"jitter": {"position_mm": v}}, "jitter.position_mm"),
        (lambda v: {"limits": {"wall_s": v}}, "limits.wall_s"),
        (
            lambda v: {"controls": [{"actuator": "m", "kind": "sine", "amplitude": v}]},
            "controls.0.amplitude",
        ),
        (
            lambda v: {"controls": [{"actuator": "m", "kind": "step", "after": v}]},
            "controls.0.after",
        ),
    ],
)
def test_options_refuse_non_finite(build: Any, loc: str, bad: float) -> None:
    assert_rejected(SimOptions, build(bad), loc, "finite number")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_json_non_finite_literals_are_refused(literal: str) -> None:
    assert_rejected(SimOptions, f'{{"duration_s": {literal}}}', "duration_s", "finite", json=True)
    zone = f'{{"name":"z","kind":"forbid","min":[0,0,0],"max":[1,{literal},1]}}'
    assert_rejected(
        Objectives, f'{{"zones":[{zone}]}}', "zones.0.max.1", "finite number", json=True
    )


# --- boxes and zones -----------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("delta", [0.0, -1.0])
def test_zone_needs_min_below_max_on_each_axis(axis: int, delta: float) -> None:
    lo, hi = [0.0, 0.0, 0.0], [10.0, 10.0, 10.0]
    hi[axis] = lo[axis] + delta  # equal or inverted on this axis only
    name = "xyz"[axis]
    assert_rejected(
        Objectives,
        {"zones": [{**ZONE, "min": lo, "max": hi}]},
        "zones.0",
        f"min.{name} ({lo[axis]}) must be smaller than max.{name} ({hi[axis]})",
    )
    assert_rejected(
        SimulationRequest,
        request(objectives={"bounds": {"min": lo, "max": hi}}),
        "objectives.bounds",
        f"min.{name}",
    )


def test_zone_vector_must_have_three_components() -> None:
    errs = errors_of(Objectives, {"zones": [{**ZONE, "min": [0, 0]}]})
    assert any(e.startswith("zones.0.min") for e in errs), errs


@settings(deadline=None)  # timing varies on a loaded 2-core CI machine
@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=3, max_size=3),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=3, max_size=3),
)
def test_random_boxes_valid_iff_min_below_max(lo: list[float], hi: list[float]) -> None:
    ordered = all(a < b for a, b in zip(lo, hi, strict=True))
    try:
        box = Box(min=tuple(lo), max=tuple(hi))  # type: ignore[arg-type]
    except ValidationError as e:
        assert not ordered
        msg = str(e)
        bad = next(i for i in range(3) if not lo[i] < hi[i])
        assert f"min.{'xyz'[bad]}" in msg
    else:
        assert ordered
        assert box.contains(box.min) and box.contains(box.max)
        mid = tuple(a / 2 + b / 2 for a, b in zip(lo, hi, strict=True))
        assert box.contains(mid)


def test_duplicate_zone_names_are_refused() -> None:
    other = {**ZONE, "kind": "build", "min": [5, 5, 5], "max": [6, 6, 6]}
    assert_rejected(
        Objectives, {"zones": [ZONE, other]}, "<model>", "zones: duplicate zone names ['pad']"
    )


def test_goal_zone_and_target_go_together() -> None:
    goal = {**ZONE, "kind": "goal"}
    assert_rejected(Objectives, {"zones": [goal]}, "<model>", "target")
    assert_rejected(Objectives, {"target": "block", "zones": [ZONE]}, "<model>", "zones")
    assert Objectives(target="block", zones=[goal]).target == "block"  # type: ignore[list-item]


def test_zone_name_pattern() -> None:
    assert_rejected(Objectives, {"zones": [{**ZONE, "name": "a b"}]}, "zones.0.name", "pattern")
    assert_rejected(Objectives, {"zones": [{**ZONE, "kind": "lava"}]}, "zones.0.kind", "'goal'")


# --- controls ------------------------------------------------------------------------------------


def test_duplicate_controls_per_actuator_are_refused() -> None:
    controls = [
        {"actuator": "arm", "kind": "constant", "value": 1},
        {"actuator": "wheel", "kind": "constant"},
        {"actuator": "arm", "kind": "sine", "amplitude": 2, "frequency_hz": 1},
    ]
    assert_rejected(
        SimOptions,
        {"controls": controls},
        "<model>",
        "controls: more than one control for actuator ['arm']",
    )
    assert len(SimOptions(controls=controls[:2]).controls) == 2  # type: ignore[arg-type]


# --- sources -------------------------------------------------------------------------------------


def test_code_at_the_cap_is_accepted_and_one_byte_more_is_refused() -> None:
    assert CadSource(code="#" * MAX_CODE_BYTES).code is not None
    assert_rejected(CadSource, {"code": "#" * (MAX_CODE_BYTES + 1)}, "code", "larger than")


def test_code_cap_counts_utf8_bytes_not_characters() -> None:
    code = "é" * (MAX_CODE_BYTES // 2 + 1)  # fewer characters than the cap, more bytes
    assert len(code) < MAX_CODE_BYTES
    assert_rejected(CadSource, {"code": code}, "code", f"larger than {MAX_CODE_BYTES} bytes")


def test_code_must_be_utf8_text() -> None:
    # A lone surrogate is not UTF-8: accepting it would give a request that cannot be serialised.
    assert_rejected(CadSource, {"code": 'x = "\ud800"'}, "code", "not valid UTF-8")


@settings(deadline=None)  # timing varies on a loaded 2-core CI machine
@given(st.text(alphabet=st.characters() | st.characters(categories=["Cs"]), max_size=50))
def test_any_accepted_code_survives_a_json_round_trip(code: str) -> None:
    try:
        src = CadSource(code=code)
    except ValidationError:
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in code)
        return
    assert CadSource.model_validate_json(src.model_dump_json()) == src


def test_step_over_the_cap_is_refused() -> None:
    assert CadSource(step=b"\0" * MAX_STEP_BYTES).step is not None
    assert_rejected(CadSource, {"step": b"\0" * (MAX_STEP_BYTES + 1)}, "step", "larger than")


def test_uri_length_and_scheme() -> None:
    long = "file:///" + "a" * MAX_URI_CHARS
    assert_rejected(CadSource, {"uri": long}, "uri", f"at most {MAX_URI_CHARS} characters")
    assert_rejected(CadSource, {"uri": "http://example.com/d.py"}, "uri", "file:// or s3://")
    assert CadSource(uri="s3://bucket/d.py").uri == "s3://bucket/d.py"


@pytest.mark.parametrize(
    ("data", "got"),
    [
        ({}, "none"),
        ({"code": None, "step": None}, "none"),
        ({"code": "x", "step": b"y"}, "code, step"),
        ({"code": "x", "uri": "file:///d.py"}, "code, uri"),
        ({"step": b"y", "uri": "s3://b/k"}, "step, uri"),
        ({"code": "x", "step": b"y", "uri": "s3://b/k"}, "code, step, uri"),
    ],
)
def test_cad_source_needs_exactly_one_of_code_step_uri(data: dict[str, Any], got: str) -> None:
    assert_rejected(
        CadSource, data, "<model>", f"exactly one of code, step, uri must be set (got {got})"
    )


def test_step_in_json_is_base64() -> None:
    assert CadSource.model_validate_json('{"step": "SVNPLTEwMzAzLTIx"}').step == b"ISO-10303-21"
    assert_rejected(CadSource, '{"step": "not base64!"}', "step", "base64", json=True)


@settings(deadline=None)  # timing varies on a loaded 2-core CI machine
@given(st.binary(max_size=256))
def test_step_bytes_survive_a_json_round_trip(data: bytes) -> None:
    src = CadSource(step=data)
    assert CadSource.model_validate_json(src.model_dump_json()) == src
    assert CadSource.model_validate(src.model_dump(mode="json")).step == data


# --- options caps --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "loc", "msg"),
    [
        ({"duration_s": MAX_DURATION_S + 0.001}, "duration_s", f"less than or equal to {60}"),
        ({"duration_s": 0}, "duration_s", "greater than 0"),
        ({"timestep_s": 0.02}, "timestep_s", "less than or equal to 0.01"),
        ({"width": 641}, "width", "multiple of 2"),
        ({"height": 479}, "height", "multiple of 2"),
        ({"width": 4096}, "width", "less than or equal to 1920"),
        ({"fps": 0}, "fps", "greater than or equal to 1"),
        ({"fps": 61}, "fps", "less than or equal to 60"),
        ({"jitter": {"runs": 17}}, "jitter.runs", "less than or equal to 16"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"limits": {"wall_s": 0}}, "limits.wall_s", "greater than 0"),
        ({"limits": {"build_wall_s": -5}}, "limits.build_wall_s", "greater than 0"),
        ({"limits": {"memory_mb": 0}}, "limits.memory_mb", "greater than 0"),
        ({"limits": {"max_triangles": -1}}, "limits.max_triangles", "greater than 0"),
        ({"limits": {"max_parts": 1.5}}, "limits.max_parts", "integer"),
    ],
)
def test_option_caps(data: dict[str, Any], loc: str, msg: str) -> None:
    assert_rejected(SimOptions, data, loc, msg)


def test_goal_hold_over_the_duration_cap_is_refused() -> None:
    assert_rejected(
        Objectives, {"goal_hold_s": MAX_DURATION_S + 1}, "goal_hold_s", "less than or equal"
    )


def test_limits_within_bounds_are_kept() -> None:
    lim = Limits(wall_s=30, memory_mb=512)
    assert (lim.wall_s, lim.memory_mb, lim.build_wall_s) == (30, 512, None)


# --- defaults (DESIGN.md §3) ---------------------------------------------------------------------


def test_defaults() -> None:
    o = SimOptions()
    assert o.duration_s == 10.0
    assert o.timestep_s == 0.002
    assert o.render is True
    assert (o.width, o.height) == (640, 480)
    assert o.fps == 30
    assert o.controls == [] and o.stop_on_decision is False and o.full_video is False
    assert o.jitter.runs == 0
    assert o.limits == Limits()
    ob = Objectives()
    assert ob.goal_hold_s == 1.0
    assert ob.floor is True
    assert ob.zones == [] and ob.target is None and ob.bounds is None
    req = SimulationRequest.model_validate(request())
    assert req.environment is None
    assert req.objectives == Objectives() and req.options == SimOptions()


def test_models_are_frozen() -> None:
    o = SimOptions()
    with pytest.raises(ValidationError):
        o.duration_s = 1.0  # type: ignore[misc]


# --- results -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "failure", "ok"),
    [
        ("SUCCESS", None, True),
        ("FAIL", "TIMEOUT", True),
        ("SUCCESS", "GOAL_NOT_REACHED", False),
        ("FAIL", None, False),
    ],
)
def test_failure_is_none_iff_success(outcome: str, failure: str | None, ok: bool) -> None:
    data = {"outcome": outcome, "reason": "r", "failure": failure}
    if ok:
        r = SimulationResult.model_validate(data)
        assert r.failure == (None if failure is None else FailureKind(failure))
    else:
        assert_rejected(
            SimulationResult,
            data,
            "<model>",
            "failure must be None exactly when outcome is SUCCESS",
        )


def test_result_refuses_unknown_failure_kind_and_outcome() -> None:
    assert_rejected(
        SimulationResult, {"outcome": "FAIL", "reason": "r", "failure": "OOPS"}, "failure", ""
    )
    assert_rejected(SimulationResult, {"outcome": "PASS", "reason": "r"}, "outcome", "")


# --- JSON round trips ----------------------------------------------------------------------------

finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)
names = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)


@st.composite
def boxes(draw: st.DrawFn) -> dict[str, Any]:
    lo, hi = [], []
    for _ in range(3):
        a = draw(finite)
        b = draw(finite.filter(lambda x, a=a: x != a))
        lo.append(min(a, b))
        hi.append(max(a, b))
    return {"min": lo, "max": hi}


@st.composite
def objectives(draw: st.DrawFn) -> dict[str, Any]:
    zone_names = draw(st.lists(names, unique=True, max_size=5))
    zones = [
        {"name": n, "kind": draw(st.sampled_from(["goal", "forbid", "build"])), **draw(boxes())}
        for n in zone_names
    ]
    has_goal = any(z["kind"] == "goal" for z in zones)
    data: dict[str, Any] = {"zones": zones}
    if has_goal:
        data["target"] = draw(names)
    data["goal_hold_s"] = draw(st.floats(0.0, MAX_DURATION_S))
    if draw(st.booleans()):
        data["bounds"] = draw(boxes())
    data["floor"] = draw(st.booleans())
    return data


@st.composite
def options(draw: st.DrawFn) -> dict[str, Any]:
    actuators = draw(st.lists(names, unique=True, max_size=4))
    controls = [
        {
            "actuator": a,
            "kind": draw(st.sampled_from(["constant", "sine", "step"])),
            "value": draw(finite),
            "amplitude": draw(finite),
            "frequency_hz": draw(st.floats(0.0, 1000.0)),
            "phase_rad": draw(finite),
            "offset": draw(finite),
            "at_s": draw(st.floats(0.0, 1e6)),
            "after": draw(finite),
        }
        for a in actuators
    ]
    maybe_pos = st.none() | st.floats(min_value=1e-6, max_value=1e6)
    return {
        "duration_s": draw(st.floats(1e-6, MAX_DURATION_S)),
        "timestep_s": draw(st.floats(1e-4, 0.01)),
        "render": draw(st.booleans()),
        "width": 2 * draw(st.integers(32, 960)),
        "height": 2 * draw(st.integers(32, 540)),
        "fps": draw(st.integers(1, 60)),
        "seed": draw(st.integers(0, 2**32 - 1)),
        "jitter": {
            "runs": draw(st.integers(0, 16)),
            "position_mm": draw(st.floats(0.0, 100.0)),
            "rotation_deg": draw(st.floats(0.0, 180.0)),
        },
        "controls": controls,
        "stop_on_decision": draw(st.booleans()),
        "tessellation": draw(st.sampled_from(["coarse", "normal", "fine"]) | st.floats(0.001, 10)),
        "full_video": draw(st.booleans()),
        "limits": {
            "wall_s": draw(maybe_pos),
            "build_wall_s": draw(maybe_pos),
            "memory_mb": draw(st.none() | st.integers(1, 2**20)),
            "max_triangles": draw(st.none() | st.integers(1, 10**7)),
            "max_parts": draw(st.none() | st.integers(1, 1000)),
        },
    }


def _same_floats(a: Any, b: Any) -> None:
    """Equal, and -0.0 stays -0.0 (== alone would not tell)."""
    assert a == b
    if isinstance(a, float):
        assert math.copysign(1, a) == math.copysign(1, b)


@settings(max_examples=200, deadline=None)
@given(objectives())
def test_objectives_json_round_trip(data: dict[str, Any]) -> None:
    obj = Objectives.model_validate(data)
    again = Objectives.model_validate_json(obj.model_dump_json())
    assert again == obj
    assert again.model_dump() == obj.model_dump()
    for z_in, z in zip(data["zones"], obj.zones, strict=True):
        assert list(z.min) == z_in["min"] and list(z.max) == z_in["max"]
    if obj.bounds is not None:
        for a, b in zip(obj.bounds.min, again.bounds.min, strict=True):  # type: ignore[union-attr]
            _same_floats(a, b)


@settings(max_examples=200, deadline=None)
@given(options())
def test_options_json_round_trip(data: dict[str, Any]) -> None:
    opt = SimOptions.model_validate(data)
    assert opt.model_dump(mode="json") == data
    assert SimOptions.model_validate_json(opt.model_dump_json()) == opt


@settings(max_examples=100, deadline=None)
@given(
    objectives(),
    options(),
    st.one_of(
        st.builds(lambda c: {"code": c}, st.text(max_size=200)),
        st.builds(lambda b: {"step": b}, st.binary(max_size=200)),
        st.builds(lambda p: {"uri": "s3://bucket/" + p}, names),
    ),
    st.none() | st.builds(lambda c: {"code": c}, st.text(max_size=50)),
)
def test_request_json_round_trip(
    obj: dict[str, Any], opt: dict[str, Any], design: dict[str, Any], env: dict[str, Any] | None
) -> None:
    req = SimulationRequest.model_validate(
        {
            "request_id": "job-1.a_b",
            "design": design,
            "environment": env,
            "objectives": obj,
            "options": opt,
        }
    )
    assert SimulationRequest.model_validate_json(req.model_dump_json()) == req
    assert SimulationRequest.model_validate(req.model_dump(mode="json")) == req


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | finite | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@settings(deadline=None)  # timing varies on a loaded 2-core CI machine
@given(
    st.sampled_from([None, *FailureKind]),
    st.text(max_size=200),
    st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=4),
)
def test_result_json_round_trip(
    failure: FailureKind | None, reason: str, metrics: dict[str, Any], urls: dict[str, str]
) -> None:
    res = SimulationResult(
        outcome="SUCCESS" if failure is None else "FAIL",
        reason=reason,
        failure=failure,
        metrics=metrics,
        artifact_urls=urls,
        policy_digest="sha256:00",
        versions={"simjail": "0.1.0"},
    )
    assert SimulationResult.model_validate_json(res.model_dump_json()) == res


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_result_metrics_are_finite_so_its_json_is_plain_json(bad: float) -> None:
    """The pydantic data converter writes a NaN as a bare `NaN` token, which JSON parsers of
    other languages refuse: a result never holds one, however deep."""
    assert_rejected(
        SimulationResult,
        {
            "outcome": "SUCCESS",
            "reason": "ok",
            "metrics": {"parts": {"a": {"mass_kg": [1.0, bad]}}},
        },
        "metrics",
        "metrics.parts.a.mass_kg.1 is not a finite number",
    )


def test_result_carries_lasting_uris_beside_the_urls() -> None:
    res = SimulationResult.model_validate(
        {
            "outcome": "SUCCESS",
            "reason": "ok",
            "artifact_urls": {"result": "https://s3.example/b/r/run/result.json?X-Amz-Signature=1"},
            "artifact_uris": {"result": "s3://b/r/run/result.json"},
        }
    )
    assert SimulationResult.model_validate_json(res.model_dump_json()) == res
    assert res.artifact_uris["result"] == "s3://b/r/run/result.json"
