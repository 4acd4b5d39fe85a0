"""Broker-side findings on real RabbitMQ (the real topology in a throwaway vhost) and
PostgreSQL: unroutable messages and a work queue nobody consumes are found at the first tick,
each opens an incident, and both clear, and the incident resolves, once the broker shows the
condition gone."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
import asyncpg
import httpx
import pytest
from prometheus_client import generate_latest

from loupe.accounts import Account
from loupe.messaging.management import Management
from loupe.messaging.topology import DEAD_LETTER_QUEUE, QUEUES, UNROUTABLE_QUEUE
from loupe.monitor import detection, store
from loupe.monitor.broker import BrokerWatch
from loupe.monitor.metrics import FlowMetrics
from loupe.monitor.models import FindingKind, IncidentState
from loupe.orders import OrderEvent, OrderSource, OrderStatus
from tests.support.integration import Broker, amqp_url
from tests.support.monitor import SLO, management, send
from tests.support.otlp_spans import Spans, ago

pytestmark = pytest.mark.integration


@pytest.fixture
async def watch() -> AsyncIterator[BrokerWatch]:
    looking = BrokerWatch(amqp_url(Account.MONITOR), management())
    yield looking
    await looking.close()


async def _tick(pool: asyncpg.Pool, watch: BrokerWatch) -> detection.TickResult:
    return await detection.tick(pool, SLO, management(), watch=watch)


async def _misroute(broker: Broker, key: str, app: str, order_id: str | None) -> None:
    body = json.dumps({"order_id": order_id} if order_id else {"note": "no order"}).encode()
    await broker.exchanges.orders.publish(
        aio_pika.Message(body, app_id=app, timestamp=datetime.now(UTC)), routing_key=key
    )


async def test_unroutable_messages_are_found_at_once_and_clear_when_handled(
    monitor_pool: asyncpg.Pool, broker: Broker, watch: BrokerWatch
) -> None:
    order_id = str(uuid.uuid4())
    await _misroute(broker, "ordr.shipped", "partner-gateway", order_id)
    result = await _tick(monitor_pool, watch)
    (finding,) = result.opened
    assert finding.state == FindingKind.UNROUTABLE
    assert (finding.service, finding.where, finding.order_id) == (
        "partner-gateway",
        "exchange loupe.orders, routing key ordr.shipped",
        order_id,
    )
    assert finding.evidence.startswith(
        "1 message published by partner-gateway to exchange loupe.orders with routing key"
        f" ordr.shipped, about order {order_id}: no queue is bound to it"
    )
    assert finding.status is None and finding.trace_id is None
    # Since its publishing, found at the first tick after it.
    assert 0 <= (finding.detected_at - finding.since).total_seconds() < 3
    (incident,) = result.incidents_opened
    assert (incident.state, incident.service, incident.where) == (
        FindingKind.UNROUTABLE,
        "partner-gateway",
        "exchange loupe.orders, routing key ordr.shipped",
    )

    # The order is one the monitor follows: its own findings' rules leave this one alone.
    await send(monitor_pool, [Spans().happy_move(0, order_id, ago(1))])
    assert (await _tick(monitor_pool, watch)).cleared == 0
    assert [f.id for f in await store.findings(monitor_pool)] == [finding.id]

    # Another of the same: counted in the open finding, no new one; another key is another.
    await _misroute(broker, "ordr.shipped", "partner-gateway", order_id)
    await _misroute(broker, "orders.closed", "crm-api", None)
    result = await _tick(monitor_pool, watch)
    (other,) = result.opened
    assert (other.service, other.order_id) == ("crm-api", None)
    found = {f.service: f for f in await store.findings(monitor_pool, FindingKind.UNROUTABLE)}
    assert found["partner-gateway"].evidence.startswith("2 messages published by partner-gateway")
    assert found["partner-gateway"].id == finding.id
    # Looking at them left every message where it was.
    assert await broker.depth(UNROUTABLE_QUEUE) == 3

    # Handled: someone takes them off the queue (after publishing them again, rightly keyed).
    for _ in range(3):
        await broker.get(UNROUTABLE_QUEUE, "an unroutable message")
    result = await _tick(monitor_pool, watch)
    assert result.cleared == 2
    assert await store.findings(monitor_pool) == []
    assert {i.service for i in result.incidents_resolved} == {"partner-gateway", "crm-api"}
    report = await store.incidents(monitor_pool)
    assert report.open == 0 and report.resolved == 2
    assert (await _tick(monitor_pool, watch)).opened == []


async def test_a_work_queue_with_messages_and_no_consumer_is_stuck_there_at_once(
    monitor_pool: asyncpg.Pool, broker: Broker, watch: BrokerWatch
) -> None:
    event = OrderEvent.now(
        order_id=str(uuid.uuid4()),
        status=OrderStatus.PRICE_CALCULATED,
        previous_status=OrderStatus.SUBMITTED,
        source=OrderSource.SHOP,
    )
    # order.price_calculated reaches both views' queues; nobody consumes in this vhost.
    await broker.publisher.publish_event(broker.exchanges.orders, event)
    result = await _tick(monitor_pool, watch)
    found = {f.where: f for f in result.opened}
    assert set(found) == {"queue crm.order-status", "queue shop.order-status"}
    crm = found["queue crm.order-status"]
    assert (crm.state, crm.service, crm.order_id, crm.status) == (
        FindingKind.STUCK,
        "crm-api",
        None,
        None,
    )
    assert crm.evidence.startswith("queue crm.order-status: 1 ready, 0 consumers: no crm-api")
    assert {(i.state, i.service, i.where) for i in result.incidents_opened} == {
        (FindingKind.STUCK, "crm-api", "queue crm.order-status"),
        (FindingKind.STUCK, "shop-api", "queue shop.order-status"),
    }
    metrics = FlowMetrics()
    await metrics.refresh(monitor_pool, SLO)
    scraped = generate_latest(metrics.registry).decode()
    assert 'loupe_queues_unconsumed{service="crm-api"} 1.0' in scraped
    # Not stuck orders: no status to wait at.
    assert 'loupe_orders_stuck{step="PRICE_CALCULATED"} 0.0' in scraped

    # Devops dismiss the shop's: not made again while its queue stays unconsumed.
    shop = found["queue shop.order-status"]
    await store.dismiss(monitor_pool, shop.id, "devops@example.com", "the shop is retired")

    # CRM consumes again: its finding clears and its incident resolves.
    seen: list[str] = []

    async def handle(received: OrderEvent, _: object) -> None:
        seen.append(received.order_id)

    await broker.consume(QUEUES["crm.order-status"].name, handle)  # type: ignore[arg-type]
    result = await _tick(monitor_pool, watch)
    assert seen == [event.order_id]
    assert result.cleared == 1 and result.opened == []
    (resolved,) = [i for i in result.incidents_resolved if i.service == "crm-api"]
    assert resolved.status == IncidentState.RESOLVED and not resolved.dismissed
    assert await store.findings(monitor_pool) == []

    # Once the shop's queue is emptied and fills again, it is a new condition: found again.
    await (await broker.channel.get_queue("shop.order-status", ensure=False)).purge()
    assert (await _tick(monitor_pool, watch)).opened == []
    await broker.publisher.publish_event(broker.exchanges.orders, event)
    (again,) = (await _tick(monitor_pool, watch)).opened
    assert (again.where, again.service) == ("queue shop.order-status", "shop-api")


async def test_while_the_broker_cannot_be_asked_its_findings_stay(
    monitor_pool: asyncpg.Pool, broker: Broker, watch: BrokerWatch
) -> None:
    await _misroute(broker, "nowhere.at-all", "tests", None)
    (finding,) = (await _tick(monitor_pool, watch)).opened
    await broker.get(UNROUTABLE_QUEUE, "the unroutable message")
    # A broker nobody answers at: no news, so the finding neither clears nor reopens.
    unreachable = BrokerWatch(
        "amqp://guest:guest@127.0.0.1:1/nowhere",
        Management("http://127.0.0.1:1", amqp_url(Account.MONITOR)),
    )
    assert await unreachable.look() is None
    result = await detection.tick(monitor_pool, SLO, management(), watch=unreachable)
    assert result.cleared == 0 and result.opened == []
    assert [f.id for f in await store.findings(monitor_pool)] == [finding.id]
    assert (await _tick(monitor_pool, watch)).cleared == 1


async def test_a_message_rabbitmq_dead_letters_itself_is_broken_until_handled(
    monitor_pool: asyncpg.Pool, broker: Broker, watch: BrokerWatch
) -> None:
    order_id = str(uuid.uuid4())
    event = OrderEvent.now(
        order_id=order_id,
        status=OrderStatus.SUBMITTED,
        previous_status=None,
        source=OrderSource.SHOP,
    )
    await broker.publisher.publish_event(broker.exchanges.orders, event)
    # A consumer that never acks it (it crashes on it each time): past the delivery limit
    # RabbitMQ dead-letters it, and no span says so.
    queue = await broker.channel.get_queue("mes.order-submitted", ensure=False)
    returned = 0
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        await message.nack(requeue=True)
        returned += 1
    assert returned > 1
    # The views' copies are consumed, as they would be: nothing else is wrong.
    for name in ("crm.order-status", "shop.order-status"):
        await (await broker.channel.get_queue(name, ensure=False)).purge()

    result = await _tick(monitor_pool, watch)
    (finding,) = result.opened
    assert (finding.state, finding.service, finding.where, finding.order_id) == (
        FindingKind.BROKEN,
        "mes-api",
        "queue mes.order-submitted",
        order_id,
    )
    assert "dead-lettered by RabbitMQ from mes.order-submitted" in finding.evidence
    assert "delivery limit" in finding.evidence
    (incident,) = result.incidents_opened
    assert (incident.state, incident.where) == (FindingKind.BROKEN, "queue mes.order-submitted")

    # Handled (requeued from the console, or taken off): the finding clears.
    await broker.get(DEAD_LETTER_QUEUE, "the dead letter")
    result = await _tick(monitor_pool, watch)
    assert result.cleared == 1 and await store.findings(monitor_pool) == []
    assert [i.id for i in result.incidents_resolved] == [incident.id]


async def test_the_watch_connects_again_after_its_connection_is_closed(
    broker: Broker, watch: BrokerWatch
) -> None:
    assert await watch.look() is not None
    admin = Management(management().url, amqp_url())
    async with httpx.AsyncClient(auth=admin.credentials, timeout=10) as client:

        async def own() -> list[str]:
            listed = (await client.get(f"{admin.url}/api/connections")).json()
            return [
                c["name"]
                for c in listed
                if c.get("vhost") == admin.vhost
                and (c.get("client_properties") or {}).get("connection_name")
                == "loupe-monitor broker watch"
            ]

        for _ in range(100):
            if names := await own():
                break
            await asyncio.sleep(0.1)
        for name in names:
            await client.delete(f"{admin.url}/api/connections/{name}")
    # Its client has seen the connection close (aio_pika then raises RuntimeError on its use).
    await asyncio.sleep(1)
    # As when RabbitMQ restarts: a look may find it unanswered, none raises, and the watch
    # soon answers again on a connection of its own.
    looks = [await watch.look() for _ in range(3)]
    for _ in range(20):
        if looks[-1] is not None:
            break
        looks.append(await watch.look())
        await asyncio.sleep(0.1)
    assert looks[-1] is not None and looks[-1].queues
