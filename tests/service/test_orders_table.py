"""The order table's rules on real PostgreSQL: submit, transition (and a person's resumed
step), mirror (views only move forward) and fail_order (failures never echo)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags

from loupe.messaging import Delivery
from loupe.messaging.propagation import span_context_from_text, span_context_to_text
from loupe.monitor.spans import decode
from loupe.orders import IllegalTransition, OrderEvent, OrderSource, OrderStatus
from loupe.service.kernel import open_service_database
from loupe.service.orders_table import OrderNotFound, OrderTable, order_sql
from loupe.telemetry.attributes import (
    LINK_REASON,
    ORDER_ID,
    ORDER_SOURCE,
    ORDER_STATUS_TO,
    PREVIOUS_STEP,
    STATUS_RESTATED,
)
from tests.support.integration import MIGRATIONS, POSTGRES_DSN
from tests.support.otlp_spans import otlp
from tests.support.service_fakes import status_event

pytestmark = pytest.mark.integration

S = OrderStatus
_tracer = trace.get_tracer(__name__)


@dataclass
class Recorder:
    """The kernel's part the table needs (a pool), and what its steps queued in the outbox."""

    pool: asyncpg.Pool

    async def queued(self) -> list[OrderEvent]:
        rows = await self.pool.fetch("SELECT body FROM outbox ORDER BY id")
        return [OrderEvent.from_json(row["body"]) for row in rows]


@pytest.fixture
async def recorder(database_name: Callable[[], str]) -> AsyncIterator[Recorder]:
    # MES's table: it has every column the rules write (price, failure_reason, operator …).
    pool = await open_service_database(POSTGRES_DSN, database_name(), MIGRATIONS["mes"])
    try:
        yield Recorder(pool)
    finally:
        await pool.close()


@pytest.fixture
def table(recorder: Recorder) -> OrderTable:
    return OrderTable(recorder)


def _step() -> SpanContext:
    ids = uuid.uuid4().int
    return SpanContext(ids >> 64, ids & (2**64 - 1) or 1, True, TraceFlags(TraceFlags.SAMPLED))


def _delivery(message_id: str | None = None) -> Delivery:
    return Delivery(
        message_id=message_id or str(uuid.uuid4()),
        queue="mes.order-decisions",
        routing_key="order.any",
        attempt=1,
        span_context=_step(),
    )


async def _insert(recorder: Recorder, status: OrderStatus, context: str | None = None) -> str:
    order_id = str(uuid.uuid4())
    await recorder.pool.execute(
        "INSERT INTO orders (id, source, status, last_step_context) VALUES ($1, $2, $3, $4)",
        order_id,
        OrderSource.B2B.value,
        status.value,
        context,
    )
    return order_id


async def _status(recorder: Recorder, order_id: str) -> str | None:
    return await recorder.pool.fetchval("SELECT status FROM orders WHERE id = $1", order_id)


def test_the_one_builder_writes_the_statements_spans_show() -> None:
    assert order_sql(["id", "source", "status"]) == (
        "INSERT INTO orders (id, source, status) VALUES ($1, $2, $3)"
    )
    assert order_sql(["status", "price"], update=True) == (
        "UPDATE orders SET status = $2, price = $3, updated_at = now() WHERE id = $1"
    )
    assert order_sql(["status"], update=True, returning=True) == (
        "UPDATE orders SET status = $2, updated_at = now() WHERE id = $1 RETURNING *"
    )


# -- submit -------------------------------------------------------------------------------------
async def test_submit_creates_a_submitted_order_and_queues_its_event(
    table: OrderTable, recorder: Recorder
) -> None:
    with _tracer.start_as_current_span("place order") as span:
        event = await table.submit(
            OrderSource.B2B,
            {"partner_id": "acme", "partner_reference": "PO-1"},
            {"model_url": "http://mes/models/x"},
        )
    row = await table.row(event.order_id)
    assert (row["status"], row["source"], row["partner_id"]) == ("SUBMITTED", "b2b", "acme")
    assert row["last_step_context"] == span_context_to_text(span.get_span_context())
    assert await recorder.queued() == [event]
    assert (event.status, event.previous_status, event.model_url) == (
        S.SUBMITTED,
        None,
        "http://mes/models/x",
    )


