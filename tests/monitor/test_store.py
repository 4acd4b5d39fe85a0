"""The monitor's store on real PostgreSQL: spans in (as OTLP protobuf), each stored once
whatever order or how often they come; journeys; SLO deadlines; what breaks an order."""

from __future__ import annotations

import random
import secrets
from dataclasses import replace
from datetime import timedelta

import asyncpg
import pytest
from opentelemetry.trace import SpanKind

from loupe.monitor import detection, store
from loupe.monitor.models import IncidentState
from loupe.monitor.spans import decode
from loupe.orders import OrderStatus
from tests.support.monitor import HAPPY, SLO, management, send
from tests.support.otlp_spans import Spans, ago, otlp, slo

pytestmark = pytest.mark.integration


async def test_journey_from_late_repeated_and_shuffled_spans(monitor_pool: asyncpg.Pool) -> None:
    made = Spans()
    order = "order-journey"
    spans = made.happy_path(order, lambda step: ago(60 - 5 * step))
    # CRM's copy following MES's pricing, a little later: a sighting, not a second move.
    spans.append(made.happy_move(1, order, ago(54), by="crm-api", kind=SpanKind.CONSUMER))
    # A plain span of the order (no move) and one of no order at all: no transition.
    spans.append(made.make("mes-api", "price order", ago(56), order_id=order))
    spans.append(made.make("mes-api", "SELECT", ago(56)))
    shuffled = spans[:]
    random.Random(7).shuffle(shuffled)
    first = await send(monitor_pool, shuffled[:5])
    second = await send(monitor_pool, shuffled[3:])  # two spans arrive twice
    again = await send(monitor_pool, spans)  # everything again

    assert first.received == 5
    assert second.duplicates == 2
    assert again.new_transitions == 0 and again.duplicates == len(HAPPY) + 1
    journey = await store.journey(monitor_pool, order)
    assert journey is not None
    assert journey.status == "CLOSED"
    assert [m.status for m in journey.transitions] == [after for *_, after in HAPPY]
    assert [m.service for m in journey.transitions] == [s for s, *_ in HAPPY]
    priced = journey.transitions[1]
    assert priced.seen_by and priced.seen_by[0].service == "crm-api"
    assert all(m.trace_id and m.span_id for m in journey.transitions)

    result = await detection.tick(monitor_pool, SLO, management())
    assert result.opened == []
    assert await store.findings(monitor_pool) == []


async def test_a_changed_slo_file_moves_the_deadlines_of_waiting_orders(
    monitor_pool: asyncpg.Pool,
) -> None:
    made = Spans()
    await send(monitor_pool, [made.happy_move(0, "o-wait", ago(40))])
    assert await store.apply_slo(monitor_pool, SLO) == 0
    submitted = SLO.steps[OrderStatus.SUBMITTED]
    patient = replace(SLO, steps={submitted.status: replace(submitted, within=timedelta(hours=1))})
    assert await store.apply_slo(monitor_pool, patient) == 1
    assert (await detection.tick(monitor_pool, patient, management())).opened == []
    # Back to 30 s: 40 s waiting is stuck.
    assert await store.apply_slo(monitor_pool, SLO) == 1
    (opened,) = (await detection.tick(monitor_pool, SLO, management())).opened
    assert opened.order_id == "o-wait"
    # A file with no step for SUBMITTED: no deadline, the finding clears, detection goes on.
    silent = slo("PRICE_CALCULATED")
    assert await store.apply_slo(monitor_pool, silent) == 1
    await detection.tick(monitor_pool, silent, management())
    assert await store.findings(monitor_pool) == []


async def test_a_dead_letter_with_no_order_in_a_request_with_orders(
    monitor_pool: asyncpg.Pool,
) -> None:
    # Jaeger's batch mixes spans freely: a dead letter that names no order arrives with other
    # orders' moves and errors, and every one of them is stored.
    made = Spans()
    result = await send(
        monitor_pool,
        [
            made.consumed(
                "crm.order-status",
                ago(2),
                error="poison message: not JSON",
                dead_lettered=True,
            ),
            made.happy_move(0, "o-1", ago(2)),
            made.make("mes-api", "price order", ago(1), order_id="o-1", error="no model"),
        ],
    )
    assert (result.new_transitions, result.new_errors) == (1, 2)
    await detection.tick(monitor_pool, SLO, management())
    journey = await store.journey(monitor_pool, "o-1")
    assert journey is not None and [t.status for t in journey.transitions] == ["SUBMITTED"]
    orphan = [f for f in await store.findings(monitor_pool) if f.order_id is None]
    assert [f.where for f in orphan] == ["queue crm.order-status"]


