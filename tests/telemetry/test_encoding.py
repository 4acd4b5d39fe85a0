"""loupe's OTLP encoder writes what the SDK's encoder writes, byte for byte, and its exporter
sends that with the SDK's client."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from loupe.bench.spans import finished_spans, otlp_sink
from loupe.telemetry.encoding import (
    REMEMBERED_ATTRIBUTES,
    REMEMBERED_MAX_CHARS,
    LoupeOTLPSpanExporter,
    _remembered,
    encode_spans,
)

scalars = st.one_of(
    st.text(max_size=12),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
)
values = st.one_of(
    st.none(),
    scalars,
    st.binary(max_size=6),
    st.lists(st.text(max_size=4), max_size=3).map(tuple),
    st.lists(st.integers(-5, 5), max_size=3),
    st.lists(st.floats(allow_nan=False), max_size=3).map(tuple),
    st.lists(st.booleans(), max_size=3).map(tuple),
    st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2),
    # Beyond int64: both encoders leave the attribute out.
    st.integers(min_value=2**63, max_value=2**70),
)
attributes = st.dictionaries(st.text(max_size=8), values, max_size=5)
ids = st.integers(min_value=1, max_value=2**64 - 1)


@st.composite
def contexts(draw: st.DrawFn) -> SpanContext:
    state = draw(st.sampled_from([None, TraceState([("vendor", "x1")])]))
    return SpanContext(
        draw(st.integers(min_value=1, max_value=2**128 - 1)),
        draw(ids),
        draw(st.booleans()),
        TraceFlags(draw(st.sampled_from([0, 1]))),
        state,
    )


def bounded(draw: st.DrawFn) -> BoundedAttributes | dict[str, Any]:
    """Attributes, sometimes over a bound so that the span counts dropped ones."""
    found = draw(attributes)
    if draw(st.booleans()):
        return found
    return BoundedAttributes(maxlen=2, attributes=found, immutable=False)


RESOURCE = Resource.create({"service.name": "shop-api", "service.namespace": "loupe"})
RESOURCES = [
    RESOURCE,
    # Equal in value, another object: grouped with the first, as the SDK groups them.
    Resource.create({"service.name": "shop-api", "service.namespace": "loupe"}),
    Resource({"service.name": "crm-api", "k": (1, 2)}, "https://opentelemetry.io/schemas/1.21.0"),
]
SCOPES = [
    None,
    InstrumentationScope("loupe.orders", "0.1.0"),
    InstrumentationScope("opentelemetry.instrumentation.asyncpg", "0.66b1", "https://s/1.11.0"),
    InstrumentationScope("scoped", None, None, {"a": "b", "n": 3}),
]


@st.composite
def spans(draw: st.DrawFn) -> ReadableSpan:
    code = draw(st.sampled_from(list(StatusCode)))
    events = [
        Event(draw(st.text(max_size=8)), bounded(draw), draw(st.integers(0, 2**63)))
        for _ in range(draw(st.integers(0, 2)))
    ]
    links = [Link(draw(contexts()), bounded(draw)) for _ in range(draw(st.integers(0, 2)))]
    start = draw(st.one_of(st.none(), st.integers(0, 2**63)))
    return ReadableSpan(
        name=draw(st.text(max_size=16)),
        context=draw(contexts()),
        parent=draw(st.one_of(st.none(), contexts())),
        resource=draw(st.sampled_from(RESOURCES)),
        attributes=bounded(draw),
        events=events,
        links=links,
        kind=draw(st.sampled_from(list(SpanKind))),
        status=Status(code, draw(st.text(max_size=10)) if code is StatusCode.ERROR else None),
        start_time=start,
        end_time=draw(st.one_of(st.none(), st.integers(0, 2**63))),
        instrumentation_scope=draw(st.sampled_from(SCOPES)),
    )


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(spans(), max_size=6))
def test_any_spans_encode_to_the_sdks_bytes(batch: list[ReadableSpan]) -> None:
    logging.disable(logging.ERROR)  # both encoders log each attribute they leave out
    try:
        expected = sdk_encode(batch).SerializeToString()
        assert encode_spans(batch) == expected
    finally:
        logging.disable(logging.NOTSET)


def test_the_services_spans_decode_to_what_the_sdk_encodes() -> None:
    batch = finished_spans(2)
    assert any(span.links for span in batch) and any(span.events for span in batch)
    decoded = ExportTraceServiceRequest.FromString(encode_spans(batch))
    assert decoded == sdk_encode(batch)
    assert sum(len(s.spans) for r in decoded.resource_spans for s in r.scope_spans) == len(batch)


def test_an_attribute_otlp_cannot_carry_is_left_out_and_the_rest_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    span = ReadableSpan(
        name="s",
        context=SpanContext(1, 2, False),
        resource=RESOURCE,
        attributes={"too.big": 2**64, "order.id": "o-1", "odd": object()},
    )
    decoded = ExportTraceServiceRequest.FromString(encode_spans([span]))
    (kept,) = decoded.resource_spans[0].scope_spans[0].spans[0].attributes
    assert (kept.key, kept.value.string_value) == ("order.id", "o-1")
    assert "too.big" in caplog.text and "odd" in caplog.text


def test_long_texts_are_encoded_but_not_remembered() -> None:
    stack = "Traceback (most recent call last):\n" + "  frame\n" * 400
    assert len(stack) > REMEMBERED_MAX_CHARS
    span = ReadableSpan(
        name="s",
        context=SpanContext(1, 2, False),
        resource=RESOURCE,
        attributes={"exception.stacktrace": stack, "order.id": "o-2"},
    )
    before = _remembered.cache_info()
    assert encode_spans([span]) == sdk_encode([span]).SerializeToString()
    after = _remembered.cache_info()
    calls = after.hits + after.misses - before.hits - before.misses
    assert calls == 1 + len(RESOURCE.attributes), "the resource's and order.id, not the stack"
    assert after.maxsize == REMEMBERED_ATTRIBUTES


@pytest.fixture
def sink() -> Iterator[tuple[str, list[bytes]]]:
    bodies: list[bytes] = []
    with otlp_sink(bodies) as endpoint:
        yield endpoint, bodies


def test_the_exporter_sends_the_batch_with_the_sdks_client(
    sink: tuple[str, list[bytes]],
) -> None:
    endpoint, bodies = sink
    exporter = LoupeOTLPSpanExporter(endpoint=endpoint)
    assert exporter.usable()
    batch = finished_spans(1)
    assert exporter.export(batch) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert bodies == [sdk_encode(batch).SerializeToString()]


def test_a_batch_this_encoder_cannot_write_goes_through_the_sdks(
    sink: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, bodies = sink
    batch = finished_spans(1)

    def broken(_spans: object) -> bytes:
        raise RuntimeError("an encoder bug")

    monkeypatch.setattr("loupe.telemetry.encoding.encode_spans", broken)
    exporter = LoupeOTLPSpanExporter(endpoint=endpoint)
    assert exporter.export(batch) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert bodies == [sdk_encode(batch).SerializeToString()]


def test_a_refused_batch_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on port 9 of loopback: the SDK's client fails at once.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    exporter = LoupeOTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    assert exporter.export(finished_spans(1)[:3]) is SpanExportResult.FAILURE
    exporter.shutdown()


def test_with_the_sdks_own_exporter_metrics_asked_for_its_exporter_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    assert not LoupeOTLPSpanExporter().usable()
    assert isinstance(LoupeOTLPSpanExporter(), OTLPSpanExporter)