async def test_no_event_is_queued_for_an_order_that_was_not_written(
    table: OrderTable, recorder: Recorder
) -> None:
    with pytest.raises(asyncpg.UndefinedColumnError):
        await table.submit(OrderSource.B2B, {"no_such_column": "x"}, {})
    assert await recorder.pool.fetchval("SELECT count(*) FROM orders") == 0
    assert await recorder.queued() == []


async def test_a_change_rolled_back_takes_its_queued_event_with_it(
    table: OrderTable, recorder: Recorder
) -> None:
    # The ghost order's cause: an event out while its change was never committed.
    order_id = await _insert(recorder, S.SUBMITTED)
    with pytest.raises(RuntimeError):
        async with recorder.pool.acquire() as connection, connection.transaction():
            await table.transition(connection, order_id, S.PRICE_CALCULATED)
            assert len(await recorder.queued()) == 0, "not visible before the commit"
            raise RuntimeError("the handler failed after the step")
    assert await _status(recorder, order_id) == "SUBMITTED"
    assert await recorder.queued() == []


# -- transition and resume ----------------------------------------------------------------------
async def test_transition_moves_records_the_step_and_queues_its_event(
    table: OrderTable, recorder: Recorder
) -> None:
    order_id = await _insert(recorder, S.SUBMITTED)
    before = await recorder.pool.fetchval("SELECT updated_at FROM orders WHERE id = $1", order_id)
    with _tracer.start_as_current_span("price order") as span:
        async with recorder.pool.acquire() as connection, connection.transaction():
            result = await table.transition(
                connection,
                order_id,
                S.PRICE_CALCULATED,
                updates={"price": 250.5, "currency": "EUR"},
                event_fields={"price": 250.5, "currency": "EUR"},
            )
    assert result.row["status"] == "PRICE_CALCULATED" and float(result.row["price"]) == 250.5
    assert result.row["updated_at"] > before
    assert result.row["last_step_context"] == span_context_to_text(span.get_span_context())
    assert await recorder.queued() == [result.event]
    assert (result.event.previous_status, result.event.status) == (S.SUBMITTED, S.PRICE_CALCULATED)


async def test_a_refused_transition_changes_and_queues_nothing(
    table: OrderTable, recorder: Recorder
) -> None:
    order_id = await _insert(recorder, S.SUBMITTED)
    with pytest.raises(IllegalTransition):
        await table.resume(order_id, S.SHIPPED, "ship order", updates={"operator": "x"})
    with pytest.raises(OrderNotFound):
        await table.resume("no-such-order", S.SHIPPED, "ship order", updates={})
    with pytest.raises(OrderNotFound):
        await table.row("no-such-order")
    assert await _status(recorder, order_id) == "SUBMITTED"
    assert await recorder.queued() == []


async def test_a_resumed_step_is_a_span_linked_to_the_previous_step(
    table: OrderTable, recorder: Recorder, spans: InMemorySpanExporter
) -> None:
    previous = _step()
    order_id = await _insert(recorder, S.MANUFACTURING_APPROVED, span_context_to_text(previous))
    row = await table.resume(
        order_id, S.MANUFACTURING_STARTED, "take order", updates={"operator": "olga"}
    )
    assert (row["status"], row["operator"]) == ("MANUFACTURING_STARTED", "olga")
    (step,) = [s for s in spans.get_finished_spans() if s.name == "take order"]
    assert [(link.context.span_id, dict(link.attributes or {})) for link in step.links] == [
        (previous.span_id, {LINK_REASON: PREVIOUS_STEP})
    ]
    stored = span_context_from_text(row["last_step_context"])
    assert stored is not None and stored.span_id == step.context.span_id

    with pytest.raises(IllegalTransition):
        await table.resume(order_id, S.CLOSED, "close order", updates={})
    (refused,) = [s for s in spans.get_finished_spans() if s.name == "close order"]
    assert (refused.attributes or {})["error.type"] == IllegalTransition.__name__


async def test_recently_changed_orders_are_restated_as_spans_of_their_status(
    table: OrderTable, recorder: Recorder, spans: InMemorySpanExporter
) -> None:
    # What a service says as it starts, for the moves whose spans it may have lost when it
    # was killed: each order changed within the window, at the status it is at.
    recent = await _insert(recorder, S.PRICE_CALCULATED)
    older = await _insert(recorder, S.SUBMITTED)
    await recorder.pool.execute(
        "UPDATE orders SET updated_at = now() - interval '10 minutes' WHERE id = $1", older
    )
    spans.clear()

    assert await table.restate_recent(timedelta(minutes=2)) >= 1

    restated = [
        dict(s.attributes or {})
        for s in spans.get_finished_spans()
        if s.name == STATUS_RESTATED and (s.attributes or {}).get(ORDER_ID) in (recent, older)
    ]
    assert restated == [
        {ORDER_ID: recent, ORDER_SOURCE: "b2b", ORDER_STATUS_TO: "PRICE_CALCULATED"}
    ]
    (facts,), _ = decode(
        otlp([s for s in spans.get_finished_spans() if s.name == STATUS_RESTATED][-1:])
    )
    assert facts.transition and facts.status_from is None, "a status the monitor can follow"


