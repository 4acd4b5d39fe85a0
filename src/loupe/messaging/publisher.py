"""Publishing with a producer span, trace headers, persistence and publisher confirms.

`publish` returns only once the broker has confirmed the message, so the services' outbox
relay (service/outbox.py) deletes an event only once it is safe in RabbitMQ.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from loupe.messaging.propagation import inject_context
from loupe.orders import OrderEvent, routing_key
from loupe.telemetry.attributes import ORDER_ID, ORDER_SOURCE

_tracer = trace.get_tracer("loupe.messaging")


def producer_attributes(
    exchange: str, key: str, message_id: str, size: int, server: tuple[str, int] | None
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": exchange,
        "messaging.message.id": message_id,
        "messaging.message.body.size": size,
    }
    if key:
        attributes["messaging.rabbitmq.destination.routing_key"] = key
    if server is not None:
        attributes["server.address"], attributes["server.port"] = server
    return attributes


def describe_failure(exc: BaseException, server: tuple[str, int] | None) -> str:
    """Why a publish failed, in words a person can act on (never an object's repr)."""
    where = f" at {server[0]}:{server[1]}" if server else ""
    if isinstance(exc, TimeoutError):
        return f"RabbitMQ{where} did not confirm in time (is publishing blocked by an alarm?)"
    if isinstance(exc, aio_pika.exceptions.PublishError):
        return f"RabbitMQ{where} returned the message: no queue is bound to its routing key"
    if isinstance(exc, aio_pika.exceptions.DeliveryError):
        return f"RabbitMQ{where} did not accept the message (a negative confirm)"
    if isinstance(exc, OSError | aio_pika.exceptions.AMQPError | RuntimeError):
        return f"RabbitMQ unreachable{where} ({type(exc).__name__})"
    return f"publishing to RabbitMQ{where} failed: {type(exc).__name__}: {exc}"


class Publisher:
    def __init__(self, app_id: str, server: tuple[str, int] | None = None) -> None:
        self._app_id = app_id
        self._server = server

    async def publish(
        self,
        exchange: AbstractExchange,
        body: bytes,
        key: str,
        *,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        span_attributes: Mapping[str, Any] | None = None,
        expiration_ms: int | None = None,
        keep_trace_headers: bool = False,
        confirm_seconds: float | None = None,
    ) -> str:
        """Publish one persistent message and wait for the broker's confirm.

        `keep_trace_headers` re-sends a message under its original producer's context
        (retries), so every delivery attempt stays a child of the span that first sent it.
        `confirm_seconds`: how long to wait for the confirm before failing, inside the span so
        the span says so (a broker blocked by an alarm never answers); None waits.
        """
        message_id = message_id or str(uuid.uuid4())
        attributes = producer_attributes(exchange.name, key, message_id, len(body), self._server)
        attributes.update(span_attributes or {})
        with _tracer.start_as_current_span(
            f"publish {exchange.name or 'amq.default'}",
            kind=SpanKind.PRODUCER,
            attributes=attributes,
        ) as span:
            message_headers: dict[str, Any] = dict(headers or {})
            if not keep_trace_headers:
                inject_context(message_headers)
            message = aio_pika.Message(
                body,
                headers=message_headers,
                message_id=message_id,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                timestamp=datetime.now(UTC),
                app_id=self._app_id,
                type=key,
                expiration=expiration_ms / 1000 if expiration_ms is not None else None,
            )
            try:
                async with asyncio.timeout(confirm_seconds):
                    await exchange.publish(message, routing_key=key, mandatory=True)
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, describe_failure(exc, self._server)))
                span.set_attribute("error.type", type(exc).__name__)
                raise
        return message_id

    async def publish_event(
        self,
        exchange: AbstractExchange,
        event: OrderEvent,
        message_id: str | None = None,
        confirm_seconds: float | None = None,
    ) -> str:
        """Publish an order status event under its routing key, e.g. `order.shipped`."""
        return await self.publish(
            exchange,
            event.to_json(),
            routing_key(event.status),
            message_id=message_id,
            confirm_seconds=confirm_seconds,
            span_attributes={ORDER_ID: event.order_id, ORDER_SOURCE: event.source.value},
        )
