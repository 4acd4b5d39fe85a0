"""The benchmarks' synthetic spans (loupe.bench.journeys): journeys, submissions, the steady
flow."""

from __future__ import annotations

from collections import Counter

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from loupe.bench.journeys import (
    JOURNEY,
    SUBMISSION,
    WARM_UP,
    Journeys,
    spans_per_order,
    steady_flow,
    submissions,
)
from loupe.monitor.spans import decode
from loupe.orders.lifecycle import HAPPY_PATH


def test_one_journey_has_the_services_proportions() -> None:
    # docs/tracing.md, counted in a real run: 95 spans, 30 naming the order, 18 moves.
    assert spans_per_order() == (95, 30, 18)
    assert len(JOURNEY) == 6
    # Every status of the happy path is reached, by the service that makes the move first.
    first_moves = {}
    for trace in JOURNEY:
        for spec in trace:
            if spec.move:
                first_moves.setdefault(spec.move[1], spec.service)
    assert list(first_moves) == [s.value for s in HAPPY_PATH]
    assert first_moves["PRICE_CALCULATED"] == "mes-api"


def test_a_submission_that_mes_never_prices_stops_at_submitted() -> None:
    moves = [spec.move for spec in SUBMISSION if spec.move]
    assert moves == [("NEW", "SUBMITTED"), ("NEW", "SUBMITTED")]
    assert {spec.service for spec in SUBMISSION} == {"shop-api", "crm-api"}
    batch, ids = submissions(Journeys(1), 3, 1_000_000_000_000)
    kept, received = decode(batch.body)
    assert received.total() == batch.spans == 3 * len(SUBMISSION)
    assert len(kept) == batch.kept == 3 * sum(s.has_order for s in SUBMISSION)
    assert {f.order_id for f in kept} == set(ids)
    assert {f.status_to for f in kept if f.transition} == {"SUBMITTED"}


def test_the_steady_flow_is_what_the_monitor_sees_in_the_services_spans() -> None:
    orders_per_batch = 2
    batches = list(steady_flow(7, WARM_UP + 8, orders_per_batch, 10**18, 10_000_000))
    assert len(batches) == WARM_UP + 8
    # Warm-up requests fill the flow; from then on each holds every step of the journey.
    full = 95 * orders_per_batch
    assert [b.spans for b in batches[: WARM_UP + 1]][-1] == full
    assert all(b.spans < full for b in batches[:WARM_UP])
    assert {(b.spans, b.kept) for b in batches[WARM_UP:]} == {(full, 30 * orders_per_batch)}

    moves: Counter[str] = Counter()
    statuses: dict[str, list[str]] = {}
    for batch in batches:
        kept, received = decode(batch.body)
        total = received.total()
        assert (total, len(kept)) == (batch.spans, batch.kept)
        assert {f.service for f in kept} == (
            {"shop-api", "crm-api", "mes-api"} if total >= full else {f.service for f in kept}
        )
        for facts in kept:
            if facts.transition and facts.status_to:
                moves[facts.order_id or ""] += 1
                statuses.setdefault(facts.order_id or "", []).append(facts.status_to)
    # The orders that started in the first 8 requests went the whole way: 18 moves, CLOSED.
    complete = [o for o, n in moves.items() if n == 18]
    assert len(complete) == 8 * orders_per_batch
    assert all(statuses[o][-1] == "CLOSED" for o in complete)

    request = ExportTraceServiceRequest.FromString(batches[-1].body)
    services = [
        next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
        for rs in request.resource_spans
    ]
    assert sorted(services) == ["crm-api", "mes-api", "shop-api"]
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len({s.span_id for s in spans}) == len(spans)
    assert all(len(s.trace_id) == 16 and len(s.span_id) == 8 for s in spans)
    linked = [s for s in spans if s.links]
    assert linked and all(s.name.endswith(("manufacturing", "order")) for s in linked)


def test_the_same_seed_makes_the_same_spans_and_another_seed_others() -> None:
    first = [b.body for b in steady_flow(1, WARM_UP + 1, 1, 10**18, 1)]
    again = [b.body for b in steady_flow(1, WARM_UP + 1, 1, 10**18, 1)]
    other = [b.body for b in steady_flow(2, WARM_UP + 1, 1, 10**18, 1)]
    assert first == again and first[-1] != other[-1]
