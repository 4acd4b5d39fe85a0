"""Detection on real PostgreSQL and RabbitMQ's management API: orders past their SLO are stuck
where they wait, errors and dead letters break them, findings sharing a place make one incident
that resolves itself, acknowledgement clears final orders."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from loupe.messaging.management import Management
from loupe.monitor import detection, store
from loupe.monitor.metrics import FlowMetrics
from loupe.monitor.models import FindingKind, IncidentState
from loupe.orders import OrderStatus
from tests.support.integration import amqp_url
from tests.support.monitor import HAPPY, SLO, management, send
from tests.support.otlp_spans import Spans, ago

pytestmark = pytest.mark.integration


async def test_an_order_past_its_slo_is_stuck_in_the_queue_until_it_moves(
    monitor_pool: asyncpg.Pool, broker: Any
) -> None:
    made = Spans()
    await send(monitor_pool, [made.happy_move(0, "o-stuck", ago(40))])
    # Another order, fresh: not stuck.
    await send(monitor_pool, [made.happy_move(0, "o-fresh", ago(1))])
    result = await detection.tick(monitor_pool, SLO, management())
    assert [f.order_id for f in result.opened] == ["o-stuck"]
    (finding,) = await store.findings(monitor_pool, FindingKind.STUCK)
    assert finding.state == FindingKind.STUCK and finding.status == "SUBMITTED"
    assert finding.service == "mes-api"
    assert finding.where == "queue mes.order-submitted"
    # Figures from RabbitMQ's management API for the queue it waits in.
    assert "queue mes.order-submitted: 0 ready, 0 unacknowledged, 0 consumer(s)" in (
        finding.evidence
    )
    assert finding.trace_id
    last = finding.last_step
    assert (last.status, last.service, last.operation) == (
        "SUBMITTED",
        "shop-api",
        "POST /orders",
    )
    assert last.trace_id == finding.trace_id and last.at == finding.since
    assert len(result.incidents_opened) == 1
    assert result.latencies[0] == pytest.approx(10, abs=3)

    # A second tick reports nothing new.
    assert (await detection.tick(monitor_pool, SLO, management())).opened == []

    await send(
        monitor_pool,
        [made.consumed("mes.order-submitted", ago(0.5), order_id="o-stuck", move=HAPPY[1][2:])],
    )
    result = await detection.tick(monitor_pool, SLO, management())
    assert result.cleared == 1
    assert await store.findings(monitor_pool) == []
    (resolved,) = result.incidents_resolved
    assert resolved.status == IncidentState.RESOLVED
    assert resolved.time_to_resolve_seconds == pytest.approx(40, abs=3)
    report = await store.incidents(monitor_pool)
    assert report.open == 0 and report.resolved == 1
    assert report.mttr_seconds == pytest.approx(40, abs=3)


async def test_a_hung_management_api_does_not_hold_up_ingest(monitor_pool: asyncpg.Pool) -> None:
    # A port that accepts connections and never answers: RabbitMQ's management API hung.
    hung = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = hung.sockets[0].getsockname()[1]
    management = Management(f"http://127.0.0.1:{port}", amqp_url(), timeout=5.0)
    made = Spans()
    await send(monitor_pool, [made.happy_move(0, "o-late", ago(40))])
    try:
        ticking = asyncio.create_task(detection.tick(monitor_pool, SLO, management))
        await asyncio.sleep(0.3)
        assert not ticking.done()
        # While the tick waits for the queue's figures, spans are still taken in.
        fresh = [made.happy_move(0, "o-new", ago(1))]
        stored = await asyncio.wait_for(send(monitor_pool, fresh), 2.0)
        assert stored.new_transitions == 1
        (opened,) = (await ticking).opened
    finally:
        hung.close()
    assert opened.order_id == "o-late"
    assert "RabbitMQ management API unreachable (ReadTimeout)" in opened.evidence


async def test_after_a_status_reaches_crm_it_waits_for_the_seller(
    monitor_pool: asyncpg.Pool,
) -> None:
    made = Spans()
    await send(
        monitor_pool,
        [
            made.happy_move(1, "o", ago(45)),
            made.happy_move(1, "o", ago(44), by="crm-api"),
        ],
    )
    await detection.tick(monitor_pool, SLO, management())
    (finding,) = await store.findings(monitor_pool)
    step = SLO.steps[OrderStatus.PRICE_CALCULATED]
    assert (finding.service, finding.where) == ("crm-api", step.then)
    assert finding.where.startswith("seller approval")


async def test_dead_letter_is_broken_at_once_and_an_error_after_its_grace(
    monitor_pool: asyncpg.Pool,
) -> None:
    made = Spans()
    await send(
        monitor_pool,
        [
            made.happy_move(0, "dl", ago(3)),
            made.happy_move(0, "err", ago(3)),
            made.consumed(
                "crm.order-status",
                ago(2),
                order_id="dl",
                error="poison message: field status is 'NOPE'",
                dead_lettered=True,
            ),
            made.consumed(
                "crm.order-status",
                ago(0.2),
                order_id="err",
                error="ConnectionError: database is down",
            ),
        ],
    )
    await detection.tick(monitor_pool, SLO, management())
    (finding,) = await store.findings(monitor_pool)
    assert finding.order_id == "dl" and finding.state == FindingKind.BROKEN
    assert finding.service == "crm-api" and finding.where == "queue crm.order-status"
    assert finding.evidence == "dead-lettered: poison message: field status is 'NOPE'"
    assert finding.status == "SUBMITTED"

    # The other error gets its grace (3 s here) for a retry to succeed; none comes.
    async with monitor_pool.acquire() as connection:
        await connection.execute(
            "UPDATE orders SET broken_at = now() - interval '1 second' WHERE order_id = 'err'"
        )
    await detection.tick(monitor_pool, SLO, management())
    broken = {f.order_id: f for f in await store.findings(monitor_pool, FindingKind.BROKEN)}
    assert broken["err"].evidence == "ConnectionError: database is down"
    # Both share a place: one incident.
    report = await store.incidents(monitor_pool, IncidentState.OPEN)
    assert [i.orders for i in report.incidents] == [2]


async def test_an_error_followed_by_progress_is_not_broken(monitor_pool: asyncpg.Pool) -> None:
    made = Spans()
    await send(
        monitor_pool,
        [
            made.happy_move(0, "r", ago(20)),
            made.make("mes-api", "process loupe.orders", ago(15), order_id="r", error="timeout"),
            made.happy_move(1, "r", ago(12)),
        ],
    )
    assert (await detection.tick(monitor_pool, SLO, management())).opened == []


async def test_failed_order_is_broken_until_acknowledged(monitor_pool: asyncpg.Pool) -> None:
    made = Spans()
    await send(
        monitor_pool,
        [
            made.happy_move(0, "f", ago(5)),
            made.make(
                "mes-api", "price order", ago(4), order_id="f", error="model cannot be priced"
            ),
            made.make(
                "mes-api",
                "process loupe.orders",
                ago(4),
                order_id="f",
                move=("SUBMITTED", "FAILED"),
                attributes={"order.failure.reason": "model cannot be priced: open surface"},
            ),
        ],
    )
    await detection.tick(monitor_pool, SLO, management())
    (finding,) = await store.findings(monitor_pool)
    assert finding.state == FindingKind.BROKEN and finding.status == "FAILED"
    assert finding.evidence == "FAILED: model cannot be priced: open surface"
    assert (finding.service, finding.where) == ("mes-api", "price order")

    acknowledged = await store.acknowledge(monitor_pool, finding.incident_id, "devops@example.com")
    assert acknowledged is not None and acknowledged.acknowledged_by == "devops@example.com"
    assert await store.findings(monitor_pool) == []
    detail = await store.incident(monitor_pool, finding.incident_id)
    assert detail is not None
    assert [f.cleared_reason for f in detail.findings] == ["acknowledged by devops@example.com"]
    assert (await detection.tick(monitor_pool, SLO, management())).opened == []


async def test_a_dead_letter_with_no_order_is_reported_once(monitor_pool: asyncpg.Pool) -> None:
    made = Spans()
    await send(
        monitor_pool,
        [
            made.consumed(
                "mes.order-submitted",
                ago(1),
                error="poison message: not JSON",
                dead_lettered=True,
            )
        ],
    )
    await detection.tick(monitor_pool, SLO, management())
    await detection.tick(monitor_pool, SLO, management())
    (finding,) = await store.findings(monitor_pool)
    assert finding.order_id is None and finding.state == FindingKind.BROKEN
    assert finding.where == "queue mes.order-submitted"
    assert finding.evidence == "dead-lettered: poison message: not JSON"


POISON = "poison message: field occurred_at is missing or not a string"


@dataclass(frozen=True)
class PoisonSpans:
    """A poison message that names order `order_id`: the views dead-letter their copies, and
    CRM follows order.failed; MES's consumer span fails, dead-letters and (its hook) fails the
    order. MES's span ends after CRM's copy of the move, but began first."""

    crm_dead_letter: ReadableSpan
    crm_copy: ReadableSpan
    mes_failure: ReadableSpan

    @classmethod
    def of(cls, made: Spans, order_id: str) -> PoisonSpans:
        failed = ("SUBMITTED", "FAILED")
        return cls(
            crm_dead_letter=made.consumed(
                "crm.order-status", ago(2.1), order_id=order_id, error=POISON, dead_lettered=True
            ),
            crm_copy=made.consumed("crm.order-status", ago(1.5), order_id=order_id, move=failed),
            mes_failure=made.consumed(
                "mes.order-submitted",
                ago(1),
                lasted=2,
                order_id=order_id,
                move=failed,
                error=POISON,
                dead_lettered=True,
                attributes={"order.failure.reason": POISON},
            ),
        )


async def test_an_order_failed_by_a_dead_letter_is_broken_where_it_failed(
    monitor_pool: asyncpg.Pool,
) -> None:
    poison = PoisonSpans.of(Spans(), "p")
    await send(monitor_pool, [poison.crm_dead_letter, poison.mes_failure, poison.crm_copy])
    await detection.tick(monitor_pool, SLO, management())
    (finding,) = await store.findings(monitor_pool)
    assert (finding.state, finding.status) == (FindingKind.BROKEN, "FAILED")
    assert (finding.service, finding.where) == ("mes-api", "queue mes.order-submitted")
    assert finding.evidence == f"FAILED: {POISON}"
    journey = await store.journey(monitor_pool, "p")
    assert journey is not None
    (failed,) = journey.transitions
    assert (failed.status, failed.service) == ("FAILED", "mes-api")
    assert [s.service for s in failed.seen_by] == ["crm-api"]


async def test_a_broken_finding_follows_its_move_when_the_origin_arrives_after_a_copy(
    monitor_pool: asyncpg.Pool,
) -> None:
    poison = PoisonSpans.of(Spans(), "q")
    # CRM's spans are exported first: its dead-lettered copy and its copy of the move.
    await send(monitor_pool, [poison.crm_dead_letter, poison.crm_copy])
    first = await detection.tick(monitor_pool, SLO, management())
    (finding,) = await store.findings(monitor_pool)
    assert (finding.service, finding.where) == ("crm-api", "queue crm.order-status")
    (wrong,) = first.incidents_opened

    # MES's span, which failed the order, arrives seconds later.
    await send(monitor_pool, [poison.mes_failure])
    second = await detection.tick(monitor_pool, SLO, management())
    (finding,) = await store.findings(monitor_pool)
    assert (finding.service, finding.where) == ("mes-api", "queue mes.order-submitted")
    assert finding.evidence == f"FAILED: {POISON}"
    (right,) = second.incidents_opened
    assert (right.service, right.where) == ("mes-api", "queue mes.order-submitted")
    assert finding.incident_id == right.id
    # The incident opened on the copy's account held nothing: it resolves, and counts nowhere.
    (resolved,) = second.incidents_resolved
    assert (resolved.id, resolved.dismissed) == (wrong.id, True)
    assert (await detection.tick(monitor_pool, SLO, management())).incidents_opened == []


DAY = 24 * 3600.0


async def test_a_stuck_order_silent_past_the_horizon_expires_and_its_incident_resolves(
    monitor_pool: asyncpg.Pool,
) -> None:
    made = Spans()
    await send(
        monitor_pool,
        [
            made.happy_move(0, "o-silent", ago(DAY + 60)),
            made.happy_move(0, "o-heard", ago(DAY + 60)),
            # CRM's copy of o-heard's move, an hour ago: it is not silent.
            made.happy_move(0, "o-heard", ago(3600), by="crm-api"),
        ],
    )
    opened = (await detection.tick(monitor_pool, SLO, management())).opened
    assert sorted(f.order_id or "" for f in opened) == ["o-heard", "o-silent"]
    # Orders flow through SUBMITTED again after them.
    await send(
        monitor_pool, [made.happy_move(0, "o-next", ago(10)), made.happy_move(1, "o-next", ago(5))]
    )
    # Both findings stand until they have stood for the horizon (24 h by default).
    result = await detection.tick(monitor_pool, SLO, management())
    assert (result.expired, result.incidents_resolved) == ([], [])

    async with monitor_pool.acquire() as connection:
        await connection.execute("UPDATE findings SET detected_at = detected_at - interval '1 day'")
    result = await detection.tick(monitor_pool, SLO, management())
    (expired,) = result.expired
    assert (expired.order_id, expired.cleared_reason) == ("o-silent", "expired: no span for 24 h")
    (still,) = await store.findings(monitor_pool)
    assert still.order_id == "o-heard"
    assert result.incidents_resolved == [], "o-heard still holds the incident open"

    await send(monitor_pool, [made.happy_move(1, "o-heard", ago(1))])
    result = await detection.tick(monitor_pool, SLO, management())
    (resolved,) = result.incidents_resolved
    assert resolved.id == expired.incident_id
    detail = await store.incident(monitor_pool, resolved.id)
    assert detail is not None
    assert {f.order_id: f.cleared_reason for f in detail.findings} == {
        "o-silent": "expired: no span for 24 h",
        "o-heard": None,  # it moved on
    }
    # Still at SUBMITTED and past its deadline, the silent order is not reported again.
    assert (await detection.tick(monitor_pool, SLO, management())).opened == []
    # Nor kept forever: retention forgets it like a settled order.
    await detection.prune(monitor_pool, timedelta(hours=1))
    assert await store.journey(monitor_pool, "o-silent") is None
    assert await store.journey(monitor_pool, "o-next") is not None


async def test_the_horizon_is_the_monitors_setting(monitor_pool: asyncpg.Pool) -> None:
    made = Spans()
    await send(monitor_pool, [made.happy_move(0, "o-late", ago(3600))])
    await detection.tick(monitor_pool, SLO, management())
    async with monitor_pool.acquire() as connection:
        await connection.execute("UPDATE findings SET detected_at = now() - interval '31 minutes'")
    half_hour = timedelta(minutes=30)
    assert (await detection.tick(monitor_pool, SLO, management())).expired == []
    (expired,) = (
        await detection.tick(monitor_pool, SLO, management(), stuck_horizon=half_hour)
    ).expired
    assert expired.cleared_reason == "expired: no span for 0.5 h"


async def test_a_failed_request_that_created_no_order_breaks_its_place_until_it_works(
    monitor_pool: asyncpg.Pool,
) -> None:
    made = Spans()

    def post_orders(at: float, **details: Any) -> Any:
        return made.make("shop-api", "POST /orders", ago(at), kind=SpanKind.SERVER, **details)

    await send(
        monitor_pool,
        [
            # Orders were taken here before: a request passing is what the monitor sees.
            post_orders(60, order_id="o-before", move=("NEW", "SUBMITTED")),
            # shop-api answers 503: its database is away. One request failed before it had an
            # order id, one after, its creation rolled back with it.
            post_orders(10, error="HTTP 503: the database is unavailable"),
            post_orders(
                8,
                order_id="o-never",
                move=("NEW", "SUBMITTED"),
                error="ConnectionDoesNotExistError: connection was closed",
            ),
        ],
    )
    result = await detection.tick(monitor_pool, SLO, management())
    (finding,) = [f for f in result.opened if f.order_id is None]
    assert (finding.state, finding.status, finding.service, finding.where) == (
        FindingKind.BROKEN,
        None,
        "shop-api",
        "POST /orders",
    )
    assert finding.evidence == (
        "2 failed requests that named no order, none succeeded since;"
        " the last: ConnectionDoesNotExistError: connection was closed"
    )
    # Never an order: the one it failed to create is nowhere.
    assert await store.journey(monitor_pool, "o-never") is None
    assert [f.order_id for f in await store.findings(monitor_pool)] == ["o-before", None]
    incident = await store.incident(monitor_pool, finding.incident_id)
    assert incident is not None and incident.where == "POST /orders"
    metrics = FlowMetrics()
    await metrics.refresh(monitor_pool, SLO)
    gauges = metrics.registry.get_sample_value
    assert gauges("loupe_places_broken", {"service": "shop-api"}) == 1
    assert gauges("loupe_orders_broken", {"service": "shop-api"}) is None
    # Nor reported twice.
    assert (await detection.tick(monitor_pool, SLO, management())).opened == []

    # The place works again: an order is taken there.
    await send(monitor_pool, [post_orders(0.5, order_id="o-after", move=("NEW", "SUBMITTED"))])
    result = await detection.tick(monitor_pool, SLO, management())
    assert result.cleared == 1
    (resolved,) = result.incidents_resolved
    assert resolved.id == finding.incident_id and resolved.time_to_resolve_seconds
    assert [f.order_id for f in await store.findings(monitor_pool)] == ["o-before"]


async def test_no_broken_place_when_the_trace_names_an_order_a_retry_works_or_none_ever_did(
    monitor_pool: asyncpg.Pool,
) -> None:
    made = Spans()
    # crm-api's approve answers 500: the step's span names the order and failed, so the order
    # is broken, not the route.
    approve = made.make(
        "crm-api", "POST /orders/{order_id}/approve", ago(10), kind=SpanKind.SERVER, error="500"
    )
    step = made.make(
        "crm-api", "approve manufacturing", ago(10), order_id="o-1", error="boom", parent=approve
    )
    # mes-api's operators' queue fails: the monitor never sees it work (its requests name no
    # order), so it could never see it resolve, and reports no place.
    queue = made.make("mes-api", "GET /operator/queue", ago(10), kind=SpanKind.SERVER, error="500")
    # mes-api's B2B intake fails once, and the partner's retry creates the order.
    intake = [
        made.make("mes-api", "POST /b2b/orders", ago(10), kind=SpanKind.SERVER, error="500"),
        made.make(
            "mes-api",
            "POST /b2b/orders",
            ago(9),
            kind=SpanKind.SERVER,
            order_id="o-b2b",
            move=("NEW", "SUBMITTED"),
        ),
    ]
    await send(monitor_pool, [made.happy_move(1, "o-1", ago(20)), approve, step, queue, *intake])
    opened = (await detection.tick(monitor_pool, SLO, management())).opened
    assert [(f.order_id, f.where) for f in opened] == [("o-1", "approve manufacturing")]
