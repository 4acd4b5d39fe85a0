"""Broker-side evidence: the faults RabbitMQ knows of at once and no span tells. A message no
queue is bound for is kept in `loupe.unroutable`, and a work queue whose consumers are gone
fills up; neither makes a span. Detection asks the broker every tick (`BrokerWatch.look`) and
turns what it shows into conditions (`conditions`), each a finding while it holds.

The counts come over AMQP: a passive queue.declare is answered by the queue itself, at once.
The management API's queue figures are sampled every `collect_statistics_interval` (5 s by
default; a consumer's leaving showed there 5 to 8.5 s late), too late for a finding within
seconds. The unroutable messages themselves are read through the management API
(`Management.peek`, each put straight back), and only when their count has changed: every look
counts as a redelivery in the quorum queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import aio_pika
import httpx
from aio_pika.abc import AbstractChannel, AbstractConnection

from loupe.config import SERVICE_NAMES
from loupe.messaging.management import Management, Peeked
from loupe.messaging.topology import QUEUES, UNROUTABLE_QUEUE
from loupe.monitor.models import FindingKind
from loupe.monitor.spans import queue_place

log = logging.getLogger(__name__)

UNROUTABLE = "unroutable:"
"""An unroutable finding's subject starts so, then its exchange, routing key, app and order."""
UNCONSUMED = "queue:"
"""A work queue's no-consumer finding's subject starts so, then the queue."""
SUBJECTS = (UNROUTABLE, UNCONSUMED)
# How many unroutable messages one look reads; any more are counted, not described.
PEEK_LIMIT = 200
UNKNOWN_APP = "unknown app"
"""The publisher of a message that carries no app_id."""
AMQP_TIMEOUT = 5.0


@dataclass(frozen=True)
class QueueLevel:
    """A queue's ready messages and consumers, as the queue answered a passive declare."""

    name: str
    ready: int
    consumers: int


@dataclass(frozen=True)
class BrokerView:
    """What the broker holds now: each work queue's level (a queue that does not exist is left
    out), how many messages wait in the unroutable queue, and up to PEEK_LIMIT of them read."""

    queues: tuple[QueueLevel, ...]
    unroutable: int
    peeked: tuple[Peeked, ...]


@dataclass(frozen=True)
class Condition:
    """Something wrong that the broker shows, as the finding it makes while it holds.
    `since`: when it began, where the broker tells (the oldest message's publishing time);
    else detection takes when it first saw it."""

    subject: str
    state: FindingKind
    service: str
    place: str
    order_id: str | None
    evidence: str
    since: datetime | None = None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def conditions(view: BrokerView) -> list[Condition]:
    """The findings `view` calls for: one per publishing app, exchange, routing key and order
    among the unroutable messages (one more for those not read); one per work queue with
    messages ready and no consumer."""
    found: list[Condition] = []
    groups: dict[tuple[str, str, str, str | None], list[Peeked]] = {}
    for message in view.peeked:
        key = (message.app_id or UNKNOWN_APP, message.exchange, message.routing_key)
        groups.setdefault((*key, message.order_id), []).append(message)
    for (app, exchange, routing_key, order_id), messages in sorted(
        groups.items(), key=lambda item: tuple(part or "" for part in item[0])
    ):
        stamps = [m.published_at for m in messages if m.published_at is not None]
        about = f", about order {order_id}" if order_id else ""
        found.append(
            Condition(
                subject=f"{UNROUTABLE}{exchange}|{routing_key}|{app}|{order_id or ''}",
                state=FindingKind.UNROUTABLE,
                service=app,
                place=f"exchange {exchange}, routing key {routing_key}",
                order_id=order_id,
                evidence=f"{_plural(len(messages), 'message')} published by {app} to exchange"
                f" {exchange} with routing key {routing_key}{about}: no queue is bound to it;"
                f" kept in {UNROUTABLE_QUEUE}",
                since=min(stamps) if stamps else None,
            )
        )
    unread = view.unroutable - len(view.peeked)
    if unread > 0:
        found.append(
            Condition(
                subject=f"{UNROUTABLE}{UNROUTABLE_QUEUE}",
                state=FindingKind.UNROUTABLE,
                service=UNKNOWN_APP,
                place=queue_place(UNROUTABLE_QUEUE),
                order_id=None,
                evidence=f"{_plural(unread, 'more message')} no queue is bound for, kept in"
                f" {UNROUTABLE_QUEUE}, not read yet",
            )
        )
    for level in view.queues:
        spec = QUEUES.get(level.name)
        if spec is None or level.consumers or not level.ready:
            continue
        service = SERVICE_NAMES.get(spec.service, spec.service)
        found.append(
            Condition(
                subject=f"{UNCONSUMED}{level.name}",
                state=FindingKind.STUCK,
                service=service,
                place=queue_place(level.name),
                order_id=None,
                evidence=f"queue {level.name}: {level.ready} ready, 0 consumers: no {service}"
                " takes its messages (stopped, crashed, or its channel closed)",
            )
        )
    return found


