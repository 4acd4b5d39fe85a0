"""RabbitMQ for loupe: topology, a confirming publisher, a retrying idempotent consumer, and
the W3C trace context that rides in message headers."""

from loupe.messaging.consumer import Consumer, Delivery, PoisonMessage
from loupe.messaging.propagation import extract_context, inject_context
from loupe.messaging.publisher import Publisher
from loupe.messaging.topology import (
    ORDERS_EXCHANGE,
    QUEUES,
    QueueSpec,
    declare_topology,
    open_topology,
)

__all__ = [
    "ORDERS_EXCHANGE",
    "QUEUES",
    "Consumer",
    "Delivery",
    "PoisonMessage",
    "Publisher",
    "QueueSpec",
    "declare_topology",
    "extract_context",
    "inject_context",
    "open_topology",
]
