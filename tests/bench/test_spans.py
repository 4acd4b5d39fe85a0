"""The spans benchmark (loupe.bench.spans): realistic spans, every variant measured, the report."""

from __future__ import annotations

from datetime import UTC, datetime

from opentelemetry.trace import SpanKind

from loupe.bench import spans
from loupe.bench.__main__ import parse
from loupe.bench.journeys import spans_per_order
from loupe.telemetry.attributes import ORDER_ID, ORDER_STATUS_TO


def test_the_spans_are_a_journeys_as_the_services_make_them() -> None:
    made = spans.finished_spans(2)
    total, with_order, moves = spans_per_order()
    assert len(made) == 2 * total
    assert sum(ORDER_ID in (s.attributes or {}) for s in made) == 2 * with_order
    assert sum(ORDER_STATUS_TO in (s.attributes or {}) for s in made) == 2 * moves
    kinds = {s.kind for s in made}
    assert kinds == set(SpanKind)
    assert any(s.links for s in made) and any(s.events for s in made)
    database = [s for s in made if "db.query.text" in (s.attributes or {})]
    assert database and all(s.parent is not None for s in database)


def test_every_variant_is_measured_in_every_round() -> None:
    figures = spans.measure(rounds=2, orders=1)
    assert set(figures.rounds) >= {spans.OFF, spans.SDK, spans.REDACTION, spans.PATH_AFTER}
    assert all(len(values) == 2 and min(values) > 0 for values in figures.rounds.values())


def test_the_report_accounts_for_a_span_from_the_figures() -> None:
    figures = spans.Figures()
    values = {
        spans.OFF: 5.0,
        spans.SDK: 25.0,
        spans.QUEUED: 28.0,
        spans.REDACTION: 7.0,
        spans.DELIVERY: 1.0,
        spans.ENCODING_SDK: 40.0,
        spans.ENCODING_LOUPE: 12.0,
        f"{spans.EXPORT}64": 30.0,
        f"{spans.EXPORT}512": 15.0,
        f"{spans.EXPORT}2048": 14.0,
        spans.PATH_BEFORE: 50.0,
        spans.PATH_AFTER: 24.0,
        f"{spans.FASTAPI}plain": 50.0,
        f"{spans.FASTAPI}off": 150.0,
        f"{spans.FASTAPI}on": 200.0,
        f"{spans.ASYNCPG}plain": 1.0,
        f"{spans.ASYNCPG}on, faster than the minimum": 3.0,
        f"{spans.ASYNCPG}on, a span each": 25.0,
    }
    for name, value in values.items():
        figures.add(name, value)
        figures.add(name, value * 1.2)
    text = spans.report(figures, 2, 20, datetime(2026, 12, 2, tzinfo=UTC))
    assert "| the request's thread: the SDK starts, fills and ends it | 22.0 |" in text
    assert "| batch thread: the HTTP POST, 512 spans a batch (export less encoding) | 3.3 |" in text
    # 22.0 + 3.3 (queue) + 26.4 (the whole batch thread's median)
    assert "| **a span in all** (request's thread + batch thread measured whole) | **51.7** |" in (
        text
    )
    assert f"| {spans.REDACTION} | 7.7 | ±9% |" in text
    assert "otlp-proto 0.10.1 (not installed in this run)" in text
    # 33.0 µs a span in 64s and 16.5 in 512s: 1.2 ms an export, 14.1 µs a span.
    assert "each export costs about 1.2 ms whatever it holds, and\n14.1 µs a span" in text


def test_the_command_line_takes_its_rounds_and_orders() -> None:
    args = parse(["--only", "spans", "--span-rounds", "3", "--span-orders", "5"])
    assert (args.only, args.span_rounds, args.span_orders) == ("spans", 3, 5)
