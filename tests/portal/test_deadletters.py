"""The dead-letter queue read and requeued by the portal, on the real RabbitMQ: one letter or
one order's letters, on a bounded snapshot that never loops however fast letters come back."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aio_pika
import pytest

from loupe.messaging.consumer import ORDER_HEADER, QUEUE_HEADER, REASON_HEADER
from loupe.messaging.topology import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE
from loupe.portal import deadletters
from loupe.portal.deadletters import list_dead_letters, requeue_dead_letters
from loupe.portal.settings import PortalSettings
from tests.support.integration import SANDBOX, Broker

pytestmark = pytest.mark.integration

SETTINGS = PortalSettings(base=SANDBOX.settings)
FANNED_OUT = ("mes.order-submitted", "crm.order-status", "shop.order-status")


async def _dead_letter(broker: Broker, order_id: str, queue: str, message_id: str | None) -> None:
    exchange = await broker.channel.get_exchange(DEAD_LETTER_EXCHANGE)
    headers: dict[str, Any] = {
        REASON_HEADER: "poison message",
        QUEUE_HEADER: queue,
        ORDER_HEADER: order_id,
    }
    body = json.dumps({"order_id": order_id}).encode()
    message = aio_pika.Message(body, headers=headers, message_id=message_id)
    await exchange.publish(message, routing_key=queue)


async def test_one_letter_of_an_event_fanned_out_to_three_queues(broker: Broker) -> None:
    order_id, message_id = str(uuid.uuid4()), str(uuid.uuid4())
    for queue in FANNED_OUT:
        await _dead_letter(broker, order_id, queue, message_id)
    listed = await list_dead_letters(SETTINGS, 10)
    assert sorted(d["queue"] for d in listed) == sorted(FANNED_OUT)

    result = await requeue_dead_letters(
        SETTINGS, "devops@example.com", message_id=message_id, queue_name="crm.order-status"
    )
    assert [(d["message_id"], d["queue"]) for d in result["requeued"]] == [
        (message_id, "crm.order-status")
    ]
    assert await broker.depth_when("crm.order-status", 1) == 1
    assert await broker.depth_when(DEAD_LETTER_QUEUE, 2) == 2, "the other two letters stay"


async def test_requeue_never_loops_while_letters_come_straight_back(broker: Broker) -> None:
    order_id = str(uuid.uuid4())
    for queue in FANNED_OUT:
        await _dead_letter(broker, order_id, queue, str(uuid.uuid4()))
    await _dead_letter(broker, "another-order", "mes.order-submitted", str(uuid.uuid4()))

    # A consumer that fails every message at once: what it is given goes straight back to
    # the dead-letter queue, as a poison message does.
    bounced = 0

    async def bounce(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal bounced
        async with message.process():
            headers = dict(message.headers or {})
            headers[QUEUE_HEADER] = message.routing_key
            exchange = await broker.consume_channel.get_exchange(DEAD_LETTER_EXCHANGE)
            await exchange.publish(
                aio_pika.Message(message.body, headers=headers, message_id=message.message_id),
                routing_key=message.routing_key or "",
            )
            bounced += 1

    tags = []
    for queue in FANNED_OUT:
        work = await broker.consume_channel.get_queue(queue)
        tags.append((work, await work.consume(bounce)))
    try:
        result = await asyncio.wait_for(
            requeue_dead_letters(SETTINGS, "devops@example.com", order_id=order_id), 30
        )
    finally:
        for work, tag in tags:
            await work.cancel(tag)
    assert sorted(d["queue"] for d in result["requeued"]) == sorted(FANNED_OUT), (
        "each letter once, however often it came back during the round"
    )
    assert bounced >= 1
    assert "another-order" in {d["order_id"] for d in await list_dead_letters(SETTINGS, 20)}


async def test_a_letter_without_a_message_id_that_comes_straight_back_is_left_alone(
    broker: Broker,
) -> None:
    order_id = str(uuid.uuid4())
    await _dead_letter(broker, order_id, "crm.order-status", None)
    bounced = 0

    async def bounce(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal bounced
        async with message.process():
            exchange = await broker.consume_channel.get_exchange(DEAD_LETTER_EXCHANGE)
            copy = aio_pika.Message(message.body, headers=dict(message.headers or {}))
            await exchange.publish(copy, routing_key="crm.order-status")
            bounced += 1

    work = await broker.consume_channel.get_queue("crm.order-status")
    tag = await work.consume(bounce)
    try:
        result = await asyncio.wait_for(
            requeue_dead_letters(SETTINGS, "devops@example.com", order_id=order_id), 30
        )
    finally:
        await work.cancel(tag)
    assert [d["order_id"] for d in result["requeued"]] == [order_id]
    assert bounced == 1, "requeued once, however soon it came back"
    assert await broker.depth_when(DEAD_LETTER_QUEUE, 1) == 1


async def test_one_action_reads_a_bounded_number_of_letters_and_says_how_many_it_left(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deadletters, "MAX_LETTERS_PER_ACTION", 2)
    for _ in range(3):
        await _dead_letter(broker, "an-order", "crm.order-status", str(uuid.uuid4()))
    result = await requeue_dead_letters(SETTINGS, "devops@example.com")
    assert (len(result["requeued"]), result["left"]) == (2, 1)
    assert await broker.depth_when(DEAD_LETTER_QUEUE, 1) == 1
