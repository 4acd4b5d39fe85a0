"""crm-api's queue handler alone: it follows every status and takes in orders it never saw."""

from __future__ import annotations

from loupe.crm import handlers
from loupe.orders import OrderStatus
from tests.support.service_fakes import FakeKernel, FakeOrders, status_event


async def test_crm_follows_every_status_inserting_orders_it_lacks() -> None:
    kernel, orders = FakeKernel(), FakeOrders()
    handlers.subscribe(kernel, orders)  # type: ignore[arg-type]
    assert kernel.dead_letter_hooks() == {"crm.order-status": None}
    event = status_event("b2b-1", OrderStatus.PRICE_CALCULATED, price=99.0, currency="EUR")
    await kernel.deliver("crm.order-status", event)
    assert orders.calls == [("mirror", {"event": event, "insert_missing": True})]
