"""Consuming with manual acks, bounded retries, a dead-letter queue that keeps the reason, and
a consumer span that is a child of the producer span carried in the headers.

Every delivery ends in exactly one of: ack after the handler succeeded; a delayed retry (the
copy is confirmed before the original is acked); the dead-letter queue with its reason (same);
or, when even that publish fails, a nack with requeue, which the queue's delivery limit bounds.
So a message is never lost and never loops forever.

Whoever publishes to `loupe.orders` chooses a message's headers, so none of them bounds the
retries: a message published there is always at attempt 1, and loupe's own `x-loupe-*`
headers on it are dropped. Only a copy delivered through the default exchange keeps them:
the broker routes a retry there when it expires from the delay queue, and the portal
requeues a dead letter there; no producer may publish there (RabbitMQ's permissions). Its
attempt is clamped to the budget, and RabbitMQ's `x-delivery-count` counts only on a delivery
the broker flagged as redelivered (docs/security.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from loupe.messaging.propagation import extract_context
from loupe.messaging.publisher import Publisher
from loupe.messaging.topology import BROKER_DELIVERY_LIMIT, Exchanges, QueueSpec
from loupe.orders import OrderEvent, OrderEventError
from loupe.telemetry.attributes import (
    DEAD_LETTER_REASON,
    DEAD_LETTERED_EVENT,
    DELIVERY_ATTEMPT,
    ORDER_ID,
    TRACE_CONTEXT_NOTE,
)

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("loupe.messaging")

# Headers loupe adds when it re-sends a message; the dead-letter queue's readers rely on them.
OWN_HEADER_PREFIX = "x-loupe-"
ATTEMPT_HEADER = "x-loupe-attempt"
REASON_HEADER = "x-loupe-reason"
QUEUE_HEADER = "x-loupe-queue"
EXCHANGE_HEADER = "x-loupe-exchange"
ROUTING_KEY_HEADER = "x-loupe-routing-key"
FAILED_AT_HEADER = "x-loupe-failed-at"
SERVICE_HEADER = "x-loupe-service"
ORDER_HEADER = "x-loupe-order-id"
# The broker's own dead-lettering and redelivery history: meaningless on a re-sent copy.
BROKER_HISTORY_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")
# RabbitMQ's count of this copy's earlier deliveries; quorum queues set it on a redelivery.
DELIVERY_COUNT_HEADER = "x-delivery-count"
# The exchange a copy is delivered through when the broker dead-letters it from a delay queue
# (and when the portal requeues a letter): the default exchange, which no producer may use.
RETURNED_THROUGH = ""


def order_id_of(headers: dict[str, Any], body: str | bytes | None) -> str | None:
    """The order a message is about, where it says: loupe's header on a copy it re-sent, else
    the `order_id` of a JSON body (every order event has one). None when neither names one."""
    named = _text_header(headers, ORDER_HEADER)
    if named:
        return named
    try:
        data = json.loads(body or "")
    except (ValueError, TypeError):
        return None
    value = data.get("order_id") if isinstance(data, dict) else None
    return str(value) if value else None


class PoisonMessage(Exception):
    """The message can never be processed (retrying cannot help); the text says why."""


@dataclass(frozen=True)
class Delivery:
    message_id: str
    queue: str
    routing_key: str
    attempt: int
    # The consumer span, so work resumed later by a person can link back to this step.
    span_context: SpanContext


Handler = Callable[[OrderEvent, Delivery], Awaitable[None]]
DeadLetterHook = Callable[[str, str, OrderEvent | None], Awaitable[None]]


def _int_header(headers: dict[str, Any], name: str, default: int) -> int:
    try:
        return int(headers.get(name, default))
    except (TypeError, ValueError, OverflowError):
        return default


def trusted_headers(headers: dict[str, Any], exchange: str) -> dict[str, Any]:
    """The headers the consumer may believe: all of them on a copy that came back through the
    default exchange; on anything a producer published, all but loupe's own `x-loupe-*`."""
    if exchange == RETURNED_THROUGH:
        return dict(headers)
    return {k: v for k, v in headers.items() if not str(k).startswith(OWN_HEADER_PREFIX)}


