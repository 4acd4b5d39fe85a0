"""shop-api's queue handler alone: it follows statuses and never creates an order."""

from __future__ import annotations

from opentelemetry.trace import INVALID_SPAN_CONTEXT
from service_fakes import FakeKernel, FakeOrders

from loupe.messaging import Delivery
from loupe.orders import OrderEvent, OrderSource, OrderStatus
from loupe.shop import handlers


async def test_the_shop_follows_statuses_of_orders_it_took_only() -> None:
    kernel, orders = FakeKernel(), FakeOrders()
    handlers.subscribe(kernel, orders)  # type: ignore[arg-type]
    assert set(kernel.queues) == {"shop.order-status"}
    handler, on_dead_letter = kernel.queues["shop.order-status"]
    assert on_dead_letter is None, "a view that cannot follow keeps the message to replay"

    event = OrderEvent.now(
        order_id="o1",
        status=OrderStatus.SHIPPED,
        previous_status=OrderStatus.MANUFACTURING_COMPLETED,
        source=OrderSource.SHOP,
    )
    await handler(
        event, Delivery("m1", "shop.order-status", "order.shipped", 1, INVALID_SPAN_CONTEXT)
    )
    assert orders.calls == [("mirror", {"event": event, "insert_missing": False})]
