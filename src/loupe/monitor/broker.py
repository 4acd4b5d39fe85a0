"""Broker-side evidence: the faults RabbitMQ knows of at once and no span tells. A message no
queue is bound for is kept in `loupe.unroutable`, a work queue whose consumers are gone fills
up, and a message RabbitMQ dead-lettered itself (past the quorum queue's delivery limit: its
consumer never acked it) lands in `loupe.dead-letter` without loupe's consumer saying so; none
of them makes a span. Detection asks the broker every tick (`BrokerWatch.look`) and
turns what it shows into conditions (`conditions`), each a finding while it holds.

The counts come over AMQP: a passive queue.declare is answered by the queue itself, at once.
The management API's queue figures are sampled every `collect_statistics_interval` (5 s by
default; a consumer's leaving showed there 5 to 8.5 s late), too late for a finding within
seconds. The messages of the unroutable and dead-letter queues are read through the
management API (`Management.peek`, each put straight back), and only when the queue's count
has changed: every look counts as a redelivery in the quorum queue.
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
from loupe.messaging.topology import DEAD_LETTER_QUEUE, QUEUES, UNROUTABLE_QUEUE
from loupe.monitor.models import FindingKind
from loupe.monitor.spans import queue_place

log = logging.getLogger(__name__)

UNROUTABLE = "unroutable:"
"""An unroutable finding's subject starts so, then its exchange, routing key, app and order."""
UNCONSUMED = "queue:"
"""A work queue's no-consumer finding's subject starts so, then the queue."""
DEAD_LETTERED = "dead-lettered:"
"""A finding of messages RabbitMQ dead-lettered starts so, then their queue, reason and order."""
SUBJECTS = (UNROUTABLE, UNCONSUMED, DEAD_LETTERED)
# The queues whose messages are read; their other queues are only counted.
READ = (UNROUTABLE_QUEUE, DEAD_LETTER_QUEUE)
# How many messages one look at a queue reads; any more are counted, not described.
PEEK_LIMIT = 200
UNKNOWN_APP = "unknown app"
"""The publisher of a message that carries no app_id."""
AMQP_TIMEOUT = 2.0  # a passive declare takes about a millisecond
# What asking the broker raises when it cannot answer: unreachable, timed out, or the
# connection closed under us (aio_pika then raises RuntimeError on every use of its channel).
UNANSWERED = (OSError, TimeoutError, RuntimeError, aio_pika.exceptions.AMQPError)


@dataclass(frozen=True)
class QueueLevel:
    """A queue's ready messages and consumers, as the queue answered a passive declare."""

    name: str
    ready: int
    consumers: int


@dataclass(frozen=True)
class BrokerView:
    """What the broker holds now: each work queue's level (a queue that does not exist is left
    out), how many messages wait in the unroutable queue, and up to PEEK_LIMIT of them read;
    the dead letters read (up to PEEK_LIMIT)."""

    queues: tuple[QueueLevel, ...]
    unroutable: int
    peeked: tuple[Peeked, ...]
    dead_letters: tuple[Peeked, ...] = ()


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
    messages ready and no consumer; one per queue, reason and order among the dead letters
    RabbitMQ made itself (loupe's own consumer's are reported from its spans)."""
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
    found += _dead_lettered(view.dead_letters)
    for level in view.queues:
        if level.name not in QUEUES or level.consumers or not level.ready:
            continue
        service = _service(level.name)
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


def _service(queue: str) -> str:
    """The service that consumes `queue` (its span name), or the queue's name."""
    spec = QUEUES.get(queue)
    return SERVICE_NAMES.get(spec.service, spec.service) if spec else queue


def _dead_lettered(letters: Iterable[Peeked]) -> list[Condition]:
    groups: dict[tuple[str, str, str | None], list[Peeked]] = {}
    for letter in letters:
        if letter.died_in:
            key = (letter.died_in, letter.died_for or "unknown reason", letter.order_id)
            groups.setdefault(key, []).append(letter)
    found = []
    for (queue, reason, order_id), messages in sorted(
        groups.items(), key=lambda item: tuple(part or "" for part in item[0])
    ):
        service = _service(queue)
        why = (
            f"delivered past the queue's delivery limit without an ack: {service} fails on it"
            " before acking (it crashes, or cannot forward it)"
            if reason == "delivery_limit"
            else reason
        )
        about = f", about order {order_id}" if order_id else ""
        stamps = [m.died_at for m in messages if m.died_at is not None]
        found.append(
            Condition(
                subject=f"{DEAD_LETTERED}{queue}|{reason}|{order_id or ''}",
                state=FindingKind.BROKEN,
                service=service,
                place=queue_place(queue),
                order_id=order_id,
                evidence=f"{_plural(len(messages), 'message')} dead-lettered by RabbitMQ from"
                f" {queue}{about} ({why}); kept in {DEAD_LETTER_QUEUE}",
                since=min(stamps) if stamps else None,
            )
        )
    return found


class BrokerWatch:
    """Looks at the unroutable and dead-letter queues and every work queue (topology.QUEUES)
    over one AMQP connection of its own, opened again after a failure; the messages of the
    first two are read through `management`."""

    def __init__(self, amqp_url: str, management: Management) -> None:
        self._amqp_url = amqp_url
        self._management = management
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        # Per queue read: its count when last read, and what was read.
        self._read: dict[str, tuple[int, tuple[Peeked, ...]]] = {}
        self._problem: str | None = None

    async def look(self) -> BrokerView | None:
        """What the broker holds now; None when it cannot be asked (then no finding of it
        opens or clears: no news is not good news)."""
        try:
            levels = await self._levels([*READ, *QUEUES])
        except UNANSWERED as exc:
            self._report(f"RabbitMQ cannot be asked for its queues ({type(exc).__name__})")
            await self.close()
            return None
        self._report(None)
        counts = {name: levels.pop(name, QueueLevel(name, 0, 0)).ready for name in READ}
        read = {name: await self._read_queue(name, counts[name]) for name in READ}
        return BrokerView(
            queues=tuple(levels.values()),
            unroutable=counts[UNROUTABLE_QUEUE],
            peeked=read[UNROUTABLE_QUEUE],
            dead_letters=read[DEAD_LETTER_QUEUE],
        )

    async def _read_queue(self, name: str, count: int) -> tuple[Peeked, ...]:
        """Up to PEEK_LIMIT of the queue's `count` messages: read again only when the count
        changed since the last read."""
        last_count, last = self._read.get(name, (0, ()))
        if count == 0:
            self._read.pop(name, None)
            return ()
        if count != last_count:
            try:
                items = await self._management.peek(name, min(count, PEEK_LIMIT))
            except httpx.HTTPError as exc:
                # What was read before still stands (the rest shows as not read), and the next
                # tick tries again.
                log.warning("cannot read %s: %s", name, type(exc).__name__)
            else:
                last = tuple(Peeked.of(item) for item in items)
                self._read[name] = (count, last)
        return last[:count]

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
            except UNANSWERED as exc:
                log.debug("closing the broker watch's connection: %s", exc)
