"""Publishing status events onto the real topology."""

from __future__ import annotations

import aio_pika
import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from loupe.messaging.topology import UNROUTABLE_QUEUE
from loupe.orders import OrderEvent, OrderSource, OrderStatus
from tests.support.integration import Broker, producer_spans

pytestmark = pytest.mark.integration

ORDER_ID = "5b2d7a10-8c1e-4f3a-9b6d-2e4f6a8c0d12"


def _event(status: OrderStatus = OrderStatus.SUBMITTED) -> OrderEvent:
    return OrderEvent.now(
        order_id=ORDER_ID,
        status=status,
        previous_status=None,
        source=OrderSource.SHOP,
        model_sha256="ab" * 32,
        model_url="http://127.0.0.1:8081/models/" + "ab" * 32,
    )


async def test_event_lands_on_its_queue_with_trace_headers(
    broker: Broker, spans: InMemorySpanExporter
) -> None:
    event = _event()
    message_id = await broker.publisher.publish_event(broker.exchanges.orders, event)

    message = await broker.get("mes.order-submitted", "the submitted event")
    assert message.body == event.to_json()
    assert OrderEvent.from_json(message.body) == event
    assert message.message_id == message_id
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == "application/json"
    assert message.routing_key == "order.submitted"
    assert message.exchange == "loupe.orders"
    assert message.app_id == "tests"
    assert message.timestamp is not None
    headers = dict(message.headers)
    # No baggage was set, so none is sent.
    assert "baggage" not in headers

    (producer,) = producer_spans(spans, "loupe.orders")
    assert producer.kind is SpanKind.PRODUCER
    assert producer.context is not None
    assert headers["traceparent"] == (
        f"00-{producer.context.trace_id:032x}-{producer.context.span_id:016x}-"
        f"{int(producer.context.trace_flags):02x}"
    )
    attributes = dict(producer.attributes or {})
    assert attributes["messaging.system"] == "rabbitmq"
    assert attributes["messaging.operation.type"] == "send"
    assert attributes["messaging.destination.name"] == "loupe.orders"
    assert attributes["messaging.rabbitmq.destination.routing_key"] == "order.submitted"
    assert attributes["messaging.message.id"] == message_id
    assert attributes["messaging.message.body.size"] == len(event.to_json())
    assert attributes["order.id"] == ORDER_ID
    assert attributes["order.source"] == "shop"
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == 5672


async def test_producer_span_is_a_child_of_the_current_span_and_carries_baggage(
    broker: Broker, spans: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer(__name__)
    token = context.attach(baggage.set_baggage("loupe.tenant", "workshop-1"))
    try:
        with tracer.start_as_current_span("POST /orders") as request:
            await broker.publisher.publish_event(broker.exchanges.orders, _event())
    finally:
        context.detach(token)

    message = await broker.get("mes.order-submitted", "the submitted event")
    headers = dict(message.headers)
    assert headers["baggage"] == "loupe.tenant=workshop-1"
    (producer,) = producer_spans(spans, "loupe.orders")
    assert producer.parent is not None
    assert producer.parent.span_id == request.get_span_context().span_id
    assert producer.context is not None
    assert producer.context.trace_id == request.get_span_context().trace_id
    assert f"{producer.context.span_id:016x}" in str(headers["traceparent"])


async def test_message_nobody_binds_lands_in_the_unroutable_queue(
    broker: Broker, spans: InMemorySpanExporter
) -> None:
    body = b'{"hello": "nobody"}'
    message_id = await broker.publisher.publish(
        broker.exchanges.orders, body, "nobody.listens", message_id="lost-and-found-1"
    )
    assert message_id == "lost-and-found-1"

    message = await broker.get(UNROUTABLE_QUEUE, "the unroutable message")
    assert message.body == body
    assert message.message_id == "lost-and-found-1"
    assert message.routing_key == "nobody.listens"
    assert "traceparent" in dict(message.headers)
    for queue in ("mes.order-submitted", "mes.order-decisions", "crm.order-status"):
        assert await broker.depth(queue) == 0
    (producer,) = producer_spans(spans, "loupe.orders")
    assert producer.status.is_ok
