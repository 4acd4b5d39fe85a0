"""The consumer on the real broker: spans, retries, dead-lettering, poison, bad trace headers."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aio_pika
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from loupe.messaging import Delivery
from loupe.messaging.topology import DEAD_LETTER_QUEUE
from loupe.orders import OrderEvent, OrderSource, OrderStatus, routing_key
from tests.support.integration import (
    Broker,
    consumer_spans,
    producer_spans,
    wait_for_consumer_spans,
)

pytestmark = pytest.mark.integration

QUEUE = "mes.order-submitted"


def _event(status: OrderStatus = OrderStatus.SUBMITTED) -> OrderEvent:
    return OrderEvent.now(
        order_id=str(uuid.uuid4()),
        status=status,
        previous_status=None,
        source=OrderSource.B2B,
        price=99.5 if status is OrderStatus.PRICE_CALCULATED else None,
        currency="EUR" if status is OrderStatus.PRICE_CALCULATED else None,
    )


class Recorder:
    """A handler that fails its first `failures` calls, then records the event it applied."""

    def __init__(self, failures: int = 0, error: str = "database is restarting") -> None:
        self.failures = failures
        self.error = error
        self.calls: list[tuple[OrderEvent, Delivery]] = []
        self.applied: list[OrderEvent] = []

    async def __call__(self, event: OrderEvent, delivery: Delivery) -> None:
        self.calls.append((event, delivery))
        if len(self.calls) <= self.failures:
            raise ConnectionError(self.error)
        self.applied.append(event)


class DeadLetters:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, OrderEvent | None]] = []

    async def __call__(self, order_id: str, reason: str, event: OrderEvent | None) -> None:
        self.calls.append((order_id, reason, event))


@pytest.fixture
async def handler(broker: Broker) -> Recorder:
    """A Recorder that never fails, consuming QUEUE with the consumer's default attempts."""
    recorder = Recorder()
    await broker.consume(QUEUE, recorder)
    return recorder


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def _parent(span: ReadableSpan) -> tuple[int, int] | None:
    return (span.parent.trace_id, span.parent.span_id) if span.parent else None


async def test_consumer_span_is_a_child_of_the_producer_span(
    broker: Broker, spans: InMemorySpanExporter, handler: Recorder
) -> None:
    event = _event()
    message_id = await broker.publisher.publish_event(broker.exchanges.orders, event)

    (consumer,) = await wait_for_consumer_spans(spans, QUEUE, 1)
    (producer,) = producer_spans(spans, "loupe.orders")

    assert consumer.kind is SpanKind.CONSUMER
    assert _parent(consumer) == _ids(producer)
    assert consumer.parent is not None and consumer.parent.is_remote
    assert consumer.name == "process loupe.orders"
    assert consumer.status.status_code is StatusCode.UNSET
    attributes = _attributes(consumer)
    assert attributes["messaging.system"] == "rabbitmq"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.destination.name"] == "loupe.orders"
    assert attributes["messaging.destination.subscription.name"] == QUEUE
    assert attributes["messaging.rabbitmq.destination.routing_key"] == "order.submitted"
    assert attributes["messaging.message.id"] == message_id
    assert attributes["loupe.messaging.delivery_attempt"] == 1
    assert attributes["order.id"] == event.order_id
    assert "loupe.trace_context.note" not in attributes

    # The handler got the event and a delivery that names this span.
    ((received, delivery),) = handler.calls
    assert received == event
    assert delivery.message_id == message_id
    assert delivery.queue == QUEUE
    assert delivery.routing_key == "order.submitted"
    assert delivery.attempt == 1
    assert (delivery.span_context.trace_id, delivery.span_context.span_id) == _ids(consumer)
    assert await broker.depth(QUEUE) == 0


async def test_one_event_fans_out_to_crm_and_shop_under_one_producer_span(
    broker: Broker, spans: InMemorySpanExporter
) -> None:
    crm, shop = Recorder(), Recorder()
    await broker.consume("crm.order-status", crm)
    await broker.consume("shop.order-status", shop)
    event = _event(OrderStatus.PRICE_CALCULATED)
    await broker.publisher.publish_event(broker.exchanges.orders, event)

    (crm_span,) = await wait_for_consumer_spans(spans, "crm.order-status", 1)
    (shop_span,) = await wait_for_consumer_spans(spans, "shop.order-status", 1)
    (producer,) = producer_spans(spans, "loupe.orders")
    assert _parent(crm_span) == _ids(producer)
    assert _parent(shop_span) == _ids(producer)
    assert crm_span.context is not None and shop_span.context is not None
    assert crm_span.context.span_id != shop_span.context.span_id
    for span in (crm_span, shop_span):
        attributes = _attributes(span)
        assert attributes["messaging.rabbitmq.destination.routing_key"] == routing_key(
            OrderStatus.PRICE_CALCULATED
        )
        assert attributes["order.id"] == event.order_id
    assert [e for e, _ in crm.calls] == [event]
    assert [e for e, _ in shop.calls] == [event]
    # The MES does not listen for prices.
    assert consumer_spans(spans, "mes.order-submitted") == []


