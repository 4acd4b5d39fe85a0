"""W3C trace context in AMQP headers: what goes in comes out, and bad headers never raise; the
stored `traceparent` text of a step reads back as the same context."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from loupe.messaging import extract_context, inject_context
from loupe.messaging.propagation import span_context_from_text, span_context_to_text

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
VALID_TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
VALID_SPAN_ID = 0x00F067AA0BA902B7


@pytest.fixture(scope="module")
def provider() -> TracerProvider:
    # A provider of this module's own; the global one is left alone.
    return TracerProvider()


def _span_context(context: Context) -> SpanContext:
    return trace.get_current_span(context).get_span_context()


def test_inject_writes_the_current_span(provider: TracerProvider) -> None:
    tracer = trace.get_tracer(__name__, tracer_provider=provider)
    with tracer.start_as_current_span("send") as span:
        headers: dict[str, Any] = {}
        inject_context(headers)
    sent = span.get_span_context()
    flags = int(sent.trace_flags)
    assert flags & TraceFlags.SAMPLED
    assert headers["traceparent"] == f"00-{sent.trace_id:032x}-{sent.span_id:016x}-{flags:02x}"
    context, note = extract_context(headers)
    assert note is None
    received = _span_context(context)
    assert (received.trace_id, received.span_id) == (sent.trace_id, sent.span_id)
    assert received.is_remote


def test_inject_replaces_stale_trace_headers(provider: TracerProvider) -> None:
    tracer = trace.get_tracer(__name__, tracer_provider=provider)
    span = tracer.start_span("send", context=Context())
    headers: dict[str, Any] = {
        "traceparent": VALID,
        "tracestate": "old=1",
        "baggage": "old=1",
        "x-other": "kept",
    }
    inject_context(headers, trace.set_span_in_context(span, Context()))
    span.end()
    assert headers["x-other"] == "kept"
    assert "tracestate" not in headers
    assert "baggage" not in headers
    assert _span_context(extract_context(headers)[0]).span_id == span.get_span_context().span_id


def test_inject_without_a_span_writes_no_traceparent() -> None:
    headers: dict[str, Any] = {"traceparent": VALID}
    inject_context(headers, Context())
    assert "traceparent" not in headers
    context, note = extract_context(headers)
    assert not _span_context(context).is_valid
    assert note is not None and "no traceparent" in note


trace_ids = st.integers(min_value=1, max_value=2**128 - 1)
span_ids = st.integers(min_value=1, max_value=2**64 - 1)
_key_first = "abcdefghijklmnopqrstuvwxyz"
_key_rest = _key_first + "0123456789_-*/"
tracestate_keys = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(_key_first),
    st.text(alphabet=_key_rest, max_size=20),
)
# Printable ASCII except ',' and '='; not ending in a space.
tracestate_values = st.text(
    alphabet=[chr(c) for c in range(0x20, 0x7F) if chr(c) not in ",="], min_size=1, max_size=30
).filter(lambda v: not v.endswith(" ") and not v.startswith(" "))
baggage_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
baggage_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), max_size=40
)


@given(
    trace_id=trace_ids,
    span_id=span_ids,
    sampled=st.booleans(),
    state=st.dictionaries(tracestate_keys, tracestate_values, max_size=5),
    bag=st.dictionaries(baggage_keys.filter(bool), baggage_values, max_size=5),
    as_bytes=st.booleans(),
)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_inject_then_extract_round_trips(
    trace_id: int,
    span_id: int,
    sampled: bool,
    state: dict[str, str],
    bag: dict[str, str],
    as_bytes: bool,
) -> None:
    sent = SpanContext(
        trace_id,
        span_id,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
        trace_state=TraceState(list(state.items())),
    )
    context = trace.set_span_in_context(NonRecordingSpan(sent), Context())
    for key, value in bag.items():
        context = baggage.set_baggage(key, value, context)
    headers: dict[str, Any] = {}
    inject_context(headers, context)
    if as_bytes:
        # Other clients hand header values over as bytes; they must read the same.
        headers = {k: v.encode() for k, v in headers.items()}

    extracted, note = extract_context(headers)

    assert note is None
    received = _span_context(extracted)
    assert received.trace_id == trace_id
    assert received.span_id == span_id
    assert received.trace_flags.sampled is sampled
    assert received.is_remote
    assert dict(received.trace_state) == state
    assert dict(baggage.get_all(extracted)) == bag


def test_real_span_with_tracestate_and_baggage_round_trips(provider: TracerProvider) -> None:
    tracer = trace.get_tracer(__name__, tracer_provider=provider)
    parent = SpanContext(
        VALID_TRACE_ID,
        VALID_SPAN_ID,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "abc"), ("other", "x-1")]),
    )
    parent_context = trace.set_span_in_context(NonRecordingSpan(parent), Context())
    parent_context = baggage.set_baggage("order.source", "b2b", parent_context)
    span = tracer.start_span("publish", context=parent_context)
    headers: dict[str, Any] = {}
    inject_context(headers, trace.set_span_in_context(span, parent_context))
    span.end()

    assert headers["traceparent"].startswith(f"00-{VALID_TRACE_ID:032x}-")
    extracted, note = extract_context(headers)
    assert note is None
    received = _span_context(extracted)
    assert received.trace_id == VALID_TRACE_ID
    assert received.span_id == span.get_span_context().span_id
    assert dict(received.trace_state) == {"vendor": "abc", "other": "x-1"}
    assert baggage.get_baggage("order.source", extracted) == "b2b"


@pytest.mark.parametrize("value", [VALID, VALID.encode(), bytearray(VALID.encode())])
def test_valid_traceparent_as_text_or_bytes(value: str | bytes | bytearray) -> None:
    context, note = extract_context(
        {"traceparent": value, "tracestate": b"vendor=abc", "baggage": b"k=v"}
    )
    assert note is None
    received = _span_context(context)
    assert (received.trace_id, received.span_id) == (VALID_TRACE_ID, VALID_SPAN_ID)
    assert received.trace_flags.sampled
    assert dict(received.trace_state) == {"vendor": "abc"}
    assert baggage.get_baggage("k", context) == "v"


T = "4bf92f3577b34da6a3ce929d0e0e4736"
P = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "",
        f"ff-{T}-{P}-01",  # version ff is forbidden
        f"0-{T}-{P}-01",  # version too short
        f"xy-{T}-{P}-01",  # version not hex
        f"00-{'0' * 32}-{P}-01",  # all-zero trace id
        f"00-{T}-{'0' * 16}-01",  # all-zero span id
        f"00-{T.upper()}-{P}-01",  # uppercase hex
        f"00-{T}-{P.upper()}-01",
        f"00-{T[:-1]}-{P}-01",  # trace id one short
        f"00-{T}0-{P}-01",  # trace id one long
        f"00-{T}-{P[:-1]}-01",  # span id one short
        f"00-{T}-{P}-1",  # flags one short
        f"00-{T}-{P}",  # no flags
        f"00-{T}-{P}-01-extra",  # version 00 has exactly four fields
        f"00_{T}_{P}_01",
        f"00-{T}-{P}-0g",
        "\x00\x01\x02",
        b"\xff\xfe\x80",  # bytes that are not ASCII
        42,
        4.2,
        ["00", T, P, "01"],
        {"traceparent": VALID},
        True,
    ],
)
def test_malformed_traceparent_gives_a_new_trace_and_a_note(value: Any) -> None:
    context, note = extract_context({"traceparent": value, "baggage": "k=v"})
    assert not _span_context(context).is_valid
    assert note is not None
    assert "malformed traceparent" in note
    assert "new trace" in note
    # The note shows what arrived, cut short.
    assert len(note) < 200


def test_long_malformed_traceparent_is_shown_cut_short() -> None:
    _, note = extract_context({"traceparent": "x" * 10_000})
    assert note is not None
    assert "xxxx" in note
    assert len(note) < 200


@pytest.mark.parametrize("headers", [None, {}, {"traceparent": None}, {"baggage": "k=v"}])
def test_missing_traceparent_gives_a_new_trace_and_a_note(headers: dict[str, Any] | None) -> None:
    context, note = extract_context(headers)
    assert not _span_context(context).is_valid
    assert note is not None
    assert "no traceparent" in note


def test_extract_does_not_change_the_headers() -> None:
    headers: dict[str, Any] = {"traceparent": VALID, "x": 1}
    extract_context(headers)
    assert headers == {"traceparent": VALID, "x": 1}


def _w3c_valid(value: str) -> bool:
    """What the W3C Trace Context spec accepts (for the generator below)."""
    match = re.fullmatch(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", value)
    if match is None:
        return False
    version, trace_id, span_id, _, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return False
    return int(trace_id, 16) != 0 and int(span_id, 16) != 0


def _hex(size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789abcdef", min_size=size, max_size=size)


hex_fields = st.one_of(
    _hex(32),
    st.just("0" * 32),
    _hex(32).map(str.upper),
    st.text(alphabet="0123456789abcdefABCDEFxyz", min_size=30, max_size=34),
)
span_fields = st.one_of(
    _hex(16),
    st.just("0" * 16),
    _hex(16).map(str.upper),
    st.text(alphabet="0123456789abcdefABCDEFxyz", min_size=14, max_size=18),
)
near_valid_traceparents = st.builds(
    lambda version, trace_id, span_id, flags, tail: f"{version}-{trace_id}-{span_id}-{flags}{tail}",
    st.sampled_from(["00", "01", "cc", "ff", "0", "000", "0G", "FF"]),
    hex_fields,
    span_fields,
    st.sampled_from(["00", "01", "03", "ff", "1", "0x", "001"]),
    st.sampled_from(["", "-", "-x", "-00"]),
)


@given(near_valid_traceparents, st.booleans())
@example(f"00-{T}-{P}-01", False)
@example(f"ff-{T}-{P}-01", False)
@example(f"01-{T}-{P}-01-future", True)
def test_near_valid_traceparents(value: str, as_bytes: bool) -> None:
    context, note = extract_context({"traceparent": value.encode() if as_bytes else value})
    received = _span_context(context)
    if _w3c_valid(value):
        assert note is None
        assert f"{received.trace_id:032x}" == value[3:35]
        assert f"{received.span_id:016x}" == value[36:52]
    else:
        assert not received.is_valid
        assert note is not None and "malformed traceparent" in note


header_values = st.one_of(
    st.none(),
    st.text(),
    st.binary(),
    st.integers(),
    st.floats(),
    st.booleans(),
    near_valid_traceparents,
    near_valid_traceparents.map(str.encode),
    st.lists(st.text(), max_size=3),
)
header_keys = st.one_of(
    st.sampled_from(["traceparent", "tracestate", "baggage", "x-loupe-attempt"]), st.text()
)


@given(st.dictionaries(header_keys, header_values))
def test_arbitrary_headers_never_raise(headers: dict[str, Any]) -> None:
    context, note = extract_context(headers)
    received = _span_context(context)
    if received.is_valid:
        assert note is None
        assert received.is_remote
    else:
        assert note is not None
        expected = "no traceparent" if headers.get("traceparent") is None else "malformed"
        assert expected in note
        assert "new trace" in note


@given(trace_id=trace_ids, span_id=span_ids, sampled=st.booleans())
def test_stored_step_text_is_the_traceparent_header_and_reads_back(
    trace_id: int, span_id: int, sampled: bool
) -> None:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    step = SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags)
    headers: dict[str, Any] = {}
    inject_context(headers, trace.set_span_in_context(NonRecordingSpan(step), Context()))

    text = span_context_to_text(step)

    assert text == headers["traceparent"]
    read = span_context_from_text(text)
    assert read is not None and read.is_remote
    assert (read.trace_id, read.span_id, read.trace_flags) == (trace_id, span_id, flags)


@pytest.mark.parametrize(
    "text",
    [None, "", "garbage", f"00-{'0' * 32}-{P}-01", f"00-{T}-{'0' * 16}-01", f"00-{T}-xyz-01"],
)
def test_an_absent_or_unreadable_stored_step_is_none(text: str | None) -> None:
    assert span_context_from_text(text) is None
