"""The rules of a service's `orders` table: orders are created SUBMITTED, moved only as the
lifecycle allows with every step recorded and its event queued in the outbox (same
transaction), followed forward only when another service decides, and failed once.

Each service's `orders` table has at least: id, source, status, updated_at, failure_reason and
last_step_context (the span of the last step, for linking work resumed later).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import Link

from loupe.messaging.consumer import Delivery
from loupe.messaging.inbox import claim_delivery
from loupe.messaging.propagation import span_context_from_text, span_context_to_text
from loupe.orders import OrderEvent, OrderSource, OrderStatus, check_transition
from loupe.orders.lifecycle import is_behind
from loupe.service import outbox
from loupe.telemetry import OrderAttributes, set_order_attributes
from loupe.telemetry.attributes import (
    LINK_REASON,
    ORDER_FAILURE_REASON,
    ORDER_ID,
    ORDER_SOURCE,
    ORDER_STATUS_TO,
    PREVIOUS_STEP,
    STATUS_RESTATED,
)

log = logging.getLogger(__name__)
# The steps' spans have carried this scope since the rules lived in one module; Jaeger
# searches by it.
_tracer = trace.get_tracer("loupe.orders")

# Covers what a process killed outright may not have exported: its last
# OTEL_BSP_SCHEDULE_DELAY (5 s) of moves, a restart's backoff, and some held through a
# collector's outage (telemetry/delivery.py); longer outages than that are the monitor's
# telemetry gap to report.
RESTATE_WINDOW = timedelta(minutes=2)


class OrderNotFound(Exception):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id} does not exist")
        self.order_id = order_id


@dataclass(frozen=True)
class TransitionResult:
    event: OrderEvent
    row: Mapping[str, Any]


class Connections(Protocol):
    """Where the table lives: the service kernel, or a test's. Its events go to the outbox in
    the same database, from where the kernel's relay publishes them."""

    @property
    def pool(self) -> asyncpg.Pool: ...


def order_sql(columns: Iterable[str], *, update: bool = False, returning: bool = False) -> str:
    """The one statement that writes an order row: INSERT of `columns` ($1…), or UPDATE of them
    and updated_at where id = $1 (values from $2).

    Column names come from code, never from a request, so they are spliced in; values are
    always parameters. The text is what spans show as db.query.text.
    """
    names = list(columns)
    if not update:
        marks = ", ".join(f"${i}" for i in range(1, len(names) + 1))
        return f"INSERT INTO orders ({', '.join(names)}) VALUES ({marks})"
    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=2))
    tail = " RETURNING *" if returning else ""
    return f"UPDATE orders SET {assignments}, updated_at = now() WHERE id = $1{tail}"


def _current_step() -> str:
    return span_context_to_text(trace.get_current_span().get_span_context())


