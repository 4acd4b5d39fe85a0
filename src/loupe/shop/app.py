"""shop-api: customers place orders with a 3D model and follow their status.

The company's diagram has CRM API writing the Shop DB directly. loupe keeps the databases
apart instead: the shop follows status events on its own queue, so no service reaches into
another's schema and every change that reaches the shop is a traced message (see
docs/architecture.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel

from loupe.config import Settings
from loupe.messaging.consumer import Delivery
from loupe.objectstore import ObjectNotFound, ObjectStore
from loupe.orders import OrderEvent, OrderSource
from loupe.runtime import OrderNotFound, ServiceRuntime, field_error, read_model_upload

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[\d\s().x-]{7,30}$")


class OrderView(BaseModel):
    id: str
    status: str
    price: float | None = None
    currency: str | None = None
    failure_reason: str | None = None
    created_at: str
    updated_at: str


def create_app(settings: Settings) -> FastAPI:
    runtime = ServiceRuntime("shop", settings, Path(__file__).parent / "migrations")
    store = ObjectStore(settings.object_store)
    app = runtime.create_app(
        "shop-api", "The online shop's API: customers place orders with a 3D model."
    )

    async def follow_status(event: OrderEvent, delivery: Delivery) -> None:
        await runtime.mirror(event, delivery, insert_missing=False)

    runtime.consume("shop.order-status", follow_status)

    @app.post("/orders", status_code=201, response_model=OrderView, tags=["orders"])
    async def place_order(
        customer_name: Annotated[str, Form(min_length=1, max_length=200)],
        customer_email: Annotated[str, Form(max_length=320)],
        customer_phone: Annotated[str, Form(max_length=40)],
        shipping_address: Annotated[str, Form(min_length=1, max_length=500)],
        model: Annotated[UploadFile, File(description="The piece's 3D model (STL)")],
    ) -> OrderView:
        """Place an order; its 3D model is stored and the order goes to MES for pricing."""
        if not _EMAIL.match(customer_email):
            raise field_error("customer_email", "is not an e-mail address")
        if not _PHONE.match(customer_phone):
            raise field_error("customer_phone", "is not a phone number")
        data = await read_model_upload(model)
        sha256 = store.put(data)
        async with runtime.pool.acquire() as connection, connection.transaction():
            event = await runtime.submit(
                connection,
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
        return await read_order(event.order_id)

    @app.get("/orders/{order_id}", response_model=OrderView, tags=["orders"])
    async def read_order(order_id: str) -> OrderView:
        """The order's status as the customer sees it."""
        row = await runtime.pool.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
        if row is None:
            raise OrderNotFound(order_id)
        return OrderView(
            id=row["id"],
            status=row["status"],
            price=float(row["price"]) if row["price"] is not None else None,
            currency=row["currency"],
            failure_reason=row["failure_reason"],
            created_at=row["created_at"].isoformat(),
            updated_at=row["updated_at"].isoformat(),
        )

    @app.get(
        "/models/{sha256}",
        tags=["models"],
        response_class=Response,
        responses={200: {"content": {"model/stl": {}}}},
    )
    async def read_model(sha256: str) -> Response:
        """A stored 3D model by its SHA-256 (MES reads models here to price them)."""
        try:
            return Response(store.get(sha256), media_type="model/stl")
        except ObjectNotFound as exc:
            raise HTTPException(404, str(exc)) from None

    return app
