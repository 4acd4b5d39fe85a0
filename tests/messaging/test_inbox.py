"""A message delivered twice is applied once: claim_delivery in the handler's transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from loupe.messaging import Delivery
from loupe.messaging.inbox import claim_delivery
from loupe.orders import OrderEvent, OrderSource, OrderStatus
from loupe.service.kernel import open_service_database
from tests.support.integration import MIGRATIONS, POSTGRES_DSN, Broker, wait_for_consumer_spans

pytestmark = pytest.mark.integration

QUEUE = "crm.order-status"


@pytest.fixture
async def pool(database_name: Callable[[], str]) -> AsyncIterator[asyncpg.Pool]:
    """A throwaway database with the CRM's migrations and a counter to count effects by."""
    pool = await open_service_database(POSTGRES_DSN, database_name(), MIGRATIONS["crm"])
    try:
        await pool.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        await pool.execute("INSERT INTO counter VALUES (1, 0)")
        yield pool
    finally:
        await pool.close()


def _event() -> OrderEvent:
    return OrderEvent.now(
        order_id="0d6f7c2e-3b1a-4e9d-8c5f-7a2b4c6d8e0f",
        status=OrderStatus.SHIPPED,
        previous_status=OrderStatus.MANUFACTURING_COMPLETED,
        source=OrderSource.SHOP,
    )


async def test_same_message_id_twice_is_applied_once(
    broker: Broker, spans: InMemorySpanExporter, pool: asyncpg.Pool
) -> None:
    claims: list[bool] = []

    async def handler(event: OrderEvent, delivery: Delivery) -> None:
        async with pool.acquire() as connection, connection.transaction():
            claimed = await claim_delivery(connection, delivery)
            claims.append(claimed)
            if claimed:
                await connection.execute("UPDATE counter SET n = n + 1 WHERE id = 1")

    await broker.consume(QUEUE, handler)
    event = _event()
    for _ in range(2):
        await broker.publisher.publish(
            broker.exchanges.orders, event.to_json(), "order.shipped", message_id="shipped-once"
        )

    first, second = await wait_for_consumer_spans(spans, QUEUE, 2)

    assert await pool.fetchval("SELECT n FROM counter WHERE id = 1") == 1
    assert claims == [True, False]
    rows = await pool.fetch("SELECT queue, message_id FROM processed_messages")
    assert [tuple(r) for r in rows] == [(QUEUE, "shipped-once")]
    for span in (first, second):
        assert (span.attributes or {})["messaging.message.id"] == "shipped-once"
        assert span.status.status_code is StatusCode.UNSET
    assert "loupe.messaging.duplicate" not in (first.attributes or {})
    assert (second.attributes or {})["loupe.messaging.duplicate"] is True
    assert any(e.name == "duplicate delivery ignored" for e in second.events)
    assert await broker.depth(QUEUE) == 0


async def test_a_failed_transaction_releases_the_claim(
    broker: Broker, spans: InMemorySpanExporter, pool: asyncpg.Pool
) -> None:
    # The claim is part of the handler's transaction: when the effect fails, so does the
    # claim, and the retried delivery is applied (once).
    calls = 0

    async def handler(event: OrderEvent, delivery: Delivery) -> None:
        nonlocal calls
        calls += 1
        async with pool.acquire() as connection, connection.transaction():
            if await claim_delivery(connection, delivery):
                await connection.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
                if calls == 1:
                    raise ConnectionError("lost the database mid-transaction")

    await broker.consume(QUEUE, handler, max_attempts=3, retry_delay_ms=100)
    await broker.publisher.publish_event(broker.exchanges.orders, _event())

    first, second = await wait_for_consumer_spans(spans, QUEUE, 2)
    assert first.status.status_code is StatusCode.ERROR
    assert second.status.status_code is StatusCode.UNSET
    assert "loupe.messaging.duplicate" not in (second.attributes or {})
    assert await pool.fetchval("SELECT n FROM counter WHERE id = 1") == 1
    assert await pool.fetchval("SELECT count(*) FROM processed_messages") == 1
