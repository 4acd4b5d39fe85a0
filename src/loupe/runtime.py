"""What every loupe service process shares: telemetry, its database, its RabbitMQ connection,
status transitions that publish their event, the HTTP app with /healthz, and the run loop."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import asyncpg
from aio_pika.abc import AbstractRobustConnection
from fastapi import FastAPI, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse
from opentelemetry import trace
from opentelemetry.trace import Link

from loupe.config import SERVICE_NAMES, Settings
from loupe.database import open_database
from loupe.messaging import QUEUES, Consumer, Publisher, declare_topology
from loupe.messaging.consumer import DeadLetterHook, Delivery, Handler
from loupe.messaging.inbox import claim_delivery
from loupe.messaging.propagation import span_context_from_text, span_context_to_text
from loupe.messaging.topology import Exchanges
from loupe.orders import IllegalTransition, OrderEvent, OrderSource, OrderStatus, check_transition
from loupe.orders.lifecycle import is_behind
from loupe.telemetry import OrderAttributes, set_order_attributes
from loupe.telemetry.attributes import LINK_REASON, ORDER_FAILURE_REASON, PREVIOUS_STEP

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("loupe.orders")


MAX_MODEL_BYTES = 50 * 1024 * 1024


def field_error(field: str, message: str) -> HTTPException:
    """A 422 that names the offending field, like FastAPI's own validation errors do."""
    return HTTPException(422, {"field": field, "message": message})


async def read_model_upload(model: UploadFile) -> bytes:
    """The bytes of an uploaded 3D model, refused when empty or too large to be jewellery."""
    data = await model.read(MAX_MODEL_BYTES + 1)
    if not data:
        raise field_error("model", "is empty")
    if len(data) > MAX_MODEL_BYTES:
        raise field_error("model", f"is larger than {MAX_MODEL_BYTES} bytes")
    return data


class OrderNotFound(Exception):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id} does not exist")
        self.order_id = order_id


@dataclass(frozen=True)
class TransitionResult:
    event: OrderEvent
    row: Mapping[str, Any]


