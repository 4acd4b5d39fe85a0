"""mes-api's routes: B2B partners' orders straight into MES, and the operators' work queue.
An operator's action is a person's step, with a span of its own linked to the order's last."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form

from loupe.mes.contract import MesOrder, OperatorAction
from loupe.orders import OrderSource, OrderStatus
from loupe.service.http import Orders, ServiceSettings, Store, order_view
from loupe.service.model_files import (
    UPLOAD_REFUSALS,
    ModelUpload,
    model_reader,
    read_model_upload,
)
from loupe.service.orders_table import OrderTable

router = APIRouter()
models = model_reader("A B2B partner's stored 3D model by its SHA-256.")


async def _operate(
    orders: OrderTable, order_id: str, to: OrderStatus, operation: str, action: OperatorAction
) -> MesOrder:
    row = await orders.resume(order_id, to, operation, updates={"operator": action.operator})
    return order_view(MesOrder, row)


@router.post(
    "/b2b/orders",
    status_code=201,
    response_model=MesOrder,
    tags=["b2b"],
    responses=UPLOAD_REFUSALS,
)
async def submit_b2b_order(
    partner_id: Annotated[str, Form(min_length=1, max_length=100)],
    partner_reference: Annotated[str, Form(min_length=1, max_length=100)],
    model: ModelUpload,
    orders: Orders,
    store: Store,
    settings: ServiceSettings,
) -> MesOrder:
    """A business partner submits an order straight into MES; it is priced like any other."""
    sha256 = store.put(await read_model_upload(model, settings.max_model_bytes))
    model_url = f"{settings.service_urls['mes']}/models/{sha256}"
    event = await orders.submit(
        OrderSource.B2B,
        {
            "partner_id": partner_id,
            "partner_reference": partner_reference,
            "model_sha256": sha256,
            "model_url": model_url,
        },
        {"model_sha256": sha256, "model_url": model_url},
    )
    return order_view(MesOrder, await orders.row(event.order_id))


@router.get("/orders/{order_id}", response_model=MesOrder, tags=["orders"])
async def read_order(order_id: str, orders: Orders) -> MesOrder:
    return order_view(MesOrder, await orders.row(order_id))


@router.get("/operator/queue", response_model=list[MesOrder], tags=["operators"])
async def work_queue(orders: Orders) -> list[MesOrder]:
    """Approved orders waiting for an operator, and those in progress, oldest first."""
    rows = await orders.pool.fetch(
        "SELECT * FROM orders WHERE status = ANY($1::text[]) ORDER BY updated_at LIMIT 200",
        [OrderStatus.MANUFACTURING_APPROVED.value, OrderStatus.MANUFACTURING_STARTED.value],
    )
    return [order_view(MesOrder, row) for row in rows]


@router.post("/operator/orders/{order_id}/take", response_model=MesOrder, tags=["operators"])
async def take(order_id: str, action: OperatorAction, orders: Orders) -> MesOrder:
    """An operator starts making an approved order."""
    return await _operate(orders, order_id, OrderStatus.MANUFACTURING_STARTED, "take order", action)


@router.post("/operator/orders/{order_id}/complete", response_model=MesOrder, tags=["operators"])
async def complete(order_id: str, action: OperatorAction, orders: Orders) -> MesOrder:
    to = OrderStatus.MANUFACTURING_COMPLETED
    return await _operate(orders, order_id, to, "complete order", action)
