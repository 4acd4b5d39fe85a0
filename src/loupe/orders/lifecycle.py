"""Statuses an order passes through and the transitions allowed between them. No I/O."""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    SUBMITTED = "SUBMITTED"
    PRICE_CALCULATED = "PRICE_CALCULATED"
    MANUFACTURING_APPROVED = "MANUFACTURING_APPROVED"
    MANUFACTURING_STARTED = "MANUFACTURING_STARTED"
    MANUFACTURING_COMPLETED = "MANUFACTURING_COMPLETED"
    SHIPPED = "SHIPPED"
    CLOSED = "CLOSED"
    # A seller declines to make a priced order.
    REJECTED = "REJECTED"
    # The pipeline could not carry the order on (unpriceable model, poison message).
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self in (OrderStatus.CLOSED, OrderStatus.REJECTED, OrderStatus.FAILED)


class OrderSource(StrEnum):
    SHOP = "shop"
    B2B = "b2b"


HAPPY_PATH: tuple[OrderStatus, ...] = (
    OrderStatus.SUBMITTED,
    OrderStatus.PRICE_CALCULATED,
    OrderStatus.MANUFACTURING_APPROVED,
    OrderStatus.MANUFACTURING_STARTED,
    OrderStatus.MANUFACTURING_COMPLETED,
    OrderStatus.SHIPPED,
    OrderStatus.CLOSED,
)

_NEXT: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.SUBMITTED: frozenset({OrderStatus.PRICE_CALCULATED, OrderStatus.FAILED}),
    OrderStatus.PRICE_CALCULATED: frozenset(
        {OrderStatus.MANUFACTURING_APPROVED, OrderStatus.REJECTED, OrderStatus.FAILED}
    ),
    OrderStatus.MANUFACTURING_APPROVED: frozenset(
        {OrderStatus.MANUFACTURING_STARTED, OrderStatus.FAILED}
    ),
    OrderStatus.MANUFACTURING_STARTED: frozenset(
        {OrderStatus.MANUFACTURING_COMPLETED, OrderStatus.FAILED}
    ),
    OrderStatus.MANUFACTURING_COMPLETED: frozenset({OrderStatus.SHIPPED, OrderStatus.FAILED}),
    OrderStatus.SHIPPED: frozenset({OrderStatus.CLOSED}),
    OrderStatus.CLOSED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.FAILED: frozenset(),
}


class IllegalTransition(Exception):
    """An order was asked to move somewhere its lifecycle does not allow."""

    def __init__(self, order_id: str, current: OrderStatus, wanted: OrderStatus) -> None:
        allowed = ", ".join(sorted(_NEXT[current])) or "nothing (it is final)"
        super().__init__(
            f"order {order_id} is {current}; it cannot become {wanted} (allowed next: {allowed})"
        )
        self.order_id = order_id
        self.current = current
        self.wanted = wanted


def allowed_next(status: OrderStatus) -> frozenset[OrderStatus]:
    return _NEXT[status]


def check_transition(order_id: str, current: OrderStatus, wanted: OrderStatus) -> None:
    if wanted not in _NEXT[current]:
        raise IllegalTransition(order_id, current, wanted)


def is_behind(current: OrderStatus, incoming: OrderStatus) -> bool:
    """True when `incoming` is a status the order has already passed.

    A service that only mirrors status events (the shop's and CRM's views) uses this to
    ignore stale or redelivered events instead of moving an order backwards.
    """
    if current == incoming:
        return True
    if current.terminal:
        return True
    if current in HAPPY_PATH and incoming in HAPPY_PATH:
        return HAPPY_PATH.index(incoming) < HAPPY_PATH.index(current)
    return False


def had_by_leaving(status: OrderStatus) -> tuple[OrderStatus, ...]:
    """Every status an order has had by the time it leaves `status`, in order: `status` and
    the happy path before it. Every status an order can leave is on the happy path (REJECTED
    and FAILED are final), and each is reached only from the one before it."""
    if status not in HAPPY_PATH:
        return ()
    return HAPPY_PATH[: HAPPY_PATH.index(status) + 1]


def routing_key(status: OrderStatus) -> str:
    """The topic routing key a status event is published under, e.g. `order.price_calculated`."""
    return f"order.{status.value.lower()}"