class ServiceRuntime:
    """One service's connections and the transition rule it applies to its own orders table.

    Each service's `orders` table has at least: id, source, status, updated_at and
    last_step_context (the span of the last step, for linking work resumed later).
    """

    def __init__(self, service: str, settings: Settings, migrations: Path) -> None:
        self.service = service
        self.service_name = SERVICE_NAMES[service]
        self.settings = settings
        self._migrations = migrations
        self._consumers: list[tuple[str, Handler, DeadLetterHook | None]] = []
        self._on_stop: list[Callable[[], Awaitable[Any]]] = []
        self._pool: asyncpg.Pool | None = None
        self._connection: AbstractRobustConnection | None = None
        self._exchanges: Exchanges | None = None
        amqp = urlsplit(settings.amqp_url)
        self._amqp_server = (amqp.hostname or "127.0.0.1", amqp.port or 5672)
        self.publisher = Publisher(self.service_name, self._amqp_server)

    # -- wiring ---------------------------------------------------------------------------
    def consume(
        self, queue: str, handler: Handler, on_dead_letter: DeadLetterHook | None = None
    ) -> None:
        if QUEUES[queue].service != self.service:
            raise ValueError(
                f"queue {queue} belongs to {QUEUES[queue].service}, not {self.service}"
            )
        self._consumers.append((queue, handler, on_dead_letter))

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the service has not started")
        return self._pool

    @property
    def exchanges(self) -> Exchanges:
        if self._exchanges is None:
            raise RuntimeError("the service has not started")
        return self._exchanges

    async def start(self) -> None:
        self._pool = await open_database(
            self.settings.postgres_dsn, self.settings.database_name(self.service), self._migrations
        )
        self._connection = await aio_pika.connect_robust(
            self.settings.amqp_url, client_properties={"connection_name": self.service_name}
        )
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._exchanges = await declare_topology(channel)
        consume_channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        await consume_channel.set_qos(prefetch_count=self.settings.prefetch)
        for queue, handler, on_dead_letter in self._consumers:
            consumer = Consumer(
                QUEUES[queue],
                handler,
                exchanges=self._exchanges,
                publisher=self.publisher,
                service=self.service_name,
                max_attempts=self.settings.max_delivery_attempts,
                retry_delay_ms=self.settings.retry_delay_ms,
                on_dead_letter=on_dead_letter,
                server=self._amqp_server,
            )
            await consumer.start(consume_channel)
        log.info("%s ready", self.service_name)

    def on_stop(self, callback: Callable[[], Awaitable[Any]]) -> None:
        self._on_stop.append(callback)

    async def stop(self) -> None:
        for callback in self._on_stop:
            await callback()
        if self._connection is not None:
            await self._connection.close()
        if self._pool is not None:
            await self._pool.close()

    async def health(self) -> dict[str, str]:
        problems = {}
        try:
            async with self.pool.acquire(timeout=2) as connection:
                await connection.fetchval("SELECT 1")
        except Exception as exc:
            problems["database"] = f"{type(exc).__name__}: {exc}"
        if self._connection is None or self._connection.is_closed:
            problems["broker"] = "not connected to RabbitMQ"
        return problems

    # -- the order rule ---------------------------------------------------------------------
    async def publish(self, event: OrderEvent) -> None:
        await self.publisher.publish_event(self.exchanges.orders, event)

    async def transition(
        self,
        connection: asyncpg.Connection,
        order_id: str,
        to: OrderStatus,
        *,
        resumed_by: str | None = None,
        updates: Mapping[str, Any] | None = None,
        event_fields: Mapping[str, Any] | None = None,
    ) -> TransitionResult:
        """Move one order, record the step, publish its event; all inside the caller's transaction.

        `resumed_by` names work a person picks up later (a seller approving, an operator
        taking the order): it gets a span of its own, linked to the order's previous step,
        so the order's journey can be followed across traces.
        """
        row = await connection.fetchrow("SELECT * FROM orders WHERE id = $1 FOR UPDATE", order_id)
        if row is None:
            raise OrderNotFound(order_id)
        current = OrderStatus(row["status"])
        source = OrderSource(row["source"])
        if resumed_by is None:
            return await self._apply(connection, row, current, source, to, updates, event_fields)
        previous = span_context_from_text(row["last_step_context"])
        links = [Link(previous, {LINK_REASON: PREVIOUS_STEP})] if previous else []
        with _tracer.start_as_current_span(resumed_by, links=links) as span:
            try:
                return await self._apply(
                    connection, row, current, source, to, updates, event_fields
                )
            except Exception as exc:
                span.set_attribute("error.type", type(exc).__name__)
                raise

    async def submit(
        self,
        connection: asyncpg.Connection,
        source: OrderSource,
        columns: Mapping[str, Any],
        event_fields: Mapping[str, Any],
    ) -> OrderEvent:
        """Create an order as SUBMITTED and publish `order.submitted`, in the caller's
        transaction."""
        order_id = str(uuid.uuid4())
        set_order_attributes(OrderAttributes(order_id, source, None, OrderStatus.SUBMITTED))
        values = {
            **columns,
            "id": order_id,
            "source": source.value,
            "status": OrderStatus.SUBMITTED.value,
            "last_step_context": span_context_to_text(trace.get_current_span().get_span_context()),
        }
        marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
        await connection.execute(
            f"INSERT INTO orders ({', '.join(values)}) VALUES ({marks})", *values.values()
        )
        event = OrderEvent.now(
            order_id=order_id,
            status=OrderStatus.SUBMITTED,
            previous_status=None,
            source=source,
            **dict(event_fields),
        )
        await self.publish(event)
        log.info("order %s submitted (%s)", order_id, source, extra={"order_id": order_id})
        return event

    async def _apply(
        self,
        connection: asyncpg.Connection,
        row: Mapping[str, Any],
        current: OrderStatus,
        source: OrderSource,
        to: OrderStatus,
        updates: Mapping[str, Any] | None,
        event_fields: Mapping[str, Any] | None,
    ) -> TransitionResult:
        order_id = row["id"]
        set_order_attributes(OrderAttributes(order_id, source))
        # Only a transition that is allowed marks the span as one: a refused request (409)
        # must not look like a move in Jaeger.
        check_transition(order_id, current, to)
        set_order_attributes(OrderAttributes(order_id, source, current, to))
        reason = (event_fields or {}).get("reason")
        if reason:
            trace.get_current_span().set_attribute(ORDER_FAILURE_REASON, str(reason))
        columns = dict(updates or {})
        columns["status"] = to.value
        columns["last_step_context"] = span_context_to_text(
            trace.get_current_span().get_span_context()
        )
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(columns, start=2))
        updated = await connection.fetchrow(
            f"UPDATE orders SET {assignments}, updated_at = now() WHERE id = $1 RETURNING *",
            order_id,
            *columns.values(),
        )
        event = OrderEvent.now(
            order_id=order_id,
            status=to,
            previous_status=current,
            source=source,
            **dict(event_fields or {}),
        )
        await self.publish(event)
        log.info("order %s: %s -> %s", order_id, current, to, extra={"order_id": order_id})
        return TransitionResult(event, updated)

    async def mirror(
        self,
        event: OrderEvent,
        delivery: Delivery,
        *,
        insert_missing: bool,
        updates: Mapping[str, Any] | None = None,
    ) -> bool:
        """Follow a status another service decided; True when this service's view moved.

        Views only move forward: a redelivered, retried or overtaken event is ignored, so
        events arriving twice or out of order never move an order backwards.
        """
        columns = {"status": event.status.value, **(updates or {})}
        if event.price is not None:
            columns.update(price=event.price, currency=event.currency)
        if event.reason is not None:
            columns["failure_reason"] = event.reason
        columns["last_step_context"] = span_context_to_text(delivery.span_context)
        span = trace.get_current_span()
        async with self.pool.acquire() as connection, connection.transaction():
            if not await claim_delivery(connection, delivery):
                return False
            row = await connection.fetchrow(
                "SELECT status FROM orders WHERE id = $1 FOR UPDATE", event.order_id
            )
            if row is None:
                if not insert_missing:
                    span.add_event("order unknown here; event ignored")
                    return False
                columns.update(id=event.order_id, source=event.source.value)
                names = ", ".join(columns)
                marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
                await connection.execute(
                    f"INSERT INTO orders ({names}) VALUES ({marks})", *columns.values()
                )
                current = event.previous_status
            else:
                current = OrderStatus(row["status"])
                if is_behind(current, event.status):
                    span.add_event("stale status event ignored", {"order.status": current.value})
                    return False
                assignments = ", ".join(f"{n} = ${i}" for i, n in enumerate(columns, start=2))
                await connection.execute(
                    f"UPDATE orders SET {assignments}, updated_at = now() WHERE id = $1",
                    event.order_id,
                    *columns.values(),
                )
            set_order_attributes(
                OrderAttributes(event.order_id, event.source, current, event.status)
            )
        return True

    async def fail_order(self, order_id: str, reason: str, event: OrderEvent | None) -> None:
        """Dead-letter hook: the order this service could not process becomes FAILED, and says so.

        A failure of a FAILED event is not announced again, so failures cannot echo.
        """
        if event is not None and event.status is OrderStatus.FAILED:
            return
        async with self.pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow("SELECT status FROM orders WHERE id = $1", order_id)
            if row is None:
                source = event.source if event is not None else OrderSource.SHOP
                await connection.execute(
                    "INSERT INTO orders (id, source, status) VALUES ($1, $2, $3)",
                    order_id,
                    source.value,
                    OrderStatus.SUBMITTED.value,
                )
            elif OrderStatus(row["status"]).terminal:
                return
            await self.transition(
                connection,
                order_id,
                OrderStatus.FAILED,
                updates={"failure_reason": reason[:1000]},
                event_fields={"reason": reason[:1000]},
            )

    # -- HTTP -------------------------------------------------------------------------------
    def create_app(self, title: str, description: str) -> FastAPI:
        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        app = FastAPI(title=title, description=description, version="0.1.0", lifespan=lifespan)

        @app.get("/healthz", tags=["operations"], summary="Ready: database and broker connected")
        async def healthz() -> JSONResponse:
            problems = await self.health()
            if problems:
                return JSONResponse({"status": "unavailable", "problems": problems}, 503)
            return JSONResponse({"status": "ok", "service": self.service_name})

        @app.exception_handler(IllegalTransition)
        async def illegal(_: Request, exc: IllegalTransition) -> JSONResponse:
            return JSONResponse(
                {"detail": str(exc), "status": exc.current.value, "requested": exc.wanted.value},
                409,
            )

        @app.exception_handler(OrderNotFound)
        async def missing(_: Request, exc: OrderNotFound) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, 404)

        return app


def serve(app: FastAPI, host: str, port: int, excluded_urls: str = "healthz") -> None:
    """Serve an instrumented app with uvicorn until SIGINT/SIGTERM, then flush telemetry.

    `excluded_urls` (comma-separated regular expressions) are served untraced.
    """
    import uvicorn
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    from loupe.telemetry import shutdown_telemetry

    # The ASGI receive/send sub-spans add nothing an operator reads; health probes are noise.
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=excluded_urls, exclude_spans=["receive", "send"]
    )
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="on"
    )
    try:
        asyncio.run(uvicorn.Server(config).serve())
    finally:
        shutdown_telemetry()


def run_service(service: str, port: int | None = None) -> None:
    """Run one order service until SIGINT/SIGTERM."""
    import importlib

    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    from loupe.telemetry import configure_telemetry

    settings = Settings.from_env()
    configure_telemetry(SERVICE_NAMES[service])
    AsyncPGInstrumentor().instrument()
    HTTPXClientInstrumentor().instrument()
    module = importlib.import_module(f"loupe.{service}.app")
    serve(module.create_app(settings), settings.host, port or settings.port(service))
