"""The order table and the service kernel as the routes and queue handlers of shop, crm and mes
see them, kept in memory: for those modules' unit tests. The real rules are tested on real
PostgreSQL in tests/service/test_orders_table.py, and the services end to end."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from opentelemetry.trace import INVALID_SPAN_CONTEXT

from loupe.config import Settings
from loupe.messaging.consumer import DeadLetterHook, Delivery, Handler
from loupe.orders import OrderEvent, OrderSource, OrderStatus, check_transition
from loupe.service.orders_table import OrderNotFound

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@dataclass
class FakeOrders:
    """Rows in a dict; every call the code under test makes, in `calls` as (name, arguments)."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def add(self, order_id: str, status: OrderStatus, **columns: Any) -> dict[str, Any]:
        row = {"id": order_id, "source": "shop", "status": status.value, "price": None}
        row |= {"currency": None, "failure_reason": None, "created_at": NOW, "updated_at": NOW}
        self.rows[order_id] = row | columns
        return self.rows[order_id]

    async def row(self, order_id: str) -> dict[str, Any]:
        if order_id not in self.rows:
            raise OrderNotFound(order_id)
        return self.rows[order_id]

    async def restate_recent(self) -> int:
        self.calls.append(("restate_recent", {}))
        return len(self.rows)

    async def submit(
        self, source: OrderSource, columns: dict[str, Any], event_fields: dict[str, Any]
    ) -> OrderEvent:
        self.calls.append(("submit", {"source": source, **columns, **event_fields}))
        order_id = f"order-{len(self.rows) + 1}"
        self.add(order_id, OrderStatus.SUBMITTED, source=source.value, **columns)
        return OrderEvent.now(
            order_id=order_id,
            status=OrderStatus.SUBMITTED,
            previous_status=None,
            source=source,
            **event_fields,
        )

    async def resume(self, order_id: str, to: OrderStatus, operation: str, **asked: Any) -> Any:
        updates = asked["updates"]
        fields = {"to": to, "operation": operation, **updates, **(asked.get("event_fields") or {})}
        self.calls.append(("resume", fields))
        row = await self.row(order_id)
        check_transition(order_id, OrderStatus(row["status"]), to)
        row.update(updates, status=to.value)
        return row

    async def mirror(
        self,
        event: OrderEvent,
        delivery: Delivery,
        *,
        insert_missing: bool,
        updates: dict[str, Any] | None = None,
    ) -> bool:
        self.calls.append(("mirror", {"event": event, "insert_missing": insert_missing}))
        return True

    async def fail_order(self, order_id: str, reason: str, event: OrderEvent | None) -> None:
        self.calls.append(("fail_order", {"order_id": order_id, "reason": reason}))


@dataclass
class FakeKernel:
    """What a service subscribes to: queue name -> (handler, dead-letter hook)."""

    queues: dict[str, tuple[Handler, DeadLetterHook | None]] = field(default_factory=dict)

    def consume(
        self, queue: str, handler: Handler, on_dead_letter: DeadLetterHook | None = None
    ) -> None:
        self.queues[queue] = (handler, on_dead_letter)

    def dead_letter_hooks(self) -> dict[str, DeadLetterHook | None]:
        return {queue: hook for queue, (_, hook) in self.queues.items()}

    async def deliver(self, queue: str, event: OrderEvent) -> Delivery:
        """Hand `event` to the queue's handler as the consumer would; returns the delivery."""
        delivery = Delivery(f"m-{event.order_id}", queue, "order.any", 1, INVALID_SPAN_CONTEXT)
        handler, _ = self.queues[queue]
        await handler(event, delivery)
        return delivery


def status_event(
    order_id: str, status: OrderStatus, previous: OrderStatus | None = None, **fields: Any
) -> OrderEvent:
    return OrderEvent.now(
        order_id=order_id,
        status=status,
        previous_status=previous,
        source=OrderSource.SHOP,
        **fields,
    )


def offline_client(
    create_app: Callable[[Settings], FastAPI], data_dir: Path, orders: FakeOrders, **settings: Any
) -> httpx.AsyncClient:
    """A client of a service's real app (objects kept in `data_dir`, other `settings` as given)
    whose order table is `orders`; nothing is opened: the lifespan, which would connect, never
    runs under ASGITransport."""
    app = create_app(Settings(data_dir=data_dir, **settings))
    app.state.orders = orders
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