async def test_refused_steps_and_errors_after_closing_do_not_break_an_order(
    monitor_pool: asyncpg.Pool,
) -> None:
    made = Spans()
    await send(
        monitor_pool,
        [
            made.happy_move(0, "ok", ago(30)),
            made.happy_move(1, "ok", ago(29)),
            # A seller clicks "approve" twice: the second is refused (409), not a failure.
            made.make(
                "crm-api",
                "approve manufacturing",
                ago(0.5),
                order_id="ok",
                error="order ok is MANUFACTURING_APPROVED; it cannot become ...",
                attributes={"error.type": "IllegalTransition"},
            ),
            made.happy_move(2, "ok", ago(1)),
            *made.happy_path("done", lambda step: ago(20 - step)),
            made.make("crm-api", "close order", ago(1), order_id="done", error="boom"),
        ],
    )
    async with monitor_pool.acquire() as connection:
        await connection.execute("UPDATE orders SET deadline = NULL WHERE order_id = 'ok'")
        # Past every grace: nothing may be due.
        rows = await connection.fetch("SELECT order_id, broken_at FROM orders")
    assert {r["order_id"]: r["broken_at"] for r in rows} == {"ok": None, "done": None}
    assert (await detection.tick(monitor_pool, SLO, management())).opened == []
    journey = await store.journey(monitor_pool, "ok")
    assert journey is not None and [e.message[:8] for e in journey.errors] == ["order ok"]


async def test_a_span_postgresql_refuses_is_left_out_and_the_rest_stored(
    monitor_pool: asyncpg.Pool,
) -> None:
    # Values spans.screen would have cleaned, sent past it: PostgreSQL itself refuses them
    # (a NUL byte; an index entry over its limit), and only they are left out.
    made = Spans()
    spans, received = decode(
        otlp(
            [made.happy_move(0, f"o-{n}", ago(5)) for n in range(5)]
            + [made.happy_move(1, "o-3", ago(1))]
        )
    )
    nul = replace(spans[1], order_id="o-\x00")
    oversized = replace(spans[4], order_id=secrets.token_hex(2000))
    batch = [spans[0], nul, spans[2], spans[3], oversized, spans[5]]

    result = await store.ingest(monitor_pool, batch, SLO, received.total())

    assert [(span.order_id, why.split(" ")[0]) for span, why in result.refused] == [
        (nul.order_id, "CharacterNotInRepertoireError"),
        (oversized.order_id, "ProgramLimitExceededError"),
    ]
    assert (result.received, result.kept, result.new_transitions) == (6, 4, 4)
    # The move of o-3 and its price arrived in different halves: the projection is as whole.
    assert [d[:2] for d in result.durations] == [("SUBMITTED", "PRICE_CALCULATED")]
    async with monitor_pool.acquire() as connection:
        stored = await connection.fetch("SELECT order_id, status FROM orders ORDER BY order_id")
    assert [tuple(r) for r in stored] == [
        ("o-0", "SUBMITTED"),
        ("o-2", "SUBMITTED"),
        ("o-3", "PRICE_CALCULATED"),
    ]


async def test_a_dismissed_finding_leaves_its_incident_s_times_to_the_others(
    monitor_pool: asyncpg.Pool,
) -> None:
    made = Spans()
    await send(monitor_pool, [made.happy_move(0, "o-false-alarm", ago(100))])
    (first,) = (await detection.tick(monitor_pool, SLO, management())).opened
    await send(monitor_pool, [made.happy_move(0, "o-real", ago(50))])
    (second,) = (await detection.tick(monitor_pool, SLO, management())).opened
    assert first.incident_id == second.incident_id
    before = await store.incident(monitor_pool, first.incident_id)
    assert before is not None and before.started_at == first.since

    dismissed = await store.dismiss(monitor_pool, first.id, "devops@example.com", "test order")
    assert dismissed is not None
    assert dismissed.cleared_reason == "dismissed by devops@example.com: test order"
    with pytest.raises(store.FindingCleared, match="cleared already"):
        await store.dismiss(monitor_pool, first.id, "devops@example.com", "again")
    assert await store.dismiss(monitor_pool, 999_999, "devops@example.com", "none") is None

    # The incident is as if only the real order had been found.
    after = await store.incident(monitor_pool, first.incident_id)
    assert after is not None and after.status == IncidentState.OPEN and not after.dismissed
    assert (after.started_at, after.detected_at) == (second.since, second.detected_at)
    report = await store.incidents(monitor_pool)
    assert report.mttd_seconds == pytest.approx((second.detected_at - second.since).total_seconds())

    await send(monitor_pool, [made.happy_move(1, "o-real", ago(1))])
    result = await detection.tick(monitor_pool, SLO, management())
    assert result.opened == [], "the dismissed order is not reported again"
    (resolved,) = result.incidents_resolved
    assert not resolved.dismissed
    assert resolved.resolved_at is not None
    assert resolved.time_to_resolve_seconds == pytest.approx(
        (resolved.resolved_at - second.since).total_seconds()
    )
    report = await store.incidents(monitor_pool)
    assert report.mttr_seconds == pytest.approx(resolved.time_to_resolve_seconds)


