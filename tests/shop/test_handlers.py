"""shop-api's queue handler alone: it follows statuses and never creates an order."""

from __future__ import annotations

from loupe.orders import OrderStatus
from loupe.shop import handlers
from tests.support.service_fakes import FakeKernel, FakeOrders, status_event


async def test_the_shop_follows_statuses_of_orders_it_took_only() -> None:
    kernel, orders = FakeKernel(), FakeOrders()
    handlers.subscribe(kernel, orders)  # type: ignore[arg-type]
    # A view that cannot follow keeps the message in the dead-letter queue to replay.
    assert kernel.dead_letter_hooks() == {"shop.order-status": None}
    event = status_event("o1", OrderStatus.SHIPPED)
    await kernel.deliver("shop.order-status", event)
    assert orders.calls == [("mirror", {"event": event, "insert_missing": False})]
