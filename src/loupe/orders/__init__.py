"""The order lifecycle: statuses, who may move an order where, and the events that say so."""

from loupe.orders.events import OrderEvent, OrderEventError
from loupe.orders.lifecycle import (
    IllegalTransition,
    OrderSource,
    OrderStatus,
    check_transition,
    routing_key,
)

__all__ = [
    "IllegalTransition",
    "OrderEvent",
    "OrderEventError",
    "OrderSource",
    "OrderStatus",
    "check_transition",
    "routing_key",
]
