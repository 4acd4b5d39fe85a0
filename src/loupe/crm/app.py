"""crm-api: sellers see priced orders, approve or reject manufacturing, ship and close.

CRM learns of every order and status through its own queue on the status topic; the
decisions its sellers take are published back on the same topic for MES and the shop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query
from pydantic import BaseModel, Field

from loupe.config import Settings
from loupe.messaging.consumer import Delivery
from loupe.orders import OrderEvent, OrderStatus
from loupe.runtime import OrderNotFound, ServiceRuntime


class CrmOrder(BaseModel):
    id: str
    source: str
    status: str
    price: float | None = None
    currency: str | None = None
    seller: str | None = None
    rejection_reason: str | None = None
    failure_reason: str | None = None
    tracking_number: str | None = None
    updated_at: str


class SellerAction(BaseModel):
    seller: str = Field(min_length=1, max_length=100, description="The seller's user name")


class Rejection(SellerAction):
    reason: str = Field(min_length=1, max_length=500)


class Shipment(SellerAction):
    tracking_number: str = Field(min_length=1, max_length=100)


def _view(row: Any) -> CrmOrder:
    data = dict(row)
    data["price"] = float(data["price"]) if data["price"] is not None else None
    data["updated_at"] = data["updated_at"].isoformat()
    return CrmOrder(**{k: v for k, v in data.items() if k in CrmOrder.model_fields})


def create_app(settings: Settings) -> FastAPI:
    runtime = ServiceRuntime("crm", settings, Path(__file__).parent / "migrations")
    app = runtime.create_app("crm-api", "The CRM's API: sellers decide on and ship orders.")

    async def follow_status(event: OrderEvent, delivery: Delivery) -> None:
        await runtime.mirror(event, delivery, insert_missing=True)

    runtime.consume("crm.order-status", follow_status)

    async def decide(
        order_id: str, to: OrderStatus, operation: str, updates: dict[str, Any], **event: Any
    ) -> CrmOrder:
        async with runtime.pool.acquire() as connection, connection.transaction():
            result = await runtime.transition(
                connection, order_id, to, resumed_by=operation, updates=updates, event_fields=event
            )
        return _view(result.row)

    @app.get("/orders", response_model=list[CrmOrder], tags=["orders"])
    async def list_orders(
        status: Annotated[
            OrderStatus | None, Query(description="Only orders in this status")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[CrmOrder]:
        """Orders for sellers, oldest change first (PRICE_CALCULATED: waiting for a decision)."""
        rows = await runtime.pool.fetch(
            "SELECT * FROM orders WHERE $1::text IS NULL OR status = $1 "
            "ORDER BY updated_at LIMIT $2",
            status.value if status else None,
            limit,
        )
        return [_view(row) for row in rows]

    @app.get("/orders/{order_id}", response_model=CrmOrder, tags=["orders"])
    async def read_order(order_id: str) -> CrmOrder:
        row = await runtime.pool.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
        if row is None:
            raise OrderNotFound(order_id)
        return _view(row)

    @app.post("/orders/{order_id}/approve", response_model=CrmOrder, tags=["decisions"])
    async def approve(order_id: str, action: SellerAction) -> CrmOrder:
        """Approve manufacturing of a priced order; MES puts it in the operators' queue."""
        return await decide(
            order_id,
            OrderStatus.MANUFACTURING_APPROVED,
            "approve manufacturing",
            {"seller": action.seller},
        )

    @app.post("/orders/{order_id}/reject", response_model=CrmOrder, tags=["decisions"])
    async def reject(order_id: str, action: Rejection) -> CrmOrder:
        return await decide(
            order_id,
            OrderStatus.REJECTED,
            "reject order",
            {"seller": action.seller, "rejection_reason": action.reason},
            reason=action.reason,
        )

    @app.post("/orders/{order_id}/ship", response_model=CrmOrder, tags=["decisions"])
    async def ship(order_id: str, shipment: Shipment) -> CrmOrder:
        """Ship a manufactured order."""
        return await decide(
            order_id,
            OrderStatus.SHIPPED,
            "ship order",
            {"seller": shipment.seller, "tracking_number": shipment.tracking_number},
        )

    @app.post("/orders/{order_id}/close", response_model=CrmOrder, tags=["decisions"])
    async def close(order_id: str, action: SellerAction) -> CrmOrder:
        return await decide(order_id, OrderStatus.CLOSED, "close order", {"seller": action.seller})

    return app
