"""The topology on the real broker (the session's vhost): declaring it again is harmless, each
status reaches the queues that need it, a retry comes back to its queue after its delay, a
message that keeps crashing its consumer is dead-lettered by the broker, and every queue has
the service it belongs to consuming it."""

from __future__ import annotations

import asyncio
import importlib
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import httpx
import pytest

from loupe.config import SERVICES, Settings
from loupe.messaging.consumer import DeadLetterHook, Handler
from loupe.messaging.topology import (
    BROKER_DELIVERY_LIMIT,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    HOLDING_LIMITS,
    QUEUES,
    UNROUTABLE_EXCHANGE,
    UNROUTABLE_QUEUE,
    QueueSpec,
    declare_topology,
)
from loupe.orders import OrderStatus, routing_key
from loupe.service.kernel import ServiceKernel
from tests.support.integration import POLL_INTERVAL, TIMEOUT, Broker
from tests.support.monitor import management as monitor_management

pytestmark = pytest.mark.integration

S = OrderStatus
EVERY_STATUS = ("crm.order-status", "shop.order-status")
# Who needs which status: MES prices new orders and acts on sellers' decisions and failures;
# CRM and the shop show every change.
ROUTES = {
    **{routing_key(status): {*EVERY_STATUS} for status in S},
    routing_key(S.SUBMITTED): {"mes.order-submitted", *EVERY_STATUS},
    **{
        routing_key(status): {"mes.order-decisions", *EVERY_STATUS}
        for status in (S.MANUFACTURING_APPROVED, S.REJECTED, S.FAILED)
    },
    # Nobody binds it: kept in the unroutable queue instead of being dropped.
    "invoice.sent": {UNROUTABLE_QUEUE},
}
WATCHED = [*QUEUES, UNROUTABLE_QUEUE, DEAD_LETTER_QUEUE]


async def test_declaring_the_topology_again_changes_nothing(broker: Broker) -> None:
    # The fixture declared it already; another service starting declares it once more, with
    # arguments the broker would refuse (PRECONDITION_FAILED) if they differed.
    channel = await broker.connection.channel()
    exchanges = await declare_topology(channel)
    names = (exchanges.orders.name, exchanges.retry.name, exchanges.dead_letter.name)
    assert names == ("loupe.orders", "loupe.retry", "loupe.dead-letter")
    assert not channel.is_closed


@pytest.mark.parametrize("key", sorted(ROUTES))
async def test_each_routing_key_reaches_exactly_the_queues_that_need_it(
    broker: Broker, key: str
) -> None:
    await broker.publisher.publish(broker.exchanges.orders, b"{}", key)
    depths = {queue: await broker.depth(queue) for queue in WATCHED}
    assert {queue for queue, depth in depths.items() if depth} == ROUTES[key]
    assert set(depths.values()) <= {0, 1}


@pytest.mark.parametrize("spec", QUEUES.values(), ids=list(QUEUES))
async def test_a_retry_waits_its_delay_then_returns_to_its_own_queue(
    broker: Broker, spec: QueueSpec
) -> None:
    await broker.publisher.publish(
        broker.exchanges.retry, spec.name.encode(), spec.name, expiration_ms=300
    )
    assert (await broker.depth(spec.retry_queue), await broker.depth(spec.name)) == (1, 0)
    back = await broker.get(spec.name, "the retried message")
    assert back.body == spec.name.encode()
    assert await broker.depth(spec.retry_queue) == 0


async def test_the_broker_dead_letters_a_message_redelivered_past_the_limit(
    broker: Broker,
) -> None:
    queue = await broker.channel.get_queue("crm.order-status", ensure=False)
    await broker.publisher.publish(broker.exchanges.orders, b"crashes", "order.closed")
    # A consumer that dies before acking, again and again: each delivery comes back.
    deliveries = 0
    for _ in range(int(TIMEOUT / POLL_INTERVAL)):
        message = await queue.get(no_ack=False, fail=False)
        if message is not None:
            deliveries += 1
            await message.nack(requeue=True)
        elif await broker.depth(DEAD_LETTER_QUEUE):
            break
        else:
            await asyncio.sleep(POLL_INTERVAL)
    assert deliveries == BROKER_DELIVERY_LIMIT + 1
    dead = await broker.get(DEAD_LETTER_QUEUE, "the message past the delivery limit")
    (death,) = dead.headers["x-death"]
    assert (dead.body, death["reason"], death["queue"]) == (
        b"crashes",
        "delivery_limit",
        "crm.order-status",
    )