class OrderTable:
    def __init__(self, connections: Connections) -> None:
        self._connections = connections

    @property
    def pool(self) -> asyncpg.Pool:
        return self._connections.pool

    async def restate_recent(self, window: timedelta = RESTATE_WINDOW) -> int:
        """A span for each order changed in the last `window`, saying the status it is at.

        A process killed outright (`kill -9`, the OOM killer) loses the spans it had not
        exported yet; the monitor, which learns only from spans, would then report those
        orders stuck at a status they have left. Said at every start: after a clean stop these
        spans repeat what was sent, and began after the moves they repeat, so the monitor
        takes them as copies and changes nothing."""
        rows = await self.pool.fetch(
            "SELECT id, source, status FROM orders WHERE updated_at > now() - $1::interval"
            " ORDER BY updated_at",
            window,
        )
        for row in rows:
            attributes = {
                ORDER_ID: row["id"],
                ORDER_SOURCE: row["source"],
                ORDER_STATUS_TO: row["status"],
            }
            _tracer.start_span(STATUS_RESTATED, attributes=attributes).end()
        return len(rows)

    async def row(self, order_id: str) -> asyncpg.Record:
        row = await self.pool.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
        if row is None:
            raise OrderNotFound(order_id)
        return row

    async def submit(
        self, source: OrderSource, columns: Mapping[str, Any], event_fields: Mapping[str, Any]
    ) -> OrderEvent:
        """Create an order as SUBMITTED and queue `order.submitted`, in one transaction."""
        order_id = str(uuid.uuid4())
        set_order_attributes(OrderAttributes(order_id, source, None, OrderStatus.SUBMITTED))
        values = {
            **columns,
            "id": order_id,
            "source": source.value,
            "status": OrderStatus.SUBMITTED.value,
            "last_step_context": _current_step(),
        }
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(order_sql(values), *values.values())
            event = OrderEvent.now(
                order_id=order_id,
                status=OrderStatus.SUBMITTED,
                previous_status=None,
                source=source,
                **dict(event_fields),
            )
            await outbox.add(connection, event)
            log.info("order %s submitted (%s)", order_id, source, extra={"order_id": order_id})
        return event

    async def resume(
        self,
        order_id: str,
        to: OrderStatus,
        operation: str,
        *,
        updates: Mapping[str, Any],
        event_fields: Mapping[str, Any] | None = None,
    ) -> Mapping[str, Any]:
        """A person's step (a seller's decision, an operator's work), in a transaction of its
        own; returns the order's row as it is now."""
        async with self.pool.acquire() as connection, connection.transaction():
            result = await self.transition(
                connection,
                order_id,
                to,
                resumed_by=operation,
                updates=updates,
                event_fields=event_fields,
            )
        return result.row

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
        """Move one order, record the step, queue its event; all inside the caller's transaction.

        `resumed_by` names work a person picks up later (a seller approving, an operator
        taking the order): it gets a span of its own, linked to the order's previous step,
        so the order's journey can be followed across traces.
        """
        row = await connection.fetchrow("SELECT * FROM orders WHERE id = $1 FOR UPDATE", order_id)
        if row is None:
            raise OrderNotFound(order_id)
        if resumed_by is None:
            return await self._apply(connection, row, to, updates, event_fields)
        previous = span_context_from_text(row["last_step_context"])
        links = [Link(previous, {LINK_REASON: PREVIOUS_STEP})] if previous else []
        with _tracer.start_as_current_span(resumed_by, links=links) as span:
            try:
                return await self._apply(connection, row, to, updates, event_fields)
            except Exception as exc:
                span.set_attribute("error.type", type(exc).__name__)
                raise

    async def _apply(
        self,
        connection: asyncpg.Connection,
        row: Mapping[str, Any],
        to: OrderStatus,
        updates: Mapping[str, Any] | None,
        event_fields: Mapping[str, Any] | None,
    ) -> TransitionResult:
        order_id = row["id"]
        current = OrderStatus(row["status"])
        source = OrderSource(row["source"])
        set_order_attributes(OrderAttributes(order_id, source))
        # Only a transition that is allowed marks the span as one: a refused request (409)
        # must not look like a move in Jaeger.
        check_transition(order_id, current, to)
        set_order_attributes(OrderAttributes(order_id, source, current, to))
        reason = (event_fields or {}).get("reason")
        if reason:
            trace.get_current_span().set_attribute(ORDER_FAILURE_REASON, str(reason))
        columns = {**(updates or {}), "status": to.value, "last_step_context": _current_step()}
        updated = await connection.fetchrow(
            order_sql(columns, update=True, returning=True), order_id, *columns.values()
        )
        event = OrderEvent.now(
            order_id=order_id,
            status=to,
            previous_status=current,
            source=source,
            **dict(event_fields or {}),
        )
        await outbox.add(connection, event)
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
                await connection.execute(order_sql(columns), *columns.values())
                current = event.previous_status
            else:
                current = OrderStatus(row["status"])
                if is_behind(current, event.status):
                    span.add_event("stale status event ignored", {"order.status": current.value})
                    return False
                await connection.execute(
                    order_sql(columns, update=True), event.order_id, *columns.values()
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
                columns = {
                    "id": order_id,
                    "source": source.value,
                    "status": OrderStatus.SUBMITTED.value,
                }
                await connection.execute(order_sql(columns), *columns.values())
            elif OrderStatus(row["status"]).terminal:
                return
            await self.transition(
                connection,
                order_id,
                OrderStatus.FAILED,
                updates={"failure_reason": reason[:1000]},
                event_fields={"reason": reason[:1000]},
            )
