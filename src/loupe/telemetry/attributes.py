"""The `order.*` span attributes: how Jaeger finds an order and sees each move it made."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import trace

from loupe.orders import OrderSource, OrderStatus

ORDER_ID = "order.id"
ORDER_STATUS_FROM = "order.status.from"
ORDER_STATUS_TO = "order.status.to"
ORDER_SOURCE = "order.source"
ORDER_PRICE = "order.price"
ORDER_FAILURE_REASON = "order.failure.reason"
NEW = "NEW"

# loupe's own messaging details that the OpenTelemetry conventions have no name for.
DELIVERY_ATTEMPT = "loupe.messaging.delivery_attempt"
TRACE_CONTEXT_NOTE = "loupe.trace_context.note"
DUPLICATE_DELIVERY = "loupe.messaging.duplicate"
# The span event a consumer adds when it moves a message to the dead-letter queue, with why.
DEAD_LETTERED_EVENT = "dead-lettered"
DEAD_LETTER_REASON = "loupe.messaging.reason"
# The span a service starts with for each order it changed just before (orders_table): the
# status the order is at, with order.status.to and no order.status.from.
STATUS_RESTATED = "order status restated"
# The span each service sends every few seconds whatever it does (service/kernel.py), so the
# monitor can tell "nothing happened" from "nothing reached me". Jaeger forwards it to the
# monitor only, never to its storage (deploy/jaeger).
HEARTBEAT = "telemetry heartbeat"
# On the link from a person's step to the order's previous step (a trace of its own).
LINK_REASON = "loupe.link.reason"
PREVIOUS_STEP = "previous order step"
# On the link from a server span to the context an untrusted caller sent (telemetry/edge.py).
UNTRUSTED_CALLER = "untrusted caller"


@dataclass(frozen=True)
class OrderAttributes:
    order_id: str
    source: OrderSource | None = None
    status_from: OrderStatus | None = None
    status_to: OrderStatus | None = None

    def as_dict(self) -> dict[str, str]:
        attributes = {ORDER_ID: self.order_id}
        if self.source is not None:
            attributes[ORDER_SOURCE] = self.source.value
        if self.status_to is not None:
            # An order's first step has no status before it; NEW says so explicitly.
            attributes[ORDER_STATUS_FROM] = self.status_from.value if self.status_from else NEW
        if self.status_to is not None:
            attributes[ORDER_STATUS_TO] = self.status_to.value
        return attributes


def set_order_attributes(attributes: OrderAttributes, span: trace.Span | None = None) -> None:
    """Mark a span with the order it touches; with from/to set, the span is a transition."""
    (span or trace.get_current_span()).set_attributes(attributes.as_dict())
