"""The transactional outbox: an order's change and its event are written in one database
transaction, and a relay publishes the event afterwards.

So a customer's or a seller's request never waits on RabbitMQ, and never fails because it
blinks: the event waits in the `outbox` table until the broker confirms it. A crash between
the commit and the publish only delays the event, and a failed commit leaves no event behind,
so no service ever hears of an order its owner does not hold (a ghost order).

Rows are published in the order they were written, one relay at a time per database (an
advisory lock), and deleted once the broker has confirmed them. A row published but not yet
deleted when the process dies is published again with the same message id, which the
consumers' inbox (messaging/inbox.py) ignores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.utils import suppress_instrumentation

from loupe.database import UNAVAILABLE
from loupe.messaging.propagation import extract_context, inject_context
from loupe.orders import OrderEvent

log = logging.getLogger(__name__)

# NOTIFY is delivered when the writing transaction commits, never before: the relay wakes up
# exactly when there is a row it can see.
CHANNEL = "loupe_outbox"
RELAY_LOCK = 0x6F7574626F78  # "outbox"


async def add(connection: asyncpg.Connection, event: OrderEvent) -> None:
    """Queue `event` for publishing, inside the caller's transaction; the current span (the
    step that decided it) becomes the parent of the publish span."""
    trace_headers: dict[str, Any] = {}
    inject_context(trace_headers)
    await connection.execute(
        "INSERT INTO outbox (order_id, message_id, body, trace_headers) VALUES ($1, $2, $3, $4)",
        event.order_id,
        str(uuid.uuid4()),
        event.to_json(),
        json.dumps(trace_headers),
    )
    await connection.execute(f"NOTIFY {CHANNEL}")


Publish = Callable[[OrderEvent, str, float], Awaitable[None]]
"""Publish one event under a message id, returning once the broker has confirmed it; failing
(inside its span, so the span says so) when the confirm takes longer than the seconds given."""


class Relay:
    """Publishes what the outbox holds: woken by NOTIFY, and every `poll_seconds` anyway;
    after a failure (of the broker or the database) it backs off, doubling up to
    `max_backoff_seconds`, and starts again from the oldest row, so events of one order are
    never published out of order.

    Its own reads and deletes are not traced: polling would otherwise make a root trace a
    second per service. Each publish is, as a child of the step that wrote the event."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        publish: Publish,
        *,
        describe: Callable[[BaseException], str] = str,
        publish_timeout: float = 5.0,
        poll_seconds: float = 1.0,
        max_backoff_seconds: float = 10.0,
        batch: int = 100,
    ) -> None:
        self._pool = pool
        self._publish = publish
        self._describe = describe
        self._publish_timeout = publish_timeout
        self._poll_seconds = poll_seconds
        self._max_backoff = max_backoff_seconds
        self._batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # A pooled connection held for LISTEN; taken again if PostgreSQL closed it.
        self._listener: asyncpg.pool.PoolConnectionProxy | None = None
        self.problem: str | None = None
        """Why publishing fails while events wait; None once the outbox drains."""

    async def start(self) -> None:
        with contextlib.suppress(*UNAVAILABLE):
            await self._listen()
        self._task = asyncio.create_task(self._run(), name="outbox relay")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Relay now (e.g. the broker is back), not at the next poll."""
        self._wake.set()

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Stop the loop, then publish what is left for up to `drain_seconds`; what cannot be
        published stays in the table for the next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._unlisten()
        with contextlib.suppress(TimeoutError, *UNAVAILABLE):
            await asyncio.wait_for(self._drain(), drain_seconds)

    def _listening(self) -> bool:
        if self._listener is None:
            return False
        try:
            return not self._listener.is_closed()
        except asyncpg.InterfaceError:
            # asyncpg detached the proxy from a connection PostgreSQL closed.
            return False

    async def _listen(self) -> None:
        if self._listening():
            return
        await self._unlisten()
        self._listener = await self._pool.acquire()
        await self._listener.add_listener(CHANNEL, self._notified)

    async def _unlisten(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        with contextlib.suppress(Exception):
            await listener.remove_listener(CHANNEL, self._notified)
        with contextlib.suppress(Exception):
            await self._pool.release(listener)

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        backoff = self._poll_seconds
        while True:
            self._wake.clear()
            published = 0
            try:
                await self._listen()
                published = await self.relay()
                failed = self.problem is not None
            except UNAVAILABLE as exc:
                log.warning("outbox: cannot read the outbox table: %s: %s", type(exc).__name__, exc)
                failed = True
            except Exception as exc:
                # Never the end of the loop: events would pile up unseen.
                log.exception("outbox: relaying failed")
                # Shown by /healthz: the class only; the log line above has the whole error.
                self.problem = f"the relay failed: {type(exc).__name__}"
                failed = True
            if failed:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            backoff = self._poll_seconds
            if published < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_seconds)

    async def _drain(self) -> None:
        while await self.relay() and self.problem is None:
            pass

    async def relay(self) -> int:
        """Publish waiting events, oldest first, until the outbox is empty, a batch is done or
        one fails; the number published."""
        with suppress_instrumentation():
            return await self._relay()

    async def _relay(self) -> int:
        published = 0
        async with self._pool.acquire() as connection, connection.transaction():
            # Another replica relaying the same database would break the order per order.
            if not await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", RELAY_LOCK):
                return 0
            rows = await connection.fetch(
                "SELECT id, message_id, body, trace_headers FROM outbox ORDER BY id LIMIT $1",
                self._batch,
            )
            for row in rows:
                try:
                    await self._send(row)
                except Exception as exc:
                    problem = self._describe(exc)
                    if problem != self.problem:
                        waiting = await connection.fetchval("SELECT count(*) FROM outbox")
                        log.warning("outbox: %d event(s) wait: %s", waiting, problem)
                    self.problem = problem
                    return published
                await connection.execute("DELETE FROM outbox WHERE id = $1", row["id"])
                published += 1
        if self.problem is not None and published < self._batch:
            log.warning("outbox: the waiting events are published; publishing again")
            self.problem = None
        return published

    async def _send(self, row: asyncpg.Record) -> None:
        event = OrderEvent.from_json(row["body"])
        parent, _ = extract_context(json.loads(row["trace_headers"]))
        token = otel_context.attach(parent)
        try:
            # The publisher's own timeout fails its span; this one only guards against a
            # publish that ignores it.
            await asyncio.wait_for(
                self._publish(event, row["message_id"], self._publish_timeout),
                self._publish_timeout + 1.0,
            )
        finally:
            otel_context.detach(token)

    async def waiting(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM outbox"))
