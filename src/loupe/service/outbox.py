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
from dataclasses import dataclass
from typing import Any

import asyncpg
from opentelemetry import context as otel_context

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


@dataclass(frozen=True)
class Pending:
    """One event waiting in the outbox."""

    id: int
    message_id: str
    event: OrderEvent
    trace_headers: dict[str, Any]


Publish = Callable[[OrderEvent, str], Awaitable[None]]
"""Publish one event under a message id, returning once the broker has confirmed it."""


class Relay:
    """Publishes what the outbox holds: woken by NOTIFY, and every `poll_seconds` anyway;
    after a failure it backs off (doubling up to `max_backoff_seconds`) and starts again from
    the oldest row, so events of one order are never published out of order."""

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
        self._listener: asyncpg.Connection | None = None
        self.problem: str | None = None
        """Why the last publish failed, while events wait; None when the outbox drains."""

    async def start(self) -> None:
        self._listener = await self._pool.acquire()
        await self._listener.add_listener(CHANNEL, self._notified)
        self._task = asyncio.create_task(self._run(), name="outbox relay")

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Stop the loop, then publish what is left for up to `drain_seconds`; what cannot be
        published stays in the table for the next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.remove_listener(CHANNEL, self._notified)
            await self._pool.release(self._listener)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain(), drain_seconds)

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        backoff = self._poll_seconds
        while True:
            self._wake.clear()
            try:
                await self.relay()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("outbox: cannot read the outbox table: %s", exc)
            if self.problem is None:
                backoff = self._poll_seconds
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    async def _drain(self) -> None:
        while await self.relay() and self.problem is None:
            pass

    async def relay(self) -> int:
        """Publish waiting events, oldest first, until the outbox is empty, a batch is done or
        one fails; the number published."""
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
                pending = Pending(
                    row["id"],
                    row["message_id"],
                    OrderEvent.from_json(row["body"]),
                    json.loads(row["trace_headers"]),
                )
                try:
                    await asyncio.wait_for(self._send(pending), self._publish_timeout)
                except Exception as exc:
                    problem = self._describe(exc)
                    if problem != self.problem:
                        log.warning("outbox: %d event(s) wait: %s", len(rows) - published, problem)
                    self.problem = problem
                    break
                await connection.execute("DELETE FROM outbox WHERE id = $1", pending.id)
                published += 1
            else:
                if self.problem is not None:
                    log.warning("outbox: publishing again; the waiting events are sent")
                self.problem = None
        return published

    async def _send(self, pending: Pending) -> None:
        parent, _ = extract_context(pending.trace_headers)
        token = otel_context.attach(parent)
        try:
            await self._publish(pending.event, pending.message_id)
        finally:
            otel_context.detach(token)

    async def waiting(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM outbox"))
