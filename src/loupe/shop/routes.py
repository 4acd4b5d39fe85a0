"""shop-api's order routes: a customer places an order with its 3D model, then follows it."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Form

from loupe.orders import OrderSource
from loupe.service.http import Orders, ServiceSettings, Store, field_error, order_view
from loupe.service.model_files import (
    UPLOAD_REFUSALS,
    ModelUpload,
    model_reader,
    read_model_upload,
)
from loupe.shop.contract import OrderView

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[\d\s().x-]{7,30}$")

router = APIRouter(prefix="/orders", tags=["orders"])
models = model_reader(
    "A stored 3D model by its SHA-256 (MES reads models here to price them).",
    responses={200: {"content": {"model/stl": {}}}},
)


@router.post("", status_code=201, response_model=OrderView, responses=UPLOAD_REFUSALS)
async def place_order(
    customer_name: Annotated[str, Form(min_length=1, max_length=200)],
    customer_email: Annotated[str, Form(max_length=320)],
    customer_phone: Annotated[str, Form(max_length=40)],
    shipping_address: Annotated[str, Form(min_length=1, max_length=500)],
    model: ModelUpload,
    orders: Orders,
    store: Store,
    settings: ServiceSettings,
) -> OrderView:
    """Place an order; its 3D model is stored and the order goes to MES for pricing."""
    if not _EMAIL.match(customer_email):
        raise field_error("customer_email", "is not an e-mail address")
    if not _PHONE.match(customer_phone):
        raise field_error("customer_phone", "is not a phone number")
    data = await read_model_upload(model, settings.max_model_bytes)
    sha256 = store.put(data)
    event = await orders.submit(
        OrderSource.SHOP,
        {
            "customer_name": customer_name,
            "customer_email": customer_email,
            "customer_phone": customer_phone,
            "shipping_address": shipping_address,
            "model_sha256": sha256,
            "model_filename": (model.filename or "model.stl")[:200],
            "model_size": len(data),
        },
        {
            "model_sha256": sha256,
            "model_url": f"{settings.service_urls['shop']}/models/{sha256}",
        },
    )
    return order_view(OrderView, await orders.row(event.order_id))


@router.get("/{order_id}", response_model=OrderView)
async def read_order(order_id: str, orders: Orders) -> OrderView:
    """The order's status as the customer sees it."""
    return order_view(OrderView, await orders.row(order_id))
