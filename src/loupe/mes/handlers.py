"""mes-api's queues: every submitted order is priced from its 3D model (the intake), and the
decisions sellers take are followed.

Pricing holds its message unacknowledged until the price is recorded, so an MES crash mid-way
redelivers the order instead of losing it. Production pricing can take up to 30 minutes:
RabbitMQ's consumer_timeout (30 minutes by default) must exceed it (docs/runbook.md).

An event's `model_url` is whatever its publisher wrote, so MES fetches a model only from the
object store as the services serve it (`<LOUPE_SHOP_URL or LOUPE_MES_URL>/models/<sha256>`),
reads at most LOUPE_MAX_MODEL_BYTES of it, and prices it off the event loop within limits
(pricing.py); a model refused by any of these makes the order FAILED with the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import httpx
from opentelemetry import trace

from loupe.mes.pricing import ModelError, PricingLimits, price_isolated
from loupe.messaging import Delivery, PoisonMessage
from loupe.messaging.inbox import claim_delivery
from loupe.messaging.propagation import span_context_to_text
from loupe.orders import OrderEvent, OrderStatus
from loupe.service.kernel import ServiceKernel
from loupe.service.orders_table import OrderTable
from loupe.telemetry.attributes import ORDER_ID, ORDER_PRICE

_tracer = trace.get_tracer("loupe.mes")

SUBMITTED_QUEUE = "mes.order-submitted"
DECISIONS_QUEUE = "mes.order-decisions"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def model_sources(service_urls: dict[str, str]) -> tuple[str, ...]:
    """Where models may be fetched from: the object store as shop-api and mes-api serve it."""
    return tuple(f"{service_urls[service]}/models/" for service in ("shop", "mes"))


@dataclass
class Intake:
    """Prices each submitted order: downloads its model, prices it, records the price."""

    orders: OrderTable
    http: httpx.AsyncClient
    # Stands in for the slicer and cost model, which take minutes in production.
    pricing_seconds: float
    limits: PricingLimits
    max_model_bytes: int
    # Base URLs ending in `/models/` (model_sources).
    sources: Sequence[str]

    def model_location(self, event: OrderEvent) -> str:
        """The event's `model_url` when it is exactly a source plus the event's `model_sha256`;
        ModelError otherwise (another host, another scheme such as file://, a path with `..`,
        a query, credentials). Compared as text, so no URL parser's reading can differ."""
        sha256 = event.model_sha256 or ""
        if not _SHA256.fullmatch(sha256):
            raise ModelError("model_sha256 is missing or not a SHA-256 hex digest")
        if event.model_url not in {f"{source}{sha256}" for source in self.sources}:
            # The URL itself stays out of the reason: it may carry anything, credentials too.
            raise ModelError("model_url is not the object store's URL of model_sha256")
        return event.model_url

    async def fetch_model(self, event: OrderEvent) -> bytes:
        url = self.model_location(event)
        async with self.http.stream("GET", url, follow_redirects=False) as response:
            # A failed download is transient (file storage down): raising makes it a retry.
            response.raise_for_status()
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_model_bytes:
                raise ModelError(f"the model is larger than {self.max_model_bytes} bytes")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                # Refused while reading: a store that sends more never fills MES's memory.
                if size > self.max_model_bytes:
                    raise ModelError(f"the model is larger than {self.max_model_bytes} bytes")
                chunks.append(chunk)
        data = b"".join(chunks)
        if hashlib.sha256(data).hexdigest() != event.model_sha256:
            raise ModelError("the downloaded model does not match its SHA-256")
        return data

    async def price_order(self, event: OrderEvent, delivery: Delivery) -> None:
        if event.status is not OrderStatus.SUBMITTED:
            raise PoisonMessage(f"expected a SUBMITTED event, got {event.status}")
        if not event.model_url:
            raise PoisonMessage("field model_url is missing")
        async with self.orders.pool.acquire() as connection:
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
                data = await self.fetch_model(event)
                await asyncio.sleep(self.pricing_seconds)
                quote = await price_isolated(data, self.limits)
            except ModelError as exc:
                failure = f"model cannot be priced: {exc}"
                span.set_status(trace.Status(trace.StatusCode.ERROR, failure))
                span.set_attribute("error.type", "ModelError")
        async with self.orders.pool.acquire() as connection, connection.transaction():
            if not await claim_delivery(connection, delivery):
                return
            if failure is not None:
                await self.orders.transition(
                    connection,
                    event.order_id,
                    OrderStatus.FAILED,
                    updates={"failure_reason": failure},
                    event_fields={"reason": failure},
                )
                return
            await self.orders.transition(
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


def subscribe(kernel: ServiceKernel, orders: OrderTable, intake: Intake) -> None:
    # Only MES's intake fails the order itself: an order it cannot take in can never be made.
    # A view that cannot follow an event (shop, CRM, MES decisions) keeps the message in the
    # dead-letter queue to replay, and the order goes on.
    kernel.consume(SUBMITTED_QUEUE, intake.price_order, orders.fail_order)
    kernel.consume(DECISIONS_QUEUE, partial(orders.mirror, insert_missing=True))
