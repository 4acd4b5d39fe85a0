"""Jaeger's JSON read into what the console draws: parents within the trace, links to other
traces, events, errors, the order's moves, retries and dead letters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from loupe.portal.jaeger_api import parse_trace
from loupe.telemetry import attributes as attr
from tests.support.console_fakes import Span, jaeger_trace

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OTHER = ("f" * 32, "e" * 16)


def test_a_trace_read_from_jaegers_json() -> None:
    ms = timedelta(milliseconds=1)
    data = jaeger_trace(
        "1" * 32,
        [
            Span("crm-api", "process loupe.orders", T0 + 5 * ms, 3, "b" * 16, "a" * 16,
                 tags={attr.ORDER_ID: "o-1", attr.DELIVERY_ATTEMPT: "3"},
                 events=[(attr.DEAD_LETTERED_EVENT, {attr.DEAD_LETTER_REASON: "poison message"})],
                 error=True),
            Span("shop-api", "POST /orders", T0, 40, "a" * 16, links=[OTHER],
                 tags={attr.ORDER_ID: "o-1", attr.ORDER_STATUS_FROM: "NEW",
                       attr.ORDER_STATUS_TO: "SUBMITTED"}),
        ],
    )  # fmt: skip
    trace = parse_trace(data)
    root, consumer = trace.spans
    assert (root.name, root.service, root.parent_id) == ("POST /orders", "shop-api", None)
    assert root.links == (OTHER,), "a span link, not a parent"
    assert root.move == ("NEW", "SUBMITTED") and root.order_id == "o-1"
    assert not root.error and root.attempt == 1 and root.dead_letter_reason is None
    assert consumer.parent_id == "a" * 16
    assert consumer.error and consumer.attempt == 3
    assert consumer.dead_letter_reason == "poison message"
    assert consumer.move is None
    assert (trace.start_us, trace.end_us) == (root.start_us, root.start_us + 40_000)
    assert trace.order_ids == {"o-1"}


def test_odd_values_do_not_break_the_page() -> None:
    data = jaeger_trace(
        "2" * 32, [Span("mes-api", "x", T0, 1, "c" * 16, tags={attr.DELIVERY_ATTEMPT: "many"})]
    )
    data["processes"] = {}
    (span,) = parse_trace(data).spans
    assert span.service == "?" and span.attempt == 1