async def test_transient_failure_is_retried_under_the_same_producer_span(
    broker: Broker, spans: InMemorySpanExporter
) -> None:
    handler = Recorder(failures=2)
    dead_letters = DeadLetters()
    await broker.consume(
        QUEUE, handler, max_attempts=5, retry_delay_ms=100, on_dead_letter=dead_letters
    )
    event = _event()
    message_id = await broker.publisher.publish_event(broker.exchanges.orders, event)

    attempts = await wait_for_consumer_spans(spans, QUEUE, 3)
    (producer,) = [
        s for s in producer_spans(spans, "loupe.orders") if _attributes(s).get("order.id")
    ]
    assert [_attributes(s)["loupe.messaging.delivery_attempt"] for s in attempts] == [1, 2, 3]
    for span in attempts:
        assert _parent(span) == _ids(producer)
        assert _attributes(span)["messaging.message.id"] == message_id
        # The original exchange and routing key are kept across the retry queue.
        assert _attributes(span)["messaging.destination.name"] == "loupe.orders"
        assert _attributes(span)["messaging.rabbitmq.destination.routing_key"] == "order.submitted"
    assert [s.status.status_code for s in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert "database is restarting" in (attempts[0].status.description or "")
    assert any(e.name == "retry scheduled" for e in attempts[0].events)

    assert [d.attempt for _, d in handler.calls] == [1, 2, 3]
    assert handler.applied == [event]
    assert dead_letters.calls == []
    await broker.consume_channel.close()
    assert await broker.depth(QUEUE) == 0
    assert await broker.depth(f"{QUEUE}.retry") == 0
    assert await broker.depth(DEAD_LETTER_QUEUE) == 0


async def test_permanent_failure_ends_in_the_dead_letter_queue(
    broker: Broker, spans: InMemorySpanExporter
) -> None:
    handler = Recorder(failures=1_000, error="pricing service said no")
    dead_letters = DeadLetters()
    await broker.consume(
        QUEUE, handler, max_attempts=3, retry_delay_ms=100, on_dead_letter=dead_letters
    )
    event = _event()
    message_id = await broker.publisher.publish_event(broker.exchanges.orders, event)

    dead = await broker.get(DEAD_LETTER_QUEUE, "the dead-lettered event")
    headers = dict(dead.headers)
    reason = str(headers["x-loupe-reason"])
    assert "pricing service said no" in reason
    assert "gave up after 3 attempts" in reason
    assert headers["x-loupe-queue"] == QUEUE
    assert headers["x-loupe-attempt"] == 3
    assert headers["x-loupe-order-id"] == event.order_id
    assert headers["x-loupe-exchange"] == "loupe.orders"
    assert headers["x-loupe-routing-key"] == "order.submitted"
    assert headers["x-loupe-service"] == "test-service"
    assert dead.body == event.to_json()
    assert dead.message_id == message_id

    attempts = await wait_for_consumer_spans(spans, QUEUE, 3)
    assert [_attributes(s)["loupe.messaging.delivery_attempt"] for s in attempts] == [1, 2, 3]
    assert all(s.status.status_code is StatusCode.ERROR for s in attempts)
    assert "pricing service said no" in (attempts[-1].status.description or "")
    (dead_lettered,) = [e for e in attempts[-1].events if e.name == "dead-lettered"]
    assert (dead_lettered.attributes or {})["loupe.messaging.reason"] == reason

    assert len(dead_letters.calls) == 1
    order_id, hook_reason, hook_event = dead_letters.calls[0]
    assert order_id == event.order_id
    assert hook_reason == reason
    assert hook_event == event
    assert [d.attempt for _, d in handler.calls] == [1, 2, 3]
    assert handler.applied == []
    # Nothing is left to loop: with the consumer gone (so nothing is held unacked), the work
    # and retry queues are empty, and the dead-letter queue held the one copy taken above.
    await broker.consume_channel.close()
    assert await broker.depth(QUEUE) == 0
    assert await broker.depth(f"{QUEUE}.retry") == 0
    assert await broker.depth(DEAD_LETTER_QUEUE) == 0


def _raw_message(body: bytes, message_id: str, headers: dict[str, Any]) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        message_id=message_id,
        headers=headers,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


POISON = [
    pytest.param(b"{not json", None, "body is not JSON", id="not-json"),
    pytest.param(b"[1, 2, 3]", None, "JSON object", id="not-an-object"),
    pytest.param(
        json.dumps(
            {
                "order_id": "order-with-bad-status",
                "status": "TELEPORTED",
                "source": "shop",
                "occurred_at": "2024-05-01T10:00:00+00:00",
            }
        ).encode(),
        "order-with-bad-status",
        "field status",
        id="bad-status",
    ),
    pytest.param(
        json.dumps(
            {
                "order_id": "order-with-bad-price",
                "status": "SUBMITTED",
                "source": "shop",
                "occurred_at": "2024-05-01T10:00:00+00:00",
                "price": "cheap",
            }
        ).encode(),
        "order-with-bad-price",
        "field price",
        id="bad-price",
    ),
]


@pytest.mark.parametrize(("body", "order_id", "reason"), POISON)
async def test_poison_message_is_dead_lettered_at_once(
    broker: Broker,
    spans: InMemorySpanExporter,
    body: bytes,
    order_id: str | None,
    reason: str,
) -> None:
    handler = Recorder()
    dead_letters = DeadLetters()
    await broker.consume(QUEUE, handler, max_attempts=5, on_dead_letter=dead_letters)
    await broker.exchanges.orders.publish(
        _raw_message(body, "poison-1", {}), routing_key="order.submitted"
    )

    dead = await broker.get(DEAD_LETTER_QUEUE, "the poison message")
    headers = dict(dead.headers)
    assert dead.body == body
    assert headers["x-loupe-attempt"] == 1
    assert str(headers["x-loupe-reason"]).startswith("poison message:")
    assert reason in str(headers["x-loupe-reason"])
    assert headers["x-loupe-queue"] == QUEUE
    assert headers.get("x-loupe-order-id") == order_id

    (span,) = await wait_for_consumer_spans(spans, QUEUE, 1)
    assert _attributes(span)["loupe.messaging.delivery_attempt"] == 1
    assert span.status.status_code is StatusCode.ERROR
    # The monitor finds the dead letter by the order it named, if it named one.
    assert _attributes(span).get("order.id") == order_id
    assert [e.name for e in span.events if e.name == "dead-lettered"] == ["dead-lettered"]
    assert handler.calls == []
    if order_id is None:
        assert dead_letters.calls == []
    else:
        ((hook_order, hook_reason, hook_event),) = dead_letters.calls
        assert hook_order == order_id
        assert reason in hook_reason
        assert hook_event is None
    assert await broker.depth(f"{QUEUE}.retry") == 0
    assert await broker.depth(QUEUE) == 0


async def test_malformed_traceparent_starts_a_new_trace_with_a_note(
    broker: Broker, spans: InMemorySpanExporter, handler: Recorder
) -> None:
    event = _event()
    await broker.exchanges.orders.publish(
        _raw_message(event.to_json(), "bad-trace-1", {"traceparent": "garbage"}),
        routing_key="order.submitted",
    )

    (span,) = await wait_for_consumer_spans(spans, QUEUE, 1)
    assert [e for e, _ in handler.calls] == [event]
    assert span.parent is None
    note = str(_attributes(span)["loupe.trace_context.note"])
    assert "malformed traceparent" in note
    assert "'garbage'" in note
    assert any(e.name == "trace context missing" for e in span.events)
    assert span.status.status_code is StatusCode.UNSET


async def test_missing_traceparent_starts_a_new_trace_with_a_note(
    broker: Broker, spans: InMemorySpanExporter, handler: Recorder
) -> None:
    await broker.exchanges.orders.publish(
        _raw_message(_event().to_json(), "no-trace-1", {}), routing_key="order.submitted"
    )
    (span,) = await wait_for_consumer_spans(spans, QUEUE, 1)
    assert span.parent is None
    assert "no traceparent" in str(_attributes(span)["loupe.trace_context.note"])
    assert len(handler.calls) == 1


FORGED = [
    pytest.param(
        {
            "x-loupe-attempt": -1_000_000,
            "x-delivery-count": -7,
            "x-loupe-order-id": "someone-else",
            "x-death": [{"queue": f"{QUEUE}.retry", "reason": "expired", "count": -1_000_000}],
        },
        id="claims-endless-retries",
    ),
    pytest.param(
        {"x-loupe-attempt": 99, "x-delivery-count": 50, "x-loupe-reason": "forged"},
        id="claims-the-budget-is-spent",
    ),
]


@pytest.mark.parametrize("forged", FORGED)
async def test_a_producer_s_headers_neither_add_nor_remove_retries(
    broker: Broker, spans: InMemorySpanExporter, forged: dict[str, Any]
) -> None:
    handler = Recorder(failures=1_000, error="pricing service said no")
    await broker.consume(QUEUE, handler, max_attempts=3, retry_delay_ms=100)
    event = _event()
    await broker.exchanges.orders.publish(
        _raw_message(event.to_json(), f"forged-{uuid.uuid4()}", forged),
        routing_key="order.submitted",
    )

    dead = await broker.get(DEAD_LETTER_QUEUE, "the dead-lettered event")
    headers = dict(dead.headers)
    assert str(headers["x-loupe-reason"]).startswith("gave up after 3 attempts")
    assert headers["x-loupe-attempt"] == 3
    assert headers["x-loupe-order-id"] == event.order_id
    assert [d.attempt for _, d in handler.calls] == [1, 2, 3]
    await broker.consume_channel.close()
    assert await broker.depth(QUEUE) == 0
    assert await broker.depth(f"{QUEUE}.retry") == 0