def delivery_attempt(
    headers: dict[str, Any], *, exchange: str, redelivered: bool, max_attempts: int
) -> int:
    """Which attempt this delivery is, between 1 and `max_attempts` + the broker's delivery
    limit, whatever the headers say.

    loupe's retry count is read only from a copy that came back through the default exchange
    (see the module's docstring), clamped to the budget; RabbitMQ's redelivery count only when
    the broker itself flagged the delivery as redelivered (a producer may have set the header
    on a first delivery), clamped to the queue's delivery limit.
    """
    attempt = 1
    if exchange == RETURNED_THROUGH:
        attempt = min(max(_int_header(headers, ATTEMPT_HEADER, 1), 1), max_attempts)
    if redelivered:
        redeliveries = _int_header(headers, DELIVERY_COUNT_HEADER, 0)
        attempt += min(max(redeliveries, 0), BROKER_DELIVERY_LIMIT)
    return attempt


def _text_header(headers: dict[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value else None


class Consumer:
    def __init__(
        self,
        spec: QueueSpec,
        handler: Handler,
        *,
        exchanges: Exchanges,
        publisher: Publisher,
        service: str,
        max_attempts: int,
        retry_delay_ms: int,
        on_dead_letter: DeadLetterHook | None = None,
        server: tuple[str, int] | None = None,
    ) -> None:
        self.spec = spec
        self._handler = handler
        self._exchanges = exchanges
        self._publisher = publisher
        self._service = service
        self._max_attempts = max_attempts
        self._retry_delay_ms = retry_delay_ms
        self._on_dead_letter = on_dead_letter
        self._server = server

    async def start(self, channel: AbstractChannel) -> None:
        queue = await channel.get_queue(self.spec.name, ensure=True)
        await queue.consume(self._on_message, no_ack=False)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        headers = trusted_headers(dict(message.headers or {}), message.exchange or "")
        context, note = extract_context(headers)
        exchange = _text_header(headers, EXCHANGE_HEADER) or message.exchange or ""
        key = _text_header(headers, ROUTING_KEY_HEADER) or message.routing_key or ""
        attempt = delivery_attempt(
            headers,
            exchange=message.exchange or "",
            redelivered=bool(message.redelivered),
            max_attempts=self._max_attempts,
        )
        message_id = message.message_id or hashlib.sha256(message.body).hexdigest()
        attributes: dict[str, Any] = {
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": exchange,
            "messaging.destination.subscription.name": self.spec.name,
            "messaging.message.id": message_id,
            "messaging.message.body.size": len(message.body),
            DELIVERY_ATTEMPT: attempt,
        }
        if key:
            attributes["messaging.rabbitmq.destination.routing_key"] = key
        if message.delivery_tag is not None:
            attributes["messaging.rabbitmq.message.delivery_tag"] = message.delivery_tag
        if self._server is not None:
            attributes["server.address"], attributes["server.port"] = self._server
        if note:
            attributes[TRACE_CONTEXT_NOTE] = note
        with _tracer.start_as_current_span(
            f"process {exchange or 'amq.default'}",
            context=context,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if note:
                span.add_event("trace context missing", {TRACE_CONTEXT_NOTE: note})
            delivery = Delivery(message_id, self.spec.name, key, attempt, span.get_span_context())
            await self._process(message, delivery, headers, exchange, span)

    async def _process(
        self,
        message: AbstractIncomingMessage,
        delivery: Delivery,
        headers: dict[str, Any],
        exchange: str,
        span: trace.Span,
    ) -> None:
        event: OrderEvent | None = None
        try:
            event = OrderEvent.from_json(message.body)
            span.set_attribute(ORDER_ID, event.order_id)
            await self._handler(event, delivery)
        except Exception as exc:
            poison = isinstance(exc, (OrderEventError, PoisonMessage))
            reason = f"poison message: {exc}" if poison else f"{type(exc).__name__}: {exc}"
            self._mark_failed(span, exc, reason)
            forwarded = self._forward_headers(headers, exchange, delivery.routing_key)
            if not poison and delivery.attempt < self._max_attempts:
                await self._settle(message, self._retry(message, delivery, forwarded, reason))
                return
            if not poison:
                reason = f"gave up after {delivery.attempt} attempts: {reason}"
            order_id = event.order_id if event else None
            if poison and order_id is None:
                # A poison event that failed to parse may still have named its order.
                order_id = getattr(exc, "order_id", None)
            await self._settle(
                message, self._dead_letter(message, delivery, forwarded, reason, order_id, event)
            )
        else:
            await message.ack()

    @staticmethod
    def _mark_failed(span: trace.Span, exc: BaseException, reason: str) -> None:
        span.record_exception(exc)
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(Status(StatusCode.ERROR, reason))

    async def _settle(self, message: AbstractIncomingMessage, forward: Awaitable[None]) -> None:
        """Ack only once the forwarded copy is confirmed; otherwise hand the message back."""
        try:
            await forward
        except Exception:
            log.exception("could not forward message %s; requeueing it", message.message_id)
            await message.nack(requeue=True)
        else:
            await message.ack()

    def _forward_headers(self, headers: dict[str, Any], exchange: str, key: str) -> dict[str, Any]:
        # The broker's history (from the delay queue) would only mislead on the new copy.
        forwarded = {k: v for k, v in headers.items() if not k.startswith(BROKER_HISTORY_HEADERS)}
        forwarded[EXCHANGE_HEADER] = exchange
        forwarded[ROUTING_KEY_HEADER] = key
        return forwarded

    async def _retry(
        self,
        message: AbstractIncomingMessage,
        delivery: Delivery,
        forwarded: dict[str, Any],
        reason: str,
    ) -> None:
        forwarded[ATTEMPT_HEADER] = delivery.attempt + 1
        forwarded[REASON_HEADER] = reason[:1000]
        trace.get_current_span().add_event(
            "retry scheduled",
            {
                "loupe.messaging.next_attempt": delivery.attempt + 1,
                "loupe.messaging.retry_delay_ms": self._retry_delay_ms,
            },
        )
        log.warning(
            "retrying message %s from %s (attempt %d of %d): %s",
            delivery.message_id,
            self.spec.name,
            delivery.attempt + 1,
            self._max_attempts,
            reason,
        )
        await self._publisher.publish(
            self._exchanges.retry,
            message.body,
            self.spec.name,
            headers=forwarded,
            message_id=delivery.message_id,
            expiration_ms=self._retry_delay_ms,
            keep_trace_headers=True,
        )

    async def _dead_letter(
        self,
        message: AbstractIncomingMessage,
        delivery: Delivery,
        forwarded: dict[str, Any],
        reason: str,
        order_id: str | None,
        event: OrderEvent | None,
    ) -> None:
        forwarded.update(
            {
                ATTEMPT_HEADER: delivery.attempt,
                REASON_HEADER: reason[:1000],
                QUEUE_HEADER: self.spec.name,
                FAILED_AT_HEADER: datetime.now(UTC).isoformat(),
                SERVICE_HEADER: self._service,
            }
        )
        span = trace.get_current_span()
        if order_id:
            forwarded[ORDER_HEADER] = order_id
            # A poison event that named its order before failing to parse still belongs to that
            # order: the monitor finds the dead letter by it.
            span.set_attribute(ORDER_ID, order_id)
        span.add_event(DEAD_LETTERED_EVENT, {DEAD_LETTER_REASON: reason})
        log.error(
            "dead-lettering message %s from %s: %s",
            delivery.message_id,
            self.spec.name,
            reason,
            extra={"order_id": order_id},
        )
        await self._publisher.publish(
            self._exchanges.dead_letter,
            message.body,
            self.spec.name,
            headers=forwarded,
            message_id=delivery.message_id,
            span_attributes={ORDER_ID: order_id} if order_id else None,
        )
        if self._on_dead_letter is not None and order_id:
            try:
                await self._on_dead_letter(order_id, reason, event)
            except Exception:
                # The message itself is safe in the dead-letter queue; say loudly that the
                # order's status could not follow.
                log.exception("could not mark order %s failed after dead-lettering", order_id)
