"""crm-api's routes: sellers see orders and decide on them. Each decision is a person's step,
resumed later than the order's last one: it gets a span of its own linked to that step."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from loupe.crm.contract import CrmOrder, Rejection, SellerAction, Shipment
from loupe.orders import OrderStatus
from loupe.service.http import Orders, order_view
from loupe.service.orders_table import OrderTable

router = APIRouter(prefix="/orders")


async def _decide(
    orders: OrderTable,
    order_id: str,
    to: OrderStatus,
    operation: str,
    updates: dict[str, Any],
    **event: Any,
) -> CrmOrder:
    row = await orders.resume(order_id, to, operation, updates=updates, event_fields=event)
    return order_view(CrmOrder, row)


@router.get("", response_model=list[CrmOrder], tags=["orders"])
async def list_orders(
    orders: Orders,
    status: Annotated[OrderStatus | None, Query(description="Only orders in this status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[CrmOrder]:
    """Orders for sellers, oldest change first (PRICE_CALCULATED: waiting for a decision)."""
    rows = await orders.pool.fetch(
        "SELECT * FROM orders WHERE $1::text IS NULL OR status = $1 ORDER BY updated_at LIMIT $2",
        status.value if status else None,
        limit,
    )
    return [order_view(CrmOrder, row) for row in rows]


@router.get("/{order_id}", response_model=CrmOrder, tags=["orders"])
async def read_order(order_id: str, orders: Orders) -> CrmOrder:
    return order_view(CrmOrder, await orders.row(order_id))


@router.post("/{order_id}/approve", response_model=CrmOrder, tags=["decisions"])
async def approve(order_id: str, action: SellerAction, orders: Orders) -> CrmOrder:
    """Approve manufacturing of a priced order; MES puts it in the operators' queue."""
    to = OrderStatus.MANUFACTURING_APPROVED
    return await _decide(orders, order_id, to, "approve manufacturing", {"seller": action.seller})


@router.post("/{order_id}/reject", response_model=CrmOrder, tags=["decisions"])
async def reject(order_id: str, action: Rejection, orders: Orders) -> CrmOrder:
    updates = {"seller": action.seller, "rejection_reason": action.reason}
    return await _decide(
        orders, order_id, OrderStatus.REJECTED, "reject order", updates, reason=action.reason
    )


@router.post("/{order_id}/ship", response_model=CrmOrder, tags=["decisions"])
async def ship(order_id: str, shipment: Shipment, orders: Orders) -> CrmOrder:
    """Ship a manufactured order."""
    updates = {"seller": shipment.seller, "tracking_number": shipment.tracking_number}
    return await _decide(orders, order_id, OrderStatus.SHIPPED, "ship order", updates)


@router.post("/{order_id}/close", response_model=CrmOrder, tags=["decisions"])
async def close(order_id: str, action: SellerAction, orders: Orders) -> CrmOrder:
    return await _decide(
        orders, order_id, OrderStatus.CLOSED, "close order", {"seller": action.seller}
    )
