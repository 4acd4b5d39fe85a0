"""Hypothesis strategies for OTLP ExportTraceServiceRequests: well-formed protobuf, with any
values a sender could put in them, biased towards the attributes, events and times the
monitor reads (an order id, a status move, a dead letter, a time near now)."""

from __future__ import annotations

import time

from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from loupe.orders import OrderStatus
from loupe.telemetry.attributes import (
    DEAD_LETTER_REASON,
    DEAD_LETTERED_EVENT,
    HEARTBEAT,
    ORDER_FAILURE_REASON,
    ORDER_ID,
    ORDER_SOURCE,
    ORDER_STATUS_FROM,
    ORDER_STATUS_TO,
)

KEYS = st.sampled_from(
    [
        ORDER_ID,
        ORDER_STATUS_FROM,
        ORDER_STATUS_TO,
        ORDER_SOURCE,
        ORDER_FAILURE_REASON,
        DEAD_LETTER_REASON,
        "error.type",
        "exception.message",
        "messaging.destination.subscription.name",
    ]
) | st.text(max_size=20)
TEXT = st.sampled_from([s.value for s in OrderStatus]) | st.text(max_size=40)
INT64 = st.integers(-(2**63), 2**63 - 1)
UINT64 = st.integers(0, 2**64 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)


def _now_ns() -> int:
    return time.time_ns()


# Near now (the monitor keeps those), or anywhere a fixed64 reaches (it refuses those).
TIMES = st.builds(lambda offset: _now_ns() + offset, st.integers(-(10**12), 10**11)) | UINT64


@st.composite
def any_values(draw: st.DrawFn, depth: int = 2) -> AnyValue:
    value = AnyValue()
    kinds = ["string", "int", "double", "bool", "bytes", "none"] + (["array"] if depth else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "string":
        value.string_value = draw(TEXT)
    elif kind == "int":
        value.int_value = draw(INT64)
    elif kind == "double":
        value.double_value = draw(st.floats())
    elif kind == "bool":
        value.bool_value = draw(st.booleans())
    elif kind == "bytes":
        value.bytes_value = draw(st.binary(max_size=20))
    elif kind == "array":
        value.array_value.values.extend(draw(st.lists(any_values(depth - 1), max_size=3)))
    return value


@st.composite
def attributes(draw: st.DrawFn, max_size: int = 6) -> list[KeyValue]:
    pairs = draw(st.lists(st.tuples(KEYS, any_values()), max_size=max_size))
    return [KeyValue(key=key, value=value) for key, value in pairs]


@st.composite
def spans(draw: st.DrawFn) -> Span:
    span = Span(
        trace_id=draw(st.binary(max_size=20)),
        span_id=draw(st.binary(max_size=10)),
        parent_span_id=draw(st.binary(max_size=10)),
        name=draw(st.sampled_from([HEARTBEAT, "POST /orders"]) | st.text(max_size=30)),
        kind=draw(st.integers(0, 6) | INT32),  # an open enum: unknown numbers are valid
        start_time_unix_nano=draw(TIMES),
        end_time_unix_nano=draw(TIMES | st.just(0)),
    )
    span.attributes.extend(draw(attributes()))
    span.status.code = draw(st.integers(0, 2) | INT32)
    span.status.message = draw(st.text(max_size=30))
    for _ in range(draw(st.integers(0, 2))):
        event = span.events.add()
        event.name = draw(st.sampled_from([DEAD_LETTERED_EVENT, "exception"]) | st.text())
        event.time_unix_nano = draw(TIMES)
        event.attributes.extend(draw(attributes(3)))
    for _ in range(draw(st.integers(0, 2))):
        link = span.links.add()
        link.trace_id = draw(st.binary(max_size=20))
        link.span_id = draw(st.binary(max_size=10))
    return span


@st.composite
def export_requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    """A well-formed request: services (named or not, any name) with scopes of spans."""
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 3))):
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(draw(attributes(3)))
        if draw(st.booleans()):
            service = resource_spans.resource.attributes.add(key="service.name")
            service.value.string_value = draw(
                st.sampled_from(["shop-api", "mes-api", "crm-api"]) | st.text(max_size=30)
            )
        for _ in range(draw(st.integers(0, 2))):
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = draw(st.text(max_size=10))
            scope_spans.spans.extend(draw(st.lists(spans(), max_size=4)))
    return request


# Protobuf's wire format written by hand, apart from any encoder under test: for bodies no
# encoder would make (bombs, broken nesting).


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def delimited(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, as the wire has it."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload
