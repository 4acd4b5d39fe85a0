"""Every exchange and queue loupe uses, declared by the set-up (`loupe provision`, as the
broker's administrator); the services only open what is there (`open_topology`), so none of them
needs the right to create, change or delete a queue or an exchange (messaging/permissions.py).

Status events go to one topic exchange, routed by `order.<status>`; each interested service
has its own durable quorum queue bound to the keys it needs, so one event fans out to all of
them. Retries wait in a per-queue delay queue; what cannot be processed ends in the
dead-letter queue with its reason; what no queue is bound for lands in the unroutable queue
through the topic exchange's alternate exchange, so nothing is dropped silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

log = logging.getLogger(__name__)

ORDERS_EXCHANGE = "loupe.orders"
UNROUTABLE_EXCHANGE = "loupe.unroutable"
UNROUTABLE_QUEUE = "loupe.unroutable"
DEAD_LETTER_EXCHANGE = "loupe.dead-letter"
DEAD_LETTER_QUEUE = "loupe.dead-letter"
RETRY_EXCHANGE = "loupe.retry"
# A consumer that crashes on a message before acking it would otherwise get it back forever;
# past this many broker redeliveries the quorum queue dead-letters it itself.
BROKER_DELIVERY_LIMIT = 20
# The dead-letter and unroutable queues hold what waits for a person, so their limits are
# set, not left to the broker's defaults, and none of them can drop a message: no length
# limit, and should a policy add one, a new message is refused (its publisher's confirm fails
# and the consumer retries it) rather than the oldest dropped; and a delivery limit no reading
# reaches: the portal's and the monitor's peeks put each message back, which RabbitMQ counts
# as a delivery, and from RabbitMQ 4.0 a quorum queue without one drops a message after 20
# (it has no dead-letter exchange to send it to). -1 ("none") is 4.0's; 3.x refuses it.
HOLDING_LIMITS = {"x-overflow": "reject-publish", "x-delivery-limit": 1_000_000_000}


@dataclass(frozen=True)
class QueueSpec:
    name: str
    service: str
    bindings: tuple[str, ...]
    purpose: str

    @property
    def retry_queue(self) -> str:
        return f"{self.name}.retry"


QUEUES: dict[str, QueueSpec] = {
    spec.name: spec
    for spec in (
        QueueSpec(
            "mes.order-submitted",
            "mes",
            ("order.submitted",),
            "new orders from the shop and B2B partners, waiting to be priced",
        ),
        QueueSpec(
            "mes.order-decisions",
            "mes",
            ("order.manufacturing_approved", "order.rejected", "order.failed"),
            "sellers' decisions and failures: approved orders enter the operators' work queue",
        ),
        QueueSpec(
            "crm.order-status",
            "crm",
            ("order.*",),
            "every status change, for the sellers' view of each order",
        ),
        QueueSpec(
            "shop.order-status",
            "shop",
            ("order.*",),
            "every status change, for the customer's view of each order",
        ),
    )
}


EXCHANGES = (UNROUTABLE_EXCHANGE, ORDERS_EXCHANGE, DEAD_LETTER_EXCHANGE, RETRY_EXCHANGE)
DEFAULT_EXCHANGE = "amq.default"
"""The nameless exchange as RabbitMQ's permissions name it: publishing straight to a queue."""


@dataclass(frozen=True)
class Exchanges:
    orders: AbstractExchange
    retry: AbstractExchange
    dead_letter: AbstractExchange


async def open_topology(channel: AbstractChannel) -> Exchanges:
    """The exchanges a service publishes to, as the set-up declared them (passively: a missing
    one closes the channel with NOT_FOUND, and the service tries again later)."""
    orders, retry, dead_letter = [
        await channel.get_exchange(name, ensure=True)
        for name in (ORDERS_EXCHANGE, RETRY_EXCHANGE, DEAD_LETTER_EXCHANGE)
    ]
    return Exchanges(orders=orders, retry=retry, dead_letter=dead_letter)


async def declare_topology(channel: AbstractChannel) -> Exchanges:
    """Declares everything, idempotently; needs the configure permission on every name (the
    set-up's administrator, tests)."""
    durable = {"durable": True}
    unroutable = await channel.declare_exchange(
        UNROUTABLE_EXCHANGE, aio_pika.ExchangeType.FANOUT, **durable
    )
    orders = await channel.declare_exchange(
        ORDERS_EXCHANGE,
        aio_pika.ExchangeType.TOPIC,
        arguments={"alternate-exchange": UNROUTABLE_EXCHANGE},
        **durable,
    )
    dead_letter = await channel.declare_exchange(
        DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, **durable
    )
    retry = await channel.declare_exchange(RETRY_EXCHANGE, aio_pika.ExchangeType.DIRECT, **durable)
    quorum = {"x-queue-type": "quorum"}
    for name, exchange in ((UNROUTABLE_QUEUE, unroutable), (DEAD_LETTER_QUEUE, dead_letter)):
        queue = await _declare_holding_queue(channel, name)
        await queue.bind(exchange)
    for spec in QUEUES.values():
        queue = await channel.declare_queue(
            spec.name,
            arguments={
                **quorum,
                "x-delivery-limit": BROKER_DELIVERY_LIMIT,
                "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
                # The broker's own dead-lettering (past the delivery limit) is at-most-once
                # unless asked; at-least-once needs reject-publish overflow.
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
            **durable,
        )
        for key in spec.bindings:
            await queue.bind(orders, routing_key=key)
        # A classic queue: it holds each message for the delay its publisher set as the
        # message's expiration (per message, so services may differ in delay without clashing
        # queue arguments), then hands it back to the work queue through the default exchange.
        delay = await channel.declare_queue(
            spec.retry_queue,
            arguments={
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": spec.name,
            },
            **durable,
        )
        await delay.bind(retry, routing_key=spec.name)
    return Exchanges(orders=orders, retry=retry, dead_letter=dead_letter)


async def _declare_holding_queue(channel: AbstractChannel, name: str) -> AbstractQueue:
    """A queue that holds messages for a person, with HOLDING_LIMITS; one declared before the
    limits were set keeps its arguments (RabbitMQ refuses to change them, PRECONDITION_FAILED,
    and the channel closes), with a warning: docs/runbook.md says how to recreate it."""
    quorum = {"x-queue-type": "quorum"}
    try:
        return await channel.declare_queue(
            name, arguments={**quorum, **HOLDING_LIMITS}, durable=True
        )
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        log.warning(
            "queue %s predates its explicit limits (%s); it keeps the broker's defaults until"
            " it is recreated (docs/runbook.md, Dead-letter and unroutable queues)",
            name,
            exc.args[0] if exc.args else exc,
        )
    await channel.reopen()
    return await channel.declare_queue(name, arguments=quorum, durable=True)
