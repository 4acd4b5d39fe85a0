"""The monitor's OTLP decoding, on bytes made by the real SDK and its OTLP encoder: what is
kept, what is skipped, and what each kept span says about its order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from loupe.monitor.spans import (
    MAX_ITEMS,
    MAX_NAME_BYTES,
    MAX_SPAN_BYTES,
    MAX_SPANS,
    MalformedSpans,
    Refusal,
    SpanFacts,
    TimeWindow,
    TooLarge,
    Unstorable,
    decode,
    screen,
)
from loupe.telemetry.attributes import HEARTBEAT, ORDER_ID
from tests.support.otlp_requests import delimited, export_requests
from tests.support.otlp_spans import Spans, otlp

AT = datetime(2026, 3, 1, 10, 15, 2, 118000, tzinfo=UTC)
QUEUE = {"messaging.destination.subscription.name": "crm.order-status"}


class Made(Spans):
    """Spans as the decoding tests want them: of crm-api unless said, ended AT after 0.25 s."""

    def span(
        self, name: str, *, service: str = "crm-api", end: datetime = AT, **details: Any
    ) -> ReadableSpan:
        return self.make(service, name, end, lasted=0.25, **details)


def one(span: ReadableSpan) -> SpanFacts:
    kept, received = decode(otlp([span]))
    assert received.total() == 1
    (facts,) = kept
    return facts


ERROR = Status(StatusCode.ERROR)


def test_keeps_spans_of_an_order_or_failed_skips_the_rest_counts_all_by_service() -> None:
    made = Made()
    spans = [
        made.span("POST /orders", service="shop-api", attributes={"order.id": "o-1"}),
        made.span("SELECT orders", service="shop-api"),
        made.span("GET /healthz", service="mes-api", kind=SpanKind.SERVER),
        made.span("publish", service="mes-api", status=Status(StatusCode.ERROR, "broker gone")),
        made.span("fine", service="mes-api", status=Status(StatusCode.OK)),
        made.span("empty id", service="mes-api", attributes={"order.id": ""}),
    ]
    kept, received = decode(otlp(spans))
    assert received == {"shop-api": 2, "mes-api": 4}
    assert [(f.service, f.name, f.order_id, f.error) for f in kept] == [
        ("shop-api", "POST /orders", "o-1", False),
        ("mes-api", "publish", None, True),
    ]


def test_an_empty_request_holds_nothing() -> None:
    assert decode(b"") == ([], {})


def test_ids_are_hex_and_times_utc() -> None:
    made = Made()
    parent = made.span("POST /orders", service="shop-api", kind=SpanKind.SERVER)
    child = made.span(
        "create order",
        service="shop-api",
        parent=parent,
        attributes={"order.id": "o-1"},
        end=AT,
    )
    facts = one(child)
    assert facts.trace_id == format(child.context.trace_id, "032x")
    assert facts.span_id == format(child.context.span_id, "016x")
    assert facts.trace_id == format(parent.context.trace_id, "032x")
    assert facts.parent_span_id == format(parent.context.span_id, "016x")
    assert len(facts.trace_id) == 32 and len(facts.span_id) == 16
    assert int(facts.trace_id, 16) and int(facts.span_id, 16)
    assert facts.ended_at == AT
    assert facts.started_at == datetime(2026, 3, 1, 10, 15, 1, 868000, tzinfo=UTC)
    assert facts.ended_at.tzinfo is UTC


def test_a_root_span_has_no_parent() -> None:
    assert one(Made().span("root", attributes={"order.id": "o"})).parent_span_id is None


def test_service_comes_from_the_resource() -> None:
    made = Made()
    spans = [
        made.span("a", service="shop-api", attributes={"order.id": "o"}),
        made.span("b", service="mes-api", attributes={"order.id": "o"}),
        made.span("c", service="shop-api", attributes={"order.id": "o", "service.name": "x"}),
    ]
    kept, _ = decode(otlp(spans))
    # The encoder groups spans by resource; each keeps its own service.
    assert {f.name: f.service for f in kept} == {"a": "shop-api", "b": "mes-api", "c": "shop-api"}


def test_a_resource_without_a_service_name_is_unknown_service() -> None:
    made = Made()
    made.provider("nameless", Resource({"host.name": "box"}))
    facts = one(made.span("a", service="nameless", attributes={"order.id": "o"}))
    assert facts.service == "unknown_service"


def test_order_attributes_and_a_transition() -> None:
    facts = one(
        Made().span(
            "process loupe.orders",
            service="mes-api",
            attributes={
                "order.id": "o-7",
                "order.status.from": "SUBMITTED",
                "order.status.to": "FAILED",
                "order.source": "b2b",
                "order.failure.reason": "model cannot be priced",
                "order.price": 120.5,
            },
        )
    )
    assert (facts.order_id, facts.status_from, facts.status_to) == ("o-7", "SUBMITTED", "FAILED")
    assert (facts.source, facts.failure_reason) == ("b2b", "model cannot be priced")
    assert facts.transition
    assert not facts.error and facts.error_message is None and facts.error_type is None
    assert not facts.dead_lettered and not facts.refusal


def test_a_failed_span_with_a_status_to_is_not_a_transition() -> None:
    facts = one(
        Made().span(
            "ship order",
            attributes={"order.id": "o", "order.status.to": "SHIPPED"},
            status=Status(StatusCode.ERROR, "carrier down"),
        )
    )
    assert facts.error and not facts.transition
    assert facts.error_message == "carrier down"


@pytest.mark.parametrize(
    ("error", "order_id"),
    [
        # The creation committed: the order exists.
        (None, "o-new"),
        # It failed and was rolled back: the request names an order that exists nowhere.
        ("HTTP 503: the database is unavailable", None),
    ],
)
def test_a_failed_creation_names_no_order(error: str | None, order_id: str | None) -> None:
    created = Made().span(
        "POST /orders",
        service="shop-api",
        kind=SpanKind.SERVER,
        move=("NEW", "SUBMITTED"),
        order_id="o-new",
        error=error,
    )
    facts = one(created)
    assert (facts.order_id, facts.status_from, facts.status_to) == (order_id, "NEW", "SUBMITTED")
    assert facts.transition is (error is None)


def test_an_order_span_without_status_to_is_not_a_transition() -> None:
    assert not one(Made().span("price order", attributes={"order.id": "o"})).transition


# Every kind the SDK has; the monitor names each as the SDK does (SERVER, ..., INTERNAL).
@pytest.mark.parametrize("kind", list(SpanKind), ids=lambda kind: kind.name)
def test_kinds(kind: SpanKind) -> None:
    assert one(Made().span("s", kind=kind, attributes={"order.id": "o"})).kind == kind.name


def test_a_consumer_runs_at_its_queue_other_spans_at_their_operation() -> None:
    made = Made()
    consumer = one(
        made.span(
            "process loupe.orders",
            kind=SpanKind.CONSUMER,
            attributes={"order.id": "o", **QUEUE},
        )
    )
    assert consumer.place == "queue crm.order-status"
    # The subscription attribute on another kind of span does not make it a queue.
    producer = one(
        made.span("publish", kind=SpanKind.PRODUCER, attributes={"order.id": "o", **QUEUE})
    )
    assert producer.place == "publish"
    # A consumer span without the attribute is placed at its operation.
    bare = one(made.span("process", kind=SpanKind.CONSUMER, attributes={"order.id": "o"}))
    assert bare.place == "process"


def test_a_dead_lettered_event_marks_the_span_and_gives_the_reason() -> None:
    facts = one(
        Made().span(
            "process loupe.orders",
            kind=SpanKind.CONSUMER,
            attributes={"order.id": "o", **QUEUE},
            events=[
                ("retry", {"loupe.messaging.reason": "not this one"}),
                ("dead-lettered", {"loupe.messaging.reason": "poison message: not JSON"}),
            ],
            status=Status(StatusCode.ERROR, "OrderEventError: bad"),
        )
    )
    assert facts.dead_lettered and facts.error
    assert facts.error_message == "poison message: not JSON"
    assert facts.place == "queue crm.order-status"


def test_a_dead_lettered_event_without_a_reason_keeps_the_status_message() -> None:
    facts = one(
        Made().span(
            "process",
            attributes={"order.id": "o"},
            events=[("dead-lettered", {})],
            status=Status(StatusCode.ERROR, "too many attempts"),
        )
    )
    assert facts.dead_lettered and facts.error_message == "too many attempts"


def test_a_dead_letter_that_names_no_order_is_kept_when_it_failed() -> None:
    facts = one(
        Made().span(
            "process",
            kind=SpanKind.CONSUMER,
            attributes=QUEUE,
            events=[("dead-lettered", {"loupe.messaging.reason": "poison"})],
            status=ERROR,
        )
    )
    assert facts.order_id is None and facts.dead_lettered and facts.error_message == "poison"


def test_error_message_from_the_status_first() -> None:
    facts = one(
        Made().span(
            "s",
            attributes={"order.id": "o", "error.type": "TimeoutError"},
            exception=RuntimeError("from the exception"),
            status=Status(StatusCode.ERROR, "from the status"),
        )
    )
    assert facts.error_message == "from the status"
    assert facts.error_type == "TimeoutError"


def test_error_message_falls_back_to_the_exception_then_error_type() -> None:
    made = Made()
    with_exception = one(
        made.span(
            "s",
            attributes={"order.id": "o", "error.type": "ConnectionError"},
            exception=ConnectionError("database is down"),
            status=ERROR,
        )
    )
    assert with_exception.error_message == "database is down"
    typed = one(
        made.span("s", attributes={"order.id": "o", "error.type": "TimeoutError"}, status=ERROR)
    )
    assert typed.error_message == "TimeoutError"
    bare = one(made.span("s", attributes={"order.id": "o"}, status=ERROR))
    assert bare.error_message == "error" and bare.error_type is None


def test_an_exception_on_a_span_that_did_not_fail_is_no_error() -> None:
    facts = one(Made().span("s", attributes={"order.id": "o"}, exception=ValueError("handled")))
    assert not facts.error and facts.error_message is None


@pytest.mark.parametrize(
    ("error_type", "refusal"),
    [("IllegalTransition", True), ("OrderNotFound", True), ("ConnectionError", False)],
)
def test_refused_steps(error_type: str, refusal: bool) -> None:
    facts = one(
        Made().span(
            "approve manufacturing",
            attributes={"order.id": "o", "error.type": error_type},
            status=Status(StatusCode.ERROR, "no"),
        )
    )
    assert facts.refusal is refusal


def test_links_are_kept_as_hex_pairs() -> None:
    made = Made()
    first = made.span("submit", service="shop-api", attributes={"order.id": "o"})
    second = made.span("price", service="mes-api", attributes={"order.id": "o"})
    linked = made.span(
        "approve manufacturing",
        attributes={"order.id": "o"},
        links=[Link(first.context), Link(second.context, {"why": "resumed"})],
    )
    assert one(linked).links == (
        (format(first.context.trace_id, "032x"), format(first.context.span_id, "016x")),
        (format(second.context.trace_id, "032x"), format(second.context.span_id, "016x")),
    )
    assert one(first).links == ()


@pytest.mark.parametrize(
    "body", [b"garbage", b"\xff\xff\xff", b"\x0a\x05abc", b'{"resourceSpans": []}']
)
def test_malformed_bytes_raise(body: bytes) -> None:
    with pytest.raises(MalformedSpans, match="not an OTLP ExportTraceServiceRequest"):
        decode(body)


# -- what PostgreSQL cannot store -------------------------------------------------------------


def test_screen_drops_an_unstorable_order_id_and_cleans_every_other_value() -> None:
    made = Made()
    good = made.span("approve manufacturing", attributes={"order.id": "o-good"})
    nul_order = made.span("take order", attributes={"order.id": "o-\x00"})
    long_order = made.span("take order", attributes={"order.id": "o" * (MAX_NAME_BYTES + 1)})
    garbled = made.span(
        "price\x00order",
        service="é" * MAX_NAME_BYTES,  # two bytes each: over the limit in bytes, not characters
        attributes={"order.id": "o-1"},
        error="cannot parse b'solid\x00\x00'",
    )
    decoded, _ = decode(otlp([good, nul_order, long_order, garbled]))

    kept, unstorable = screen(decoded)

    assert [(u.span.span_id, u.reason, u.fields, u.dropped) for u in unstorable] == [
        (decoded[1].span_id, Unstorable.NUL_BYTE, ("order_id",), True),
        (decoded[2].span_id, Unstorable.TOO_LONG, ("order_id",), True),
        (
            decoded[3].span_id,
            Unstorable.TOO_LONG,
            ("service", "name", "place", "error_message"),
            False,
        ),
    ]
    assert kept[0] == decoded[0], "a good span is kept as it came"
    cleaned = kept[1]
    assert (cleaned.name, cleaned.place) == ("price\ufffdorder", "price\ufffdorder")
    assert cleaned.error_message == "cannot parse b'solid\ufffd\ufffd'"
    assert cleaned.service.endswith("…") and set(cleaned.service[:-1]) == {"é"}
    assert len(cleaned.service.encode()) <= MAX_NAME_BYTES
    # The same value is always cleaned the same way: a place keeps one key.
    assert screen([decoded[3]])[0] == [cleaned]


def test_long_free_text_is_not_cut() -> None:
    # Messages are in no index: PostgreSQL takes them at any length.
    message = "Traceback: " + "x" * 10 * MAX_NAME_BYTES
    decoded, _ = decode(otlp([Made().span("price order", error=message)]))
    assert screen(decoded) == (decoded, [])


# -- spans out of time ------------------------------------------------------------------------

WINDOW = TimeWindow.around(AT, retention=timedelta(days=7), ahead=timedelta(minutes=5))


def test_spans_out_of_the_window_are_refused_counted_and_the_rest_kept() -> None:
    made = Made()
    good = made.span("POST /orders", attributes={"order.id": "o-good"})
    # The SDK's times go through a float: a millisecond from the edge is clear of its rounding.
    edge = WINDOW.latest - timedelta(milliseconds=1)
    edge_future = made.span("edge", attributes={"order.id": "o-edge"}, end=edge)
    future = made.span(
        "POST /orders",
        attributes={"order.id": "o-future"},
        end=WINDOW.latest + timedelta(milliseconds=1),
    )
    # A heartbeat from the future would say the monitor heard the service up to then.
    future_beat = made.span(HEARTBEAT, service="mes-api", end=AT + timedelta(days=365))
    old = made.span("POST /orders", attributes={"order.id": "o-old"}, end=AT - timedelta(days=8))
    # Ends inside, started before the window: refused too.
    started_old = made.span(
        "POST /orders", attributes={"order.id": "o-started"}, end=WINDOW.earliest
    )
    body = otlp([good, edge_future, future, future_beat, old, started_old])

    kept, received = decode(body, WINDOW)

    assert [f.order_id for f in kept] == ["o-good", "o-edge"]
    assert received.refused == {Refusal.FUTURE: 2, Refusal.PAST_RETENTION: 2}
    # Counted as sent (the last hop's count), but they say nothing of how far a service was
    # heard.
    assert received == {"crm-api": 5, "mes-api": 1}
    assert received.latest == {"crm-api": kept[1].ended_at}
    assert received.beating == set()
    # Without a window (tests, the benchmark's yardstick) every span is taken.
    everything, all_received = decode(body)
    assert len(everything) == 5 and not all_received.refused


def test_a_span_without_times_is_older_than_any_retention() -> None:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(name="no time")
    _, received = decode(request.SerializeToString(), WINDOW)
    assert received.refused == {Refusal.PAST_RETENTION: 1}
    assert received.latest == {}


# -- any input ----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_any_bytes_decode_or_are_malformed_never_anything_else(body: bytes) -> None:
    try:
        kept, received = decode(body, WINDOW)
    except MalformedSpans:
        return
    assert received.total() >= len(kept)
    screen(kept)


@settings(max_examples=300, deadline=None)
@given(export_requests())
def test_any_well_formed_request_decodes_and_screens(request: ExportTraceServiceRequest) -> None:
    window = TimeWindow.around(datetime.now(UTC), timedelta(days=7), timedelta(minutes=5))
    body = request.SerializeToString()
    kept, received = decode(body, window)
    sent = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
    assert received.total() == sent
    assert sum(received.refused.values()) <= sent
    stored, unstorable = screen(kept)
    assert len(stored) + sum(u.dropped for u in unstorable) == len(kept)
    for span in stored:
        assert window.earliest <= span.started_at and span.ended_at <= window.latest
        assert "\x00" not in (span.order_id or "") + span.service + span.name


# -- what one request may cost ------------------------------------------------------------------


def _request(*spans: Span, resource: bytes | None = None) -> bytes:
    if resource is None:
        resource = delimited(
            1,
            KeyValue(
                key="service.name", value=AnyValue(string_value="crm-api")
            ).SerializeToString(),
        )
    scope = b"".join(delimited(2, span.SerializeToString()) for span in spans)
    return delimited(1, delimited(1, resource) + delimited(2, scope))


def _span(name: str = "step", **attributes: str) -> Span:
    span = Span(name=name, trace_id=bytes(16), span_id=bytes(8), start_time_unix_nano=1)
    span.end_time_unix_nano = 2
    for key, value in attributes.items():
        span.attributes.add(key=key).value.string_value = value
    return span


@pytest.mark.parametrize(
    "entry",
    [
        delimited(2, delimited(2, b"")),  # an empty span
        delimited(2, b""),  # an empty scope
        b"\xc0\x3e\x01",  # an unknown field (1000, a varint)
    ],
    ids=["spans", "scopes", "unknown fields"],
)
def test_a_request_of_more_entries_than_the_limit_is_too_large(entry: bytes) -> None:
    if entry.startswith(b"\xc0"):
        body = entry * (MAX_SPANS + 1)
    else:
        body = delimited(1, entry * (MAX_SPANS + 1))
    with pytest.raises(TooLarge, match="over 50000"):
        decode(body)
    # At the limit, it is read.
    fits = _request(*[_span() for _ in range(MAX_SPANS // 2)])
    assert decode(fits)[1].total() == MAX_SPANS // 2


def test_a_span_over_the_size_limit_is_refused_and_the_rest_kept() -> None:
    huge = _span(**{ORDER_ID: "o-huge", "blob": "x" * MAX_SPAN_BYTES})
    kept, received = decode(_request(_span(**{ORDER_ID: "o-1"}), huge))
    assert [f.order_id for f in kept] == ["o-1"]
    assert received.refused == {Refusal.TOO_LARGE: 1}
    assert received == {"crm-api": 2}
    big_resource = delimited(
        1,
        KeyValue(key="blob", value=AnyValue(string_value="x" * MAX_SPAN_BYTES)).SerializeToString(),
    )
    with pytest.raises(TooLarge, match="a resource is over"):
        decode(_request(_span(), resource=big_resource))


def test_at_most_max_items_attributes_of_a_span_are_read() -> None:
    padding = {f"pad.{n}": "x" for n in range(MAX_ITEMS - 1)}
    within = _span(**padding, **{ORDER_ID: "o-within"})
    beyond = _span(**padding, pad_last="x", **{ORDER_ID: "o-beyond"})
    kept, _ = decode(_request(within, beyond))
    assert [f.order_id for f in kept] == ["o-within"]


def test_the_walk_reads_what_protobuf_reads() -> None:
    # The resource after the spans, and in two parts: protobuf merges them into one.
    named = delimited(
        1, KeyValue(key="service.name", value=AnyValue(string_value="mes-api")).SerializeToString()
    )
    other = delimited(
        1, KeyValue(key="host.name", value=AnyValue(string_value="h")).SerializeToString()
    )
    scope = delimited(2, delimited(2, _span(**{ORDER_ID: "o-1"}).SerializeToString()))
    body = delimited(1, scope + delimited(1, other) + delimited(1, named)) + delimited(1, scope)
    reference = ExportTraceServiceRequest.FromString(body)
    assert [len(r.scope_spans) for r in reference.resource_spans] == [1, 1]
    kept, received = decode(body)
    assert received == {"mes-api": 1, "unknown_service": 1}
    assert [f.service for f in kept] == ["mes-api", "unknown_service"]


@pytest.mark.parametrize(
    "body",
    [
        delimited(1, delimited(2, b"\x12\x05abc")),  # a span said to be longer than it is
        b"\x0b",  # field 1 as a group, which OTLP never uses
        b"\x08",  # a varint cut off
        b"\x02\x00",  # field number 0
        b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # a length over 10 bytes
    ],
)
def test_a_broken_wire_format_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedSpans):
        decode(body)