def test_every_queue_is_consumed_by_the_service_it_belongs_to(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A queue nobody consumes fills up; the kernel refuses another service's queue.
    consumed: list[tuple[str, str]] = []
    consume = ServiceKernel.consume

    def recorded(
        kernel: ServiceKernel, queue: str, handler: Handler, hook: DeadLetterHook | None = None
    ) -> None:
        consume(kernel, queue, handler, hook)
        consumed.append((queue, kernel.service))

    monkeypatch.setattr(ServiceKernel, "consume", recorded)
    for service in SERVICES:
        importlib.import_module(f"loupe.{service}.app").create_app(Settings(data_dir=tmp_path))
    assert sorted(consumed) == sorted((spec.name, spec.service) for spec in QUEUES.values())


async def _queue_arguments(name: str) -> dict[str, Any]:
    management = monitor_management()  # as the monitor, which reads these queues
    async with httpx.AsyncClient(auth=management.credentials, trust_env=False) as client:
        response = await client.get(
            f"{management.url}/api/queues/{quote(management.vhost, safe='')}/{quote(name)}"
        )
    response.raise_for_status()
    return dict(response.json()["arguments"])


@pytest.mark.parametrize("name", [DEAD_LETTER_QUEUE, UNROUTABLE_QUEUE])
async def test_what_waits_for_a_person_is_never_dropped_by_a_limit_or_a_reading(
    broker: Broker, name: str
) -> None:
    arguments = await _queue_arguments(name)
    assert {k: arguments.get(k) for k in HOLDING_LIMITS} == HOLDING_LIMITS
    assert "x-max-length" not in arguments and "x-max-length-bytes" not in arguments
    exchange = DEAD_LETTER_EXCHANGE if name == DEAD_LETTER_QUEUE else UNROUTABLE_EXCHANGE
    target = await broker.channel.get_exchange(exchange)
    await target.publish(aio_pika.Message(b"letter"), routing_key="any")
    # Each reading puts the message back, and RabbitMQ counts that as a delivery: far more
    # readings than a work queue's delivery limit leave it where it was.
    management = monitor_management()  # as the monitor, which reads these queues
    for _ in range(BROKER_DELIVERY_LIMIT + 5):
        assert [m["payload"] for m in await management.peek(name, 10)] == ["letter"]
    assert [m["payload"] for m in await management.peek(name, 10)] == ["letter"]


async def test_a_holding_queue_declared_before_its_limits_keeps_working(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    # As an install from before the limits has it: RabbitMQ refuses to change its arguments.
    channel = await broker.connection.channel()
    await channel.queue_delete(UNROUTABLE_QUEUE)
    await channel.declare_queue(
        UNROUTABLE_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
    )
    try:
        with caplog.at_level(logging.WARNING, "loupe.messaging.topology"):
            exchanges = await declare_topology(channel)
        assert not channel.is_closed
        assert "queue loupe.unroutable predates its explicit limits" in caplog.text
        assert "x-delivery-limit" not in await _queue_arguments(UNROUTABLE_QUEUE)
        # Still bound: what no queue is bound for lands there.
        await broker.publisher.publish(exchanges.orders, b"{}", "invoice.sent")
        assert await broker.depth(UNROUTABLE_QUEUE) == 1
    finally:
        await channel.queue_delete(UNROUTABLE_QUEUE)
        await declare_topology(channel)
    assert await _queue_arguments(UNROUTABLE_QUEUE) == {
        "x-queue-type": "quorum",
        **HOLDING_LIMITS,
    }
