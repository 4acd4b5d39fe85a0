"""The broker enforces each account's permissions (messaging/permissions.py) in the session's
vhost, which the set-up prepared as `make setup` prepares `loupe`: every process signs in as
its own user, and what it may not do is refused with ACCESS_REFUSED."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiormq.exceptions import ChannelAccessRefused

from loupe.accounts import Account
from loupe.config import SERVICES
from loupe.messaging import QUEUES, open_topology
from loupe.messaging.topology import DEAD_LETTER_QUEUE, ORDERS_EXCHANGE, UNROUTABLE_QUEUE
from loupe.orders import OrderStatus, routing_key
from tests.support.integration import SANDBOX, Broker, amqp_url
from tests.support.monitor import management
from tests.support.service_fakes import status_event

pytestmark = pytest.mark.integration


@asynccontextmanager
async def signed_in(account: Account) -> AsyncIterator[AbstractChannel]:
    """A channel with publisher confirms, as `account`'s own user."""
    connection = await aio_pika.connect(amqp_url(account), timeout=10)
    try:
        yield await connection.channel(publisher_confirms=True)
    finally:
        await connection.close()


async def refused(account: Account, attempt: Callable[[AbstractChannel], Awaitable[Any]]) -> str:
    """What the broker said when `account` tried `attempt` (each on a channel of its own: a
    refusal closes the channel)."""
    async with signed_in(account) as channel:
        with pytest.raises(ChannelAccessRefused) as refusal:
            await attempt(channel)
    return str(refusal.value)


async def _ignore(_: AbstractIncomingMessage) -> None:
    """A consumer that takes nothing off: the queue is purged before each test."""


def _message(order_id: str) -> aio_pika.Message:
    return aio_pika.Message(status_event(order_id, OrderStatus.SUBMITTED).to_json())


@pytest.mark.parametrize("service", SERVICES)
async def test_each_service_opens_the_topology_and_consumes_its_own_queues(
    broker: Broker, service: str
) -> None:
    async with signed_in(Account(service)) as channel:
        exchanges = await open_topology(channel)
        assert exchanges.orders.name == ORDERS_EXCHANGE
        for spec in (s for s in QUEUES.values() if s.service == service):
            queue = await channel.get_queue(spec.name, ensure=True)
            tag = await queue.consume(_ignore)
            await queue.cancel(tag)


async def test_a_service_publishes_events_but_not_straight_into_another_services_queue(
    broker: Broker,
) -> None:
    async with signed_in(Account.SHOP) as channel:
        orders = await channel.get_exchange(ORDERS_EXCHANGE)
        await orders.publish(_message("o-allowed"), routing_key(OrderStatus.SUBMITTED))
    assert await broker.depth("mes.order-submitted") == 1

    # Bypassing the topic exchange, straight into MES's work queue: forging what MES prices.
    said = await refused(
        Account.SHOP,
        lambda channel: channel.default_exchange.publish(
            _message("o-forged"), routing_key="mes.order-submitted"
        ),
    )
    assert "ACCESS_REFUSED" in said and "amq.default" in said
    assert await broker.depth("mes.order-submitted") == 1


async def test_a_service_can_neither_take_another_services_messages_nor_change_the_topology(
    broker: Broker,
) -> None:
    async def take(channel: AbstractChannel) -> None:
        queue = await channel.get_queue("mes.order-submitted", ensure=False)
        await queue.get(no_ack=True, fail=False)

    assert "ACCESS_REFUSED" in await refused(Account.CRM, take)

    async def delete_own(channel: AbstractChannel) -> None:
        await channel.queue_delete("crm.order-status")

    assert "ACCESS_REFUSED" in await refused(Account.CRM, delete_own)

    async def declare(channel: AbstractChannel) -> None:
        await channel.declare_queue("crm.eavesdrop", durable=False)

    assert "ACCESS_REFUSED" in await refused(Account.CRM, declare)


async def test_the_portal_sends_letters_back_to_their_queue_but_publishes_no_event(
    broker: Broker,
) -> None:
    async def publish_event(channel: AbstractChannel) -> None:
        orders = await channel.get_exchange(ORDERS_EXCHANGE)
        await orders.publish(_message("o-portal"), routing_key(OrderStatus.SUBMITTED))

    assert "ACCESS_REFUSED" in await refused(Account.PORTAL, publish_event)
    async with signed_in(Account.PORTAL) as channel:
        await channel.default_exchange.publish(
            _message("o-requeued"), routing_key="mes.order-submitted"
        )
    assert await broker.depth("mes.order-submitted") == 1


async def test_the_monitor_peeks_with_the_monitoring_tag_but_may_not_publish_or_administer(
    broker: Broker,
) -> None:
    dead_letter = await broker.channel.get_exchange("loupe.dead-letter")
    await dead_letter.publish(_message("o-dead"), routing_key="mes.order-submitted")
    monitor = management()
    (peeked,) = await monitor.peek(DEAD_LETTER_QUEUE, 5)
    assert "o-dead" in peeked["payload"]
    assert await broker.depth_when(DEAD_LETTER_QUEUE, 1) == 1  # put straight back
    stats = await monitor.queue_stats(UNROUTABLE_QUEUE)
    assert stats is not None and stats.name == UNROUTABLE_QUEUE
    # The management API's administrator-only parts: no vhost of its own, no users.
    async with httpx.AsyncClient(auth=monitor.credentials, timeout=10) as client:
        made = await client.put(f"{monitor.url}/api/vhosts/{SANDBOX.vhost}-monitor-made")
        users = await client.get(f"{monitor.url}/api/users")
    assert (made.status_code, users.status_code) == (401, 401)

    async def publish(channel: AbstractChannel) -> None:
        orders = await channel.get_exchange(ORDERS_EXCHANGE)
        await orders.publish(_message("o-monitor"), routing_key(OrderStatus.SUBMITTED))

    assert "ACCESS_REFUSED" in await refused(Account.MONITOR, publish)
