"""crm-api's queue: CRM learns of every order and status from the status topic, including
orders it has not seen yet (B2B orders start in MES), so it inserts what it is missing."""

from __future__ import annotations

from functools import partial

from loupe.service.kernel import ServiceKernel
from loupe.service.orders_table import OrderTable

QUEUE = "crm.order-status"


def subscribe(kernel: ServiceKernel, orders: OrderTable) -> None:
    kernel.consume(QUEUE, partial(orders.mirror, insert_missing=True))
