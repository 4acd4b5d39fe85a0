"""mes-api: prices orders from their 3D model, takes B2B partners' orders, and runs the
operators' work queue.

Pricing holds its message unacknowledged until the price is recorded, so an MES crash mid-way
redelivers the order instead of losing it. Production pricing can take up to 30 minutes:
RabbitMQ's consumer_timeout (30 minutes by default) must exceed it (docs/runbook.md).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import Response
from opentelemetry import trace
from pydantic import BaseModel, Field

from loupe.config import Settings
from loupe.mes.pricing import ModelError, price_model
from loupe.messaging import Delivery, PoisonMessage
from loupe.messaging.inbox import claim_delivery
from loupe.messaging.propagation import span_context_to_text
from loupe.objectstore import ObjectNotFound, ObjectStore
from loupe.orders import OrderEvent, OrderSource, OrderStatus
from loupe.runtime import OrderNotFound, ServiceRuntime, read_model_upload
from loupe.telemetry.attributes import ORDER_ID, ORDER_PRICE

_tracer = trace.get_tracer("loupe.mes")


class MesOrder(BaseModel):
    id: str
    source: str
    status: str
    partner_id: str | None = None
    partner_reference: str | None = None
    price: float | None = None
    currency: str | None = None
    volume_mm3: float | None = None
    operator: str | None = None
    failure_reason: str | None = None
    updated_at: str


class OperatorAction(BaseModel):
    operator: str = Field(min_length=1, max_length=100, description="The operator's user name")


def _view(row: Any) -> MesOrder:
    data = dict(row)
    data["price"] = float(data["price"]) if data["price"] is not None else None
    data["updated_at"] = data["updated_at"].isoformat()
    return MesOrder(**{k: v for k, v in data.items() if k in MesOrder.model_fields})


def create_app(settings: Settings) -> FastAPI:
    runtime = ServiceRuntime("mes", settings, Path(__file__).parent / "migrations")
    store = ObjectStore(settings.object_store)
    http = httpx.AsyncClient(timeout=httpx.Timeout(10.0))
    runtime.on_stop(http.aclose)
    app = runtime.create_app(
        "mes-api",
        "The manufacturing system's API: pricing, B2B intake and the operators' work queue.",
    )

    async def fetch_model(event: OrderEvent) -> bytes:
        assert event.model_url is not None
        response = await http.get(event.model_url)
        # A failed download is transient (file storage down): raising makes it a retry.
        response.raise_for_status()
        data = response.content
        if event.model_sha256 and hashlib.sha256(data).hexdigest() != event.model_sha256:
            raise ModelError("the downloaded model does not match its SHA-256")
        return data

    async def price_order(event: OrderEvent, delivery: Delivery) -> None:
        if event.status is not OrderStatus.SUBMITTED:
            raise PoisonMessage(f"expected a SUBMITTED event, got {event.status}")
        if not event.model_url:
            raise PoisonMessage("field model_url is missing")
        async with runtime.pool.acquire() as connection:
            await connection.execute(
                "INSERT INTO orders (id, source, status, model_sha256, model_url, "
                "last_step_context) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                event.order_id,
                event.source.value,
                OrderStatus.SUBMITTED.value,
                event.model_sha256,
                event.model_url,
                span_context_to_text(delivery.span_context),
            )
            status = await connection.fetchval(
                "SELECT status FROM orders WHERE id = $1", event.order_id
            )
        if status != OrderStatus.SUBMITTED:
            trace.get_current_span().add_event("order already priced; nothing to do")
            return
        failure: str | None = None
        with _tracer.start_as_current_span("price order") as span:
            span.set_attribute(ORDER_ID, event.order_id)
            try:
                data = await fetch_model(event)
                # Stands in for the slicer and cost model, which take minutes in production.
                await asyncio.sleep(settings.pricing_seconds)
                quote = price_model(data)
            except ModelError as exc:
                failure = f"model cannot be priced: {exc}"
                span.set_status(trace.Status(trace.StatusCode.ERROR, failure))
                span.set_attribute("error.type", "ModelError")
        async with runtime.pool.acquire() as connection, connection.transaction():
            if not await claim_delivery(connection, delivery):
                return
            if failure is not None:
                await runtime.transition(
                    connection,
                    event.order_id,
                    OrderStatus.FAILED,
                    updates={"failure_reason": failure},
                    event_fields={"reason": failure},
                )
                return
            await runtime.transition(
                connection,
                event.order_id,
                OrderStatus.PRICE_CALCULATED,
                updates={
                    "price": quote.price,
                    "currency": quote.currency,
                    "volume_mm3": quote.volume_mm3,
                },
                event_fields={"price": quote.price, "currency": quote.currency},
            )
            trace.get_current_span().set_attribute(ORDER_PRICE, quote.price)

    async def follow_decision(event: OrderEvent, delivery: Delivery) -> None:
        await runtime.mirror(event, delivery, insert_missing=True)

    # Only MES's intake fails the order itself: an order it cannot take in can never be made.
    # A view that cannot follow an event (shop, CRM, MES decisions) keeps the message in the
    # dead-letter queue to replay, and the order goes on.
    runtime.consume("mes.order-submitted", price_order, runtime.fail_order)
    runtime.consume("mes.order-decisions", follow_decision)

    async def operate(order_id: str, to: OrderStatus, operation: str, operator: str) -> MesOrder:
        async with runtime.pool.acquire() as connection, connection.transaction():
            result = await runtime.transition(
                connection, order_id, to, resumed_by=operation, updates={"operator": operator}
            )
        return _view(result.row)

    @app.post("/b2b/orders", status_code=201, response_model=MesOrder, tags=["b2b"])
    async def submit_b2b_order(
        partner_id: Annotated[str, Form(min_length=1, max_length=100)],
        partner_reference: Annotated[str, Form(min_length=1, max_length=100)],
        model: Annotated[UploadFile, File(description="The piece's 3D model (STL)")],
    ) -> MesOrder:
        """A business partner submits an order straight into MES; it is priced like any other."""
        sha256 = store.put(await read_model_upload(model))
        model_url = f"{settings.service_urls['mes']}/models/{sha256}"
        async with runtime.pool.acquire() as connection, connection.transaction():
            event = await runtime.submit(
                connection,
                OrderSource.B2B,
                {
                    "partner_id": partner_id,
                    "partner_reference": partner_reference,
                    "model_sha256": sha256,
                    "model_url": model_url,
                },
                {"model_sha256": sha256, "model_url": model_url},
            )
        return await read_order(event.order_id)

    @app.get("/orders/{order_id}", response_model=MesOrder, tags=["orders"])
    async def read_order(order_id: str) -> MesOrder:
        row = await runtime.pool.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
        if row is None:
            raise OrderNotFound(order_id)
        return _view(row)

    @app.get("/models/{sha256}", tags=["models"], response_class=Response)
    async def read_model(sha256: str) -> Response:
        """A B2B partner's stored 3D model by its SHA-256."""
        try:
            return Response(store.get(sha256), media_type="model/stl")
        except ObjectNotFound as exc:
            raise HTTPException(404, str(exc)) from None

    @app.get("/operator/queue", response_model=list[MesOrder], tags=["operators"])
    async def work_queue() -> list[MesOrder]:
        """Approved orders waiting for an operator, and those in progress, oldest first."""
        rows = await runtime.pool.fetch(
            "SELECT * FROM orders WHERE status = ANY($1::text[]) ORDER BY updated_at LIMIT 200",
            [OrderStatus.MANUFACTURING_APPROVED.value, OrderStatus.MANUFACTURING_STARTED.value],
        )
        return [_view(row) for row in rows]

    @app.post("/operator/orders/{order_id}/take", response_model=MesOrder, tags=["operators"])
    async def take(order_id: str, action: OperatorAction) -> MesOrder:
        """An operator starts making an approved order."""
        return await operate(
            order_id, OrderStatus.MANUFACTURING_STARTED, "take order", action.operator
        )

    @app.post("/operator/orders/{order_id}/complete", response_model=MesOrder, tags=["operators"])
    async def complete(order_id: str, action: OperatorAction) -> MesOrder:
        return await operate(
            order_id, OrderStatus.MANUFACTURING_COMPLETED, "complete order", action.operator
        )

    return app
