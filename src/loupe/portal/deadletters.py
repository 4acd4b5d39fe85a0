"""The dead-letter queue, read without consuming and moved back to the work queues."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from loupe.messaging.consumer import (
    ATTEMPT_HEADER,
    BROKER_HISTORY_HEADERS,
    FAILED_AT_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    SERVICE_HEADER,
    order_id_of,
)
from loupe.messaging.topology import DEAD_LETTER_QUEUE, QUEUES
from loupe.portal.settings import PortalSettings

REQUEUED_BY_HEADER = "x-loupe-requeued-by"
# Which requeue action sent a letter back to work: a letter that fails again at once comes
# back carrying it, and that action leaves it alone (message ids may be missing or repeated).
REQUEUE_ROUND_HEADER = "x-loupe-requeue-round"
MAX_LETTERS_PER_ACTION = 1000
"""Letters one requeue action reads: those it does not take are held unacked until it ends."""
# Dropped when a dead letter goes back to work: a fresh start, and no stale broker history.
_STRIPPED = (ATTEMPT_HEADER, REASON_HEADER, FAILED_AT_HEADER, QUEUE_HEADER, SERVICE_HEADER)


@dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    order_id: str | None
    queue: str | None
    reason: str | None
    attempts: int | None
    failed_at: str | None
    service: str | None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value) if value not in (None, "") else None


def describe(
    headers: dict[str, Any], body: str | bytes | None, message_id: str | None
) -> DeadLetter:
    attempts = headers.get(ATTEMPT_HEADER)
    try:
        attempts = int(attempts) if attempts is not None else None
    except (TypeError, ValueError):
        attempts = None
    return DeadLetter(
        message_id=message_id,
        order_id=order_id_of(headers, body),
        queue=_text(headers.get(QUEUE_HEADER)),
        reason=_text(headers.get(REASON_HEADER)),
        attempts=attempts,
        failed_at=_text(headers.get(FAILED_AT_HEADER)),
        service=_text(headers.get(SERVICE_HEADER)),
    )


async def list_dead_letters(settings: PortalSettings, limit: int = 100) -> list[dict[str, Any]]:
    """Up to `limit` dead letters, read through the management API and put straight back,
    so nothing is consumed."""
    management = settings.management(timeout=10.0)
    letters = []
    for item in await management.peek(DEAD_LETTER_QUEUE, limit):
        properties = item.get("properties") or {}
        headers = properties.get("headers") or {}
        letters.append(asdict(describe(headers, item.get("payload"), properties.get("message_id"))))
    return letters


async def requeue_dead_letters(
    settings: PortalSettings,
    requested_by: str,
    order_id: str | None = None,
    message_id: str | None = None,
    queue_name: str | None = None,
) -> dict[str, Any]:
    """Moves dead letters back to their work queue: those of `order_id`, or those with
    `message_id` (one event fanned out to several queues leaves one letter per queue, so
    `queue_name` picks one of them), or all when none is given (the API asks for that
    explicitly, on a route of its own).

    It works on a snapshot: at most the letters that were in the queue when it began (and at
    most MAX_LETTERS_PER_ACTION; `left` says how many it did not read), each at most once. A
    requeued letter that fails again comes straight back to the dead-letter queue, carrying
    this action's round id, and is left alone; without that it would be read and requeued
    again and again.

    Each copy goes through the default exchange to the queue named in x-loupe-queue, and is
    confirmed by the broker before its dead letter is acked; on any failure the dead letter
    is put back. Letters left alone are held unacked until the end, so none is read twice.
    """
    requeued: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    held: list[AbstractIncomingMessage] = []
    round_id = uuid.uuid4().hex
    read = 0
    connection = await aio_pika.connect(settings.amqp_url, timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(DEAD_LETTER_QUEUE, passive=True)
        in_queue = queue.declaration_result.message_count or 0
        seen: set[tuple[str | None, str | None]] = set()
        for _ in range(min(in_queue, MAX_LETTERS_PER_ACTION)):
            message = await queue.get(no_ack=False, fail=False, timeout=10)
            if message is None:
                break
            read += 1
            headers = dict(message.headers or {})
            letter = describe(headers, message.body, message.message_id)
            wanted = (
                (order_id is None or letter.order_id == order_id)
                and (message_id is None or letter.message_id == message_id)
                and (queue_name is None or letter.queue == queue_name)
            )
            # Already handled in this round (requeued, failed again, dead-lettered again).
            again = _text(headers.get(REQUEUE_ROUND_HEADER)) == round_id or (
                letter.message_id is not None and (letter.message_id, letter.queue) in seen
            )
            if not wanted or again:
                held.append(message)
                continue
            seen.add((letter.message_id, letter.queue))
            if letter.queue not in QUEUES:
                held.append(message)
                skipped.append({**asdict(letter), "why": "no known work queue in x-loupe-queue"})
                continue
            kept = {
                k: v
                for k, v in headers.items()
                if k not in _STRIPPED and not k.startswith(BROKER_HISTORY_HEADERS)
            }
            kept[REQUEUED_BY_HEADER] = requested_by
            kept[REQUEUE_ROUND_HEADER] = round_id
            copy = aio_pika.Message(
                message.body,
                headers=kept,
                message_id=message.message_id,
                content_type=message.content_type,
                type=message.type,
                app_id=message.app_id,
                timestamp=message.timestamp,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            try:
                await channel.default_exchange.publish(
                    copy, routing_key=letter.queue, mandatory=True
                )
            except Exception as exc:
                held.append(message)
                skipped.append({**asdict(letter), "why": f"publish failed: {type(exc).__name__}"})
                continue
            await message.ack()
            requeued.append(asdict(letter))
    finally:
        try:
            for message in held:
                await message.nack(requeue=True)
        finally:
            await connection.close()
    return {"requeued": requeued, "skipped": skipped, "left": max(in_queue - read, 0)}
