"""shop-api's queue: the shop follows the statuses other services decide, so its customers see
them, and never creates an order it did not take (an unknown order's event is ignored)."""

from __future__ import annotations

from functools import partial

from loupe.service.kernel import ServiceKernel
from loupe.service.orders_table import OrderTable

QUEUE = "shop.order-status"


def subscribe(kernel: ServiceKernel, orders: OrderTable) -> None:
    kernel.consume(QUEUE, partial(orders.mirror, insert_missing=False))