async def test_figures_give_count_median_and_mean_and_leave_dismissed_incidents_out(
    monitor_pool: asyncpg.Pool,
) -> None:
    made = Spans()
    # Three places, each an incident: orders waiting about 40 s, 45 s and (a forged test
    # order nobody looked at) 600 s when detection first runs.
    spans = [made.happy_move(0, "o-usual", ago(40))]
    spans += [made.happy_move(step, "o-also", ago(50 - step * 5)) for step in range(2)]
    spans += [made.happy_move(step, "o-forged", ago(610 - step * 5)) for step in range(3)]
    await send(monitor_pool, spans)
    opened = (await detection.tick(monitor_pool, SLO, management())).opened
    by_order = {f.order_id: f for f in opened}
    assert sorted(by_order) == ["o-also", "o-forged", "o-usual"]
    assert len({f.incident_id for f in opened}) == 3
    detect = {order: (f.detected_at - f.since).total_seconds() for order, f in by_order.items()}

    report = await store.incidents(monitor_pool)
    figures = report.time_to_detect
    assert figures.count == 3
    assert figures.median_seconds == pytest.approx(detect["o-also"]), "the middle one"
    assert figures.mean_seconds == pytest.approx(sum(detect.values()) / 3)
    assert report.mttd_seconds == figures.mean_seconds
    assert figures.mean_seconds > 4 * figures.median_seconds, "the outlier moves the mean only"
    assert report.time_to_resolve.count == 0 and report.time_to_resolve.median_seconds is None

    # Dismissed, the forged order leaves the figures at once, before detection resolves its
    # incident (which it then does, without a time to resolve).
    await store.dismiss(monitor_pool, by_order["o-forged"].id, "devops@example.com", "forged")
    for _ in range(2):
        report = await store.incidents(monitor_pool)
        assert report.time_to_detect.count == 2
        assert report.time_to_detect.median_seconds == pytest.approx(
            (detect["o-usual"] + detect["o-also"]) / 2
        )
        assert report.open + report.resolved == 3, "it is still listed"
        result = await detection.tick(monitor_pool, SLO, management())
    (resolved,) = [i for i in report.incidents if i.dismissed]
    assert resolved.id == by_order["o-forged"].incident_id
    assert resolved.time_to_resolve_seconds is None and result.opened == []

    # The others resolve as their orders move on: each counts toward the time to resolve.
    await send(
        monitor_pool,
        [made.happy_move(1, "o-usual", ago(1)), made.happy_move(2, "o-also", ago(1))],
    )
    result = await detection.tick(monitor_pool, SLO, management())
    assert len(result.incidents_resolved) == 2
    resolve = sorted(i.time_to_resolve_seconds or 0.0 for i in result.incidents_resolved)
    report = await store.incidents(monitor_pool)
    assert report.time_to_resolve.count == 2
    assert report.time_to_resolve.median_seconds == pytest.approx(sum(resolve) / 2)
    assert report.time_to_resolve.mean_seconds == pytest.approx(sum(resolve) / 2)
    assert report.mttr_seconds == report.time_to_resolve.mean_seconds


async def test_a_later_status_without_the_earlier_is_not_seen_not_stuck(
    monitor_pool: asyncpg.Pool,
) -> None:
    made = Spans()
    # o-gap was submitted 100 s ago (its SLO there is 30 s); the spans of its pricing and its
    # approval were lost, and MES taking it 5 s ago arrives: it never stopped.
    await send(
        monitor_pool,
        [made.happy_move(0, "o-gap", ago(100)), made.happy_move(3, "o-gap", ago(5))],
    )
    # o-late: the same, but detection ran while only its submission had arrived.
    await send(monitor_pool, [made.happy_move(0, "o-late", ago(100))])
    result = await detection.tick(monitor_pool, SLO, management())
    assert [(f.order_id, f.status) for f in result.opened] == [("o-late", "SUBMITTED")]
    await send(monitor_pool, [made.happy_move(3, "o-late", ago(4))])
    result = await detection.tick(monitor_pool, SLO, management())
    assert result.opened == [] and result.cleared == 1
    assert await store.findings(monitor_pool) == []

    for order in ("o-gap", "o-late"):
        journey = await store.journey(monitor_pool, order)
        assert journey is not None and journey.status == OrderStatus.MANUFACTURING_STARTED
        assert [m.status for m in journey.transitions] == ["SUBMITTED", "MANUFACTURING_STARTED"]
        assert [(n.status, n.before) for n in journey.not_seen] == [
            ("PRICE_CALCULATED", "MANUFACTURING_STARTED"),
            ("MANUFACTURING_APPROVED", "MANUFACTURING_STARTED"),
        ]

    # A lost span that turns up after all takes its place: it is seen now.
    await send(monitor_pool, [made.happy_move(1, "o-gap", ago(60))])
    journey = await store.journey(monitor_pool, "o-gap")
    assert journey is not None and journey.status == OrderStatus.MANUFACTURING_STARTED
    assert [n.status for n in journey.not_seen] == ["MANUFACTURING_APPROVED"]
    assert (await detection.tick(monitor_pool, SLO, management())).opened == []