class BrokerWatch:
    """Looks at the unroutable queue and every work queue (topology.QUEUES) over one AMQP
    connection of its own, opened again after a failure; the unroutable messages are read
    through `management`."""

    def __init__(self, amqp_url: str, management: Management) -> None:
        self._amqp_url = amqp_url
        self._management = management
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._peeked: tuple[Peeked, ...] = ()
        self._peeked_at_count = 0
        self._problem: str | None = None

    async def look(self) -> BrokerView | None:
        """What the broker holds now; None when it cannot be asked (then no finding of it
        opens or clears: no news is not good news)."""
        try:
            levels = await self._levels([UNROUTABLE_QUEUE, *QUEUES])
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            self._report(f"RabbitMQ cannot be asked for its queues ({type(exc).__name__})")
            await self.close()
            return None
        self._report(None)
        unroutable = levels.pop(UNROUTABLE_QUEUE, QueueLevel(UNROUTABLE_QUEUE, 0, 0)).ready
        if unroutable == 0:
            self._peeked, self._peeked_at_count = (), 0
        elif unroutable != self._peeked_at_count:
            try:
                items = await self._management.peek(UNROUTABLE_QUEUE, min(unroutable, PEEK_LIMIT))
            except httpx.HTTPError as exc:
                # What was read before still stands; the rest shows as not read, and the next
                # tick tries again.
                log.warning("cannot read %s: %s", UNROUTABLE_QUEUE, type(exc).__name__)
            else:
                self._peeked = tuple(Peeked.of(item) for item in items)
                self._peeked_at_count = unroutable
        return BrokerView(
            queues=tuple(levels.values()),
            unroutable=unroutable,
            peeked=self._peeked[:unroutable],
        )

    async def _levels(self, names: Iterable[str]) -> dict[str, QueueLevel]:
        levels: dict[str, QueueLevel] = {}
        for name in names:
            channel = await self._open()
            try:
                queue = await channel.declare_queue(name, passive=True, timeout=AMQP_TIMEOUT)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                # Not declared (yet): no service has started. The broker closed the channel.
                self._channel = None
                continue
            result = queue.declaration_result
            levels[name] = QueueLevel(name, result.message_count or 0, result.consumer_count or 0)
        return levels

    async def _open(self) -> AbstractChannel:
        if self._connection is None or self._connection.is_closed:
            self._channel = None
            self._connection = await asyncio.wait_for(
                aio_pika.connect(
                    self._amqp_url,
                    client_properties={"connection_name": "loupe-monitor broker watch"},
                ),
                AMQP_TIMEOUT,
            )
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=False)
        return self._channel

    def _report(self, problem: str | None) -> None:
        """Logs when asking the broker starts or stops failing, not every tick."""
        if problem and problem != self._problem:
            log.warning("%s; findings of the broker stay as they were", problem)
        elif self._problem and not problem:
            log.warning("RabbitMQ answers again")
        self._problem = problem

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except (OSError, aio_pika.exceptions.AMQPError) as exc:
                log.debug("closing the broker watch's connection: %s", exc)
