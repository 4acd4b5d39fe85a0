"""The outbox on real PostgreSQL: events leave in the order they were written, only once the
publish succeeded, under the step that decided them; while publishing fails they wait, and the
reason is said in words."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanContext

from loupe.orders import OrderEvent, OrderStatus
from loupe.service import outbox
from loupe.service.kernel import open_service_database
from tests.support.integration import MIGRATIONS, POSTGRES_DSN
from tests.support.service_fakes import status_event

pytestmark = pytest.mark.integration

_tracer = trace.get_tracer(__name__)


class Broker:
    """A publish that keeps what it is given, with the span context it was called under; it
    fails while `down` is set, or (`lost_confirms`) receives the message but fails to confirm
    it, as a broker does whose confirm never arrives."""

    def __init__(self) -> None:
        self.sent: list[tuple[OrderEvent, str, SpanContext]] = []
        self.down: Exception | None = None
        self.lost_confirms = 0

    async def publish(self, event: OrderEvent, message_id: str, confirm_seconds: float) -> None:
        if self.down is not None:
            raise self.down
        self.sent.append((event, message_id, trace.get_current_span().get_span_context()))
        if self.lost_confirms:
            self.lost_confirms -= 1
            raise TimeoutError


@pytest.fixture
async def pool(database_name: Callable[[], str]) -> AsyncIterator[asyncpg.Pool]:
    pool = await open_service_database(POSTGRES_DSN, database_name(), MIGRATIONS["crm"])
    try:
        yield pool
    finally:
        await pool.close()


async def _queue(pool: asyncpg.Pool, *events: OrderEvent) -> SpanContext:
    with _tracer.start_as_current_span("decide") as step:
        async with pool.acquire() as connection, connection.transaction():
            for event in events:
                await outbox.add(connection, event)
    return step.get_span_context()


async def _queued_and_sent(
    pool: asyncpg.Pool, broker: Broker, events: list[OrderEvent]
) -> list[OrderEvent]:
    """Queue `events`, then what a running relay sent within 5 s."""
    await _queue(pool, *events)
    for _ in range(100):
        if broker.sent:
            break
        await asyncio.sleep(0.05)
    return [e for e, _, _ in broker.sent]


def _events(n: int) -> list[OrderEvent]:
    """The first `n` moves of one order, in the order they happened."""
    order_id = str(uuid.uuid4())
    statuses = list(OrderStatus)
    return [status_event(order_id, statuses[i + 1], statuses[i]) for i in range(n)]


async def test_events_leave_in_order_under_the_step_that_wrote_them(pool: asyncpg.Pool) -> None:
    broker = Broker()
    events = _events(3)
    step = await _queue(pool, *events)
    relay = outbox.Relay(pool, broker.publish)
    assert await relay.relay() == len(events)
    assert [e for e, _, _ in broker.sent] == events
    assert {(c.trace_id, c.span_id) for _, _, c in broker.sent} == {(step.trace_id, step.span_id)}
    assert await relay.waiting() == 0
    assert len({message_id for _, message_id, _ in broker.sent}) == len(events)


async def test_an_event_whose_confirm_was_lost_goes_again_first_under_the_same_id(
    pool: asyncpg.Pool,
) -> None:
    broker = Broker()
    events = _events(2)
    await _queue(pool, *events)
    relay = outbox.Relay(pool, broker.publish)
    broker.lost_confirms = 1
    assert await relay.relay() == 0
    assert [e for e, _, _ in broker.sent] == events[:1], "the next one waits for the first"
    assert await relay.relay() == 2
    sent = [(e, message_id) for e, message_id, _ in broker.sent]
    # The consumers' inbox drops the second copy by its message id.
    assert sent[0] == sent[1] and [e for e, _ in sent[1:]] == events


async def test_while_publishing_fails_events_wait_and_the_reason_is_kept(
    pool: asyncpg.Pool,
) -> None:
    broker = Broker()
    events = _events(2)
    await _queue(pool, *events)
    relay = outbox.Relay(pool, broker.publish, describe=lambda exc: f"down: {exc}")
    broker.down = ConnectionRefusedError("refused")
    assert await relay.relay() == 0
    assert relay.problem == "down: refused"
    assert await relay.waiting() == len(events)

    broker.down = None
    assert await relay.relay() == len(events)
    assert relay.problem is None
    assert [e for e, _, _ in broker.sent] == events


async def test_a_publish_that_hangs_times_out_and_keeps_the_event(pool: asyncpg.Pool) -> None:
    async def hangs(event: OrderEvent, message_id: str, confirm_seconds: float) -> None:
        await asyncio.sleep(30)

    await _queue(pool, *_events(1))
    # A publisher that ignores its confirm time: the relay's own guard still ends the wait.
    relay = outbox.Relay(pool, hangs, publish_timeout=0.2, describe=lambda exc: type(exc).__name__)
    assert await relay.relay() == 0
    assert relay.problem == "TimeoutError"
    assert await relay.waiting() == 1


async def test_only_one_relay_publishes_at_a_time(pool: asyncpg.Pool) -> None:
    await _queue(pool, *_events(1))
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", outbox.RELAY_LOCK)
        assert await outbox.Relay(pool, Broker().publish).relay() == 0


async def test_a_running_relay_is_woken_by_the_commit(pool: asyncpg.Pool) -> None:
    broker = Broker()
    # A poll far longer than the wait below: only the NOTIFY can deliver in time.
    relay = outbox.Relay(pool, broker.publish, poll_seconds=60)
    await relay.start()
    try:
        await asyncio.sleep(0.2)
        events = _events(1)
        assert await _queued_and_sent(pool, broker, events) == events
    finally:
        await relay.stop()


async def test_stopping_drains_what_can_be_published(pool: asyncpg.Pool) -> None:
    broker = Broker()
    broker.down = ConnectionRefusedError("refused")
    relay = outbox.Relay(pool, broker.publish, poll_seconds=60, max_backoff_seconds=60)
    await relay.start()
    events = _events(2)
    await _queue(pool, *events)
    await asyncio.sleep(0.3)
    assert broker.sent == [] and relay.problem, "the loop tried, failed and backs off"
    broker.down = None
    await relay.stop()
    assert [e for e, _, _ in broker.sent] == events


async def test_an_event_that_cannot_be_read_holds_the_relay_which_says_why_and_runs_on(
    pool: asyncpg.Pool,
) -> None:
    await pool.execute(
        "INSERT INTO outbox (order_id, message_id, body, trace_headers)"
        " VALUES ('o', 'm', $1, '{}')",
        b"not an event",
    )
    relay = outbox.Relay(pool, Broker().publish, poll_seconds=0.05)
    await relay.start()
    try:
        await asyncio.sleep(0.3)
        assert relay.running
        assert relay.problem is not None and "not JSON" in relay.problem
    finally:
        await relay.stop()


async def test_the_relay_goes_on_after_postgresql_closed_its_connections(
    pool: asyncpg.Pool,
) -> None:
    broker = Broker()
    relay = outbox.Relay(pool, broker.publish, poll_seconds=0.1, max_backoff_seconds=0.2)
    await relay.start()
    try:
        await asyncio.sleep(0.2)
        # As a restart of PostgreSQL does: every connection of this database ends.
        async with pool.acquire() as connection:
            await connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        await asyncio.sleep(0.5)
        events = _events(1)
        assert await _queued_and_sent(pool, broker, events) == events
        assert relay.running and relay.problem is None
    finally:
        await relay.stop()
