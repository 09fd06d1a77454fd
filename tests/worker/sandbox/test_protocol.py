"""Frames between a child and the supervisor: round trips, arbitrary chunking, and every way a
hostile child can break the protocol (each must be a ProtocolError, nothing else)."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.sandbox import protocol
from worker.sandbox.protocol import (
    MAX_DEPTH,
    ErrorFrame,
    FrameCaps,
    FrameReader,
    ProgressFrame,
    ProtocolError,
    ResultFrame,
    encode,
    parse,
)


def raw(body: bytes) -> bytes:
    """A frame with an arbitrary body (what a hostile child can write)."""
    return struct.pack(">I", len(body)) + body


def refused(body: bytes) -> str:
    """parse() refuses `body` with exactly ProtocolError; returns the message."""
    with pytest.raises(ProtocolError) as exc:
        parse(body)
    assert type(exc.value) is ProtocolError
    return str(exc.value)


progress_frames = st.builds(
    lambda phase, t, f: {"type": "progress", "phase": phase, "sim_time_s": t, "fraction": f},
    st.from_regex(r"\A[a-z0-9][a-z0-9 /._-]{0,31}\Z"),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(0.0, 1.0),
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
payloads = st.dictionaries(
    st.text(max_size=10),
    st.recursive(
        json_scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=15,
    ),
    max_size=5,
)
result_frames = st.builds(lambda p: {"type": "result", "payload": p}, payloads)
error_frames = st.builds(
    lambda k, m: {"type": "error", "kind": k, "message": m},
    st.sampled_from(["SYNTAX_ERROR", "USER_CODE_ERROR", "NO_GEOMETRY", "INVALID_GEOMETRY"]),
    st.text(max_size=200),
)
any_frame = progress_frames | result_frames | error_frames


# --- round trips ---------------------------------------------------------------------------------


@settings(deadline=None)  # timing varies on a loaded 2-core CI machine
@given(progress_frames)
def test_progress_round_trip(frame: dict[str, Any]) -> None:
    data = encode(frame)
    (n,) = struct.unpack(">I", data[:4])
    assert n == len(data) - 4
    got = parse(data[4:])
    assert isinstance(got, ProgressFrame)
    assert got.model_dump() == frame


@settings(deadline=None)  # timing varies on a loaded 2-core CI machine
@given(any_frame)
def test_every_frame_type_round_trips(frame: dict[str, Any]) -> None:
    got = parse(encode(frame)[4:])
    assert (
        type(got)
        is {"progress": ProgressFrame, "result": ResultFrame, "error": ErrorFrame}[frame["type"]]
    )
    assert got.model_dump() == frame


@settings(max_examples=200, deadline=None)
@given(st.lists(any_frame, max_size=8), st.data())
def test_reader_gives_the_same_frames_for_any_chunking(
    frames: list[dict[str, Any]], data: st.DataObject
) -> None:
    stream = b"".join(encode(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    reader = FrameReader()
    out = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out += reader.feed(stream[prev:cut])
        prev = cut
    assert [f.model_dump() for f in out] == frames
    assert reader.pending == 0
    assert reader.total == len(stream)


def test_reader_byte_by_byte() -> None:
    frames = [
        {"type": "progress", "phase": "build", "sim_time_s": 0.0, "fraction": 0.0},
        {"type": "result", "payload": {"ü": [1, 2.5, None, "x"]}},
    ]
    stream = b"".join(encode(f) for f in frames)
    reader = FrameReader()
    out = [f for i in range(len(stream)) for f in reader.feed(stream[i : i + 1])]
    assert [f.model_dump() for f in out] == frames


# --- refusals ------------------------------------------------------------------------------------


def test_length_over_the_cap_is_refused_from_the_header_alone() -> None:
    reader = FrameReader(FrameCaps(1000, 4000, 1000))
    with pytest.raises(ProtocolError, match="exceeds the cap of 1000"):
        reader.feed(struct.pack(">I", 1001))  # no body needed: the header is enough


def test_length_at_the_cap_is_read() -> None:
    empty = json.dumps({"type": "result", "payload": {"s": ""}}).encode()
    body = json.dumps({"type": "result", "payload": {"s": "a" * (1000 - len(empty))}}).encode()
    assert len(body) == 1000
    (f,) = FrameReader(FrameCaps(1000, 4000, 1000)).feed(raw(body))
    assert isinstance(f, ResultFrame)


def test_huge_length_prefix_is_refused() -> None:
    with pytest.raises(ProtocolError):
        FrameReader().feed(b"\xff\xff\xff\xff")


def test_total_cap() -> None:
    frame = encode({"type": "progress", "phase": "p"})
    reader = FrameReader(FrameCaps(1000, 3 * len(frame), 1000))
    assert len(reader.feed(frame * 3)) == 3
    with pytest.raises(ProtocolError, match="bytes of frames"):
        reader.feed(b"\0")


def test_encode_refuses_what_parse_would_refuse() -> None:
    with pytest.raises(ValueError):
        encode({"type": "progress", "phase": "p", "sim_time_s": float("nan")})


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe{}",
        b'{"type": "progress", "phase": "\xc3"}',
        '{"type": "progress", "phase": "é"}'.encode("latin-1"),
    ],
)
def test_non_utf8_body_is_refused(body: bytes) -> None:
    assert "not UTF-8 JSON" in refused(body)


@pytest.mark.parametrize("body", [b"", b"{", b"{'type': 'result'}", b'{"type": "result"} x'])
def test_not_json_is_refused(body: bytes) -> None:
    assert "not UTF-8 JSON" in refused(body)


@pytest.mark.parametrize("body", [b"[]", b'"result"', b"1", b"null", b'[{"type": "result"}]'])
def test_non_object_is_refused(body: bytes) -> None:
    assert refused(body) == "frame is not a JSON object"


@pytest.mark.parametrize(
    "obj", [{}, {"type": "verdict"}, {"type": None}, {"type": ["result"]}, {"kind": "result"}]
)
def test_unknown_type_is_refused(obj: dict[str, Any]) -> None:
    assert "unknown frame type" in refused(json.dumps(obj).encode())


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "progress", "phase": "p", "outcome": "SUCCESS"},
        {"type": "result", "payload": {}, "failure": None},
        {"type": "error", "kind": "NO_GEOMETRY", "message": "m", "extra": 1},
    ],
)
def test_extra_fields_are_refused(obj: dict[str, Any]) -> None:
    assert "Extra inputs are not permitted" in refused(json.dumps(obj).encode())


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "error", "kind": "TIMEOUT", "message": "forged"},  # not a kind a child may claim
        {"type": "progress", "phase": "p", "fraction": 2.0},
        {"type": "progress", "phase": "p" * 33},
        {"type": "progress", "phase": "\x1b[32mSUCCESS\x1b[0m"},
        {"type": "progress", "phase": "Build"},
        {"type": "progress", "phase": ""},
        {"type": "result", "payload": [1, 2]},
        {"type": "result"},
    ],
)
def test_malformed_frames_are_refused(obj: dict[str, Any]) -> None:
    assert "malformed" in refused(json.dumps(obj).encode())


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize(
    "template",
    [
        '{{"type": "progress", "phase": "p", "sim_time_s": {}}}',
        '{{"type": "result", "payload": {{"x": {}}}}}',
        '{{"type": "result", "payload": {{"a": [1, {{"b": {}}}]}}}}',
    ],
)
def test_non_finite_numbers_are_refused(template: str, literal: str) -> None:
    refused(template.format(literal).encode())


def _nested(depth: int) -> bytes:
    """A result frame whose JSON nests exactly `depth` levels (the frame object is level 1)."""
    inner = "[" * (depth - 2) + "]" * (depth - 2)
    return f'{{"type":"result","payload":{{"x":{inner or 0}}}}}'.encode()


def test_nesting_up_to_max_depth_is_accepted() -> None:
    f = parse(_nested(MAX_DEPTH))
    assert isinstance(f, ResultFrame)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 10_000, 1_000_000])
def test_deep_nesting_is_refused_before_json_loads(
    depth: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_loads(*a: Any, **k: Any) -> Any:
        raise AssertionError("json.loads must not see a too-deep frame")

    monkeypatch.setattr(protocol.json, "loads", no_loads)
    assert f"deeper than {MAX_DEPTH}" in refused(_nested(depth))


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    s = json.dumps("[{" * 500 + '\\"[')
    f = parse(f'{{"type":"result","payload":{{"s":{s}}}}}'.encode())
    assert isinstance(f, ResultFrame)
    assert f.payload["s"] == "[{" * 500 + '\\"['


def test_stray_closing_brackets_do_not_buy_extra_depth() -> None:
    body = b"]" * 200 + b"[" * 260 + b"]" * 260
    refused(body)


def test_truncated_frame_is_left_pending() -> None:
    data = encode({"type": "result", "payload": {"k": "v" * 100}})
    reader = FrameReader()
    assert reader.feed(data[:-1]) == []
    assert reader.pending == len(data) - 1
    assert reader.feed(data[-1:]) != []
    assert reader.pending == 0
    reader2 = FrameReader()
    assert reader2.feed(data[:3]) == []  # not even a whole header
    assert reader2.pending == 3


def test_a_bad_frame_after_good_ones_raises() -> None:
    good = encode({"type": "progress", "phase": "p"})
    reader = FrameReader()
    assert len(reader.feed(good)) == 1
    with pytest.raises(ProtocolError):
        reader.feed(good + raw(b"[]"))


# --- the worker's memory: frames are capped by what the job's geometry caps allow ------------


def test_a_frame_of_tiny_values_is_refused_before_json_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`[0,0,0,…]`: 2 bytes of JSON per value, ~30–100 bytes of Python object once parsed."""

    def no_loads(*a: Any, **k: Any) -> Any:
        raise AssertionError("json.loads must not see a frame of too many values")

    monkeypatch.setattr(protocol.json, "loads", no_loads)
    body = b'{"type":"result","payload":{"x":[' + b"0," * 100_000 + b"0]}}"
    with pytest.raises(ProtocolError, match="more than 50000 JSON values"):
        parse(body, max_values=50_000)


def test_commas_inside_strings_are_not_values() -> None:
    s = json.dumps("," * 100_000)
    f = parse(f'{{"type":"result","payload":{{"s":{s}}}}}'.encode(), max_values=10)
    assert isinstance(f, ResultFrame)


def test_the_geometry_cap_follows_the_jobs_caps() -> None:
    small = protocol.geometry_caps(max_parts=1, max_triangles=100, max_vertices=200)
    default = protocol.geometry_caps(max_parts=200, max_triangles=200_000, max_vertices=400_000)
    assert small.frame_bytes < 100_000
    assert 10_000_000 < default.frame_bytes < 12_000_000  # ~11.3 MB, not 64 MiB
    assert default.values == 200 * protocol.PART_VALUES + 1000