# -- mirror: views only move forward ------------------------------------------------------------
async def test_mirror_inserts_a_missing_order_only_when_asked(
    table: OrderTable, recorder: Recorder
) -> None:
    unknown = str(uuid.uuid4())
    ignored = status_event(unknown, S.PRICE_CALCULATED, S.SUBMITTED, price=99.0, currency="EUR")
    assert not await table.mirror(ignored, _delivery(), insert_missing=False)
    assert await _status(recorder, unknown) is None

    delivery = _delivery()
    assert await table.mirror(ignored, delivery, insert_missing=True)
    row = await table.row(unknown)
    assert (row["status"], float(row["price"]), row["currency"]) == ("PRICE_CALCULATED", 99, "EUR")
    assert row["last_step_context"] == span_context_to_text(delivery.span_context)
    assert await recorder.queued() == [], "a view follows; it never announces"


async def test_mirror_moves_forward_and_ignores_stale_and_repeated_events(
    table: OrderTable, recorder: Recorder
) -> None:
    order_id = await _insert(recorder, S.PRICE_CALCULATED)
    approved = status_event(order_id, S.MANUFACTURING_APPROVED, S.PRICE_CALCULATED)
    again = _delivery()
    assert await table.mirror(approved, again, insert_missing=False, updates={"operator": "x"})
    assert (await table.row(order_id))["operator"] == "x"
    assert not await table.mirror(approved, again, insert_missing=False), "same delivery twice"
    stale = status_event(order_id, S.PRICE_CALCULATED, S.SUBMITTED)
    assert not await table.mirror(stale, _delivery(), insert_missing=False)
    assert await _status(recorder, order_id) == "MANUFACTURING_APPROVED"

    failed = status_event(order_id, S.FAILED, S.MANUFACTURING_APPROVED, reason="mould cracked")
    assert await table.mirror(failed, _delivery(), insert_missing=False)
    shipped = status_event(order_id, S.SHIPPED, S.MANUFACTURING_COMPLETED)
    assert not await table.mirror(shipped, _delivery(), insert_missing=False), "FAILED is final"
    row = await table.row(order_id)
    assert (row["status"], row["failure_reason"]) == ("FAILED", "mould cracked")


# -- fail_order: failures never echo ------------------------------------------------------------
async def test_fail_order_fails_an_order_once_and_says_why(
    table: OrderTable, recorder: Recorder
) -> None:
    order_id = await _insert(recorder, S.SUBMITTED)
    await table.fail_order(order_id, "x" * 1500, status_event(order_id, S.SUBMITTED, None))
    row = await table.row(order_id)
    assert (row["status"], row["failure_reason"]) == ("FAILED", "x" * 1000)
    (event,) = await recorder.queued()
    assert (event.status, event.previous_status, event.reason) == (
        S.FAILED,
        S.SUBMITTED,
        "x" * 1000,
    )
    await table.fail_order(order_id, "again", None)
    assert len(await recorder.queued()) == 1, "a final order is not failed again"


async def test_fail_order_creates_an_order_it_never_saw(
    table: OrderTable, recorder: Recorder
) -> None:
    unknown = str(uuid.uuid4())
    await table.fail_order(unknown, "poison message: bad JSON", None)
    row = await table.row(unknown)
    assert (row["status"], row["source"]) == ("FAILED", "shop")
    assert [e.previous_status for e in await recorder.queued()] == [S.SUBMITTED]


async def test_the_failure_of_a_failed_event_is_not_announced(
    table: OrderTable, recorder: Recorder
) -> None:
    order_id = await _insert(recorder, S.PRICE_CALCULATED)
    await table.fail_order(order_id, "could not follow", status_event(order_id, S.FAILED, None))
    assert await _status(recorder, order_id) == "PRICE_CALCULATED"
    assert await recorder.queued() == []
