"""Detection on real PostgreSQL and RabbitMQ's management API: orders past their SLO are stuck
where they wait, errors and dead letters break them, findings sharing a place make one incident
that resolves itself, acknowledgement clears final orders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from opentelemetry.trace import SpanKind

from loupe.messaging.management import Management
from loupe.monitor import detection, store
from loupe.monitor.models import FindingKind, IncidentState
from loupe.orders import OrderStatus
from tests.support.integration import AMQP_URL, POSTGRES_DSN
from tests.support.monitor import HAPPY, MANAGEMENT, SLO, send
from tests.support.otlp_spans import Spans, ago

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(database_name: Callable[[], str]) -> AsyncIterator[asyncpg.Pool]:
    pool = await store.open_store(POSTGRES_DSN, database_name())
    yield pool
    await pool.close()


async def test_an_order_past_its_slo_is_stuck_in_the_queue_until_it_moves(
    pool: asyncpg.Pool, broker: Any
) -> None:
    made = Spans()
    await send(
        pool,
        [made.make("shop-api", "POST /orders", ago(40), order_id="o-stuck", move=HAPPY[0][2:])],
    )
    # Another order, fresh: not stuck.
    await send(
        pool,
        [made.make("shop-api", "POST /orders", ago(1), order_id="o-fresh", move=HAPPY[0][2:])],
    )
    result = await detection.tick(pool, SLO, MANAGEMENT)
    assert [f.order_id for f in result.opened] == ["o-stuck"]
    (finding,) = await store.findings(pool, FindingKind.STUCK)
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
    assert (await detection.tick(pool, SLO, MANAGEMENT)).opened == []

    await send(
        pool,
        [
            made.make(
                "mes-api",
                "process loupe.orders",
                ago(0.5),
                order_id="o-stuck",
                move=HAPPY[1][2:],
                kind=SpanKind.CONSUMER,
                attributes={"messaging.destination.subscription.name": "mes.order-submitted"},
            )
        ],
    )
    result = await detection.tick(pool, SLO, MANAGEMENT)
    assert result.cleared == 1
    assert await store.findings(pool) == []
    (resolved,) = result.incidents_resolved
    assert resolved.status == IncidentState.RESOLVED
    assert resolved.time_to_resolve_seconds == pytest.approx(40, abs=3)
    report = await store.incidents(pool)
    assert report.open == 0 and report.resolved == 1
    assert report.mttr_seconds == pytest.approx(40, abs=3)


async def test_a_hung_management_api_does_not_hold_up_ingest(pool: asyncpg.Pool) -> None:
    # A port that accepts connections and never answers: RabbitMQ's management API hung.
    hung = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = hung.sockets[0].getsockname()[1]
    management = Management(f"http://127.0.0.1:{port}", AMQP_URL, timeout=5.0)
    made = Spans()
    await send(
        pool,
        [made.make("shop-api", "POST /orders", ago(40), order_id="o-late", move=HAPPY[0][2:])],
    )
    try:
        ticking = asyncio.create_task(detection.tick(pool, SLO, management))
        await asyncio.sleep(0.3)
        assert not ticking.done()
        # While the tick waits for the queue's figures, spans are still taken in.
        fresh = [made.make("shop-api", "POST /orders", ago(1), order_id="o-new", move=HAPPY[0][2:])]
        stored = await asyncio.wait_for(send(pool, fresh), 2.0)
        assert stored.new_transitions == 1
        (opened,) = (await ticking).opened
    finally:
        hung.close()
    assert opened.order_id == "o-late"
    assert "RabbitMQ management API unreachable (ReadTimeout)" in opened.evidence


async def test_after_a_status_reaches_crm_it_waits_for_the_seller(pool: asyncpg.Pool) -> None:
    made = Spans()
    await send(
        pool,
        [
            made.make("mes-api", "process loupe.orders", ago(45), order_id="o", move=HAPPY[1][2:]),
            made.make("crm-api", "process loupe.orders", ago(44), order_id="o", move=HAPPY[1][2:]),
        ],
    )
    await detection.tick(pool, SLO, MANAGEMENT)
    (finding,) = await store.findings(pool)
    step = SLO.steps[OrderStatus.PRICE_CALCULATED]
    assert (finding.service, finding.where) == ("crm-api", step.then)
    assert finding.where.startswith("seller approval")


async def test_dead_letter_is_broken_at_once_and_an_error_after_its_grace(
    pool: asyncpg.Pool,
) -> None:
    made = Spans()
    queue = {"messaging.destination.subscription.name": "crm.order-status"}
    await send(
        pool,
        [
            made.make("shop-api", "POST /orders", ago(3), order_id="dl", move=HAPPY[0][2:]),
            made.make("shop-api", "POST /orders", ago(3), order_id="err", move=HAPPY[0][2:]),
            made.make(
                "crm-api",
                "process loupe.orders",
                ago(2),
                order_id="dl",
                error="poison message: field status is 'NOPE'",
                dead_lettered=True,
                kind=SpanKind.CONSUMER,
                attributes=queue,
            ),
            made.make(
                "crm-api",
                "process loupe.orders",
                ago(0.2),
                order_id="err",
                error="ConnectionError: database is down",
                kind=SpanKind.CONSUMER,
                attributes=queue,
            ),
        ],
    )
    await detection.tick(pool, SLO, MANAGEMENT)
    (finding,) = await store.findings(pool)
    assert finding.order_id == "dl" and finding.state == FindingKind.BROKEN
    assert finding.service == "crm-api" and finding.where == "queue crm.order-status"
    assert finding.evidence == "dead-lettered: poison message: field status is 'NOPE'"
    assert finding.status == "SUBMITTED"

    # The other error gets its grace (3 s here) for a retry to succeed; none comes.
    async with pool.acquire() as connection:
        await connection.execute(
            "UPDATE orders SET broken_at = now() - interval '1 second' WHERE order_id = 'err'"
        )
    await detection.tick(pool, SLO, MANAGEMENT)
    broken = {f.order_id: f for f in await store.findings(pool, FindingKind.BROKEN)}
    assert broken["err"].evidence == "ConnectionError: database is down"
    # Both share a place: one incident.
    report = await store.incidents(pool, IncidentState.OPEN)
    assert [i.orders for i in report.incidents] == [2]


async def test_an_error_followed_by_progress_is_not_broken(pool: asyncpg.Pool) -> None:
    made = Spans()
    await send(
        pool,
        [
            made.make("shop-api", "POST /orders", ago(20), order_id="r", move=HAPPY[0][2:]),
            made.make("mes-api", "process loupe.orders", ago(15), order_id="r", error="timeout"),
            made.make("mes-api", "process loupe.orders", ago(12), order_id="r", move=HAPPY[1][2:]),
        ],
    )
    assert (await detection.tick(pool, SLO, MANAGEMENT)).opened == []


async def test_failed_order_is_broken_until_acknowledged(pool: asyncpg.Pool) -> None:
    made = Spans()
    await send(
        pool,
        [
            made.make("shop-api", "POST /orders", ago(5), order_id="f", move=HAPPY[0][2:]),
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
    await detection.tick(pool, SLO, MANAGEMENT)
    (finding,) = await store.findings(pool)
    assert finding.state == FindingKind.BROKEN and finding.status == "FAILED"
    assert finding.evidence == "FAILED: model cannot be priced: open surface"
    assert (finding.service, finding.where) == ("mes-api", "price order")

    acknowledged = await store.acknowledge(pool, finding.incident_id, "devops@example.com")
    assert acknowledged is not None and acknowledged.acknowledged_by == "devops@example.com"
    assert await store.findings(pool) == []
    assert (await detection.tick(pool, SLO, MANAGEMENT)).opened == []


async def test_a_dead_letter_with_no_order_is_reported_once(pool: asyncpg.Pool) -> None:
    made = Spans()
    await send(
        pool,
        [
            made.make(
                "mes-api",
                "process loupe.orders",
                ago(1),
                error="poison message: not JSON",
                dead_lettered=True,
                kind=SpanKind.CONSUMER,
                attributes={"messaging.destination.subscription.name": "mes.order-submitted"},
            )
        ],
    )
    await detection.tick(pool, SLO, MANAGEMENT)
    await detection.tick(pool, SLO, MANAGEMENT)
    (finding,) = await store.findings(pool)
    assert finding.order_id is None and finding.state == FindingKind.BROKEN
    assert finding.where == "queue mes.order-submitted"
    assert finding.evidence == "dead-lettered: poison message: not JSON"


async def test_an_order_failed_by_a_dead_letter_is_broken_where_it_failed(
    pool: asyncpg.Pool,
) -> None:
    made = Spans()
    intake = {"messaging.destination.subscription.name": "mes.order-submitted"}
    view = {"messaging.destination.subscription.name": "crm.order-status"}
    reason = "poison message: field occurred_at is missing or not a string"
    await send(
        pool,
        [
            # The views dead-letter their copies too, and CRM then follows order.failed.
            made.make(
                "crm-api",
                "process loupe.orders",
                ago(2.1),
                order_id="p",
                error=reason,
                dead_lettered=True,
                kind=SpanKind.CONSUMER,
                attributes=view,
            ),
            # MES's consumer span fails, dead-letters and (its hook) fails the order; it ends
            # after CRM's copy of the move, but began first.
            made.make(
                "mes-api",
                "process loupe.orders",
                ago(1),
                lasted=2,
                order_id="p",
                move=("SUBMITTED", "FAILED"),
                error=reason,
                dead_lettered=True,
                kind=SpanKind.CONSUMER,
                attributes={**intake, "order.failure.reason": reason},
            ),
            made.make(
                "crm-api",
                "process loupe.orders",
                ago(1.5),
                order_id="p",
                move=("SUBMITTED", "FAILED"),
                kind=SpanKind.CONSUMER,
                attributes=view,
            ),
        ],
    )
    await detection.tick(pool, SLO, MANAGEMENT)
    (finding,) = await store.findings(pool)
    assert (finding.state, finding.status) == (FindingKind.BROKEN, "FAILED")
    assert (finding.service, finding.where) == ("mes-api", "queue mes.order-submitted")
    assert finding.evidence == f"FAILED: {reason}"
    journey = await store.journey(pool, "p")
    assert journey is not None
    (failed,) = journey.transitions
    assert (failed.status, failed.service) == ("FAILED", "mes-api")
    assert [s.service for s in failed.seen_by] == ["crm-api"]
