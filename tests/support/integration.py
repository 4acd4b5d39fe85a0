"""Helpers for the integration tests: constants, polling, span lookup, the test broker."""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import uvicorn
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from loupe.accounts import Account, signed_in
from loupe.config import Settings
from loupe.messaging import QUEUES, Consumer, Publisher
from loupe.messaging.consumer import DeadLetterHook, Handler
from loupe.messaging.topology import DEAD_LETTER_QUEUE, UNROUTABLE_QUEUE, Exchanges
from loupe.provision import ProvisionSettings
from loupe.stack.sandbox import Sandbox

# A vhost of its own for each test session (created and deleted by integration_fixtures.py), so
# queues always carry the topology's current arguments and nothing of `make run` is touched.
SANDBOX = Sandbox(Path(tempfile.gettempdir()))
AMQP_URL = SANDBOX.env["LOUPE_AMQP_URL"]
"""The session's vhost, signed in as nobody yet: see `amqp_url`."""
SERVER = ("127.0.0.1", 5672)
# The tests' own throwaway databases are made and read as the set-up's administrator (a user
# named in the DSN, so that no process's role is put in its place).
POSTGRES_DSN = signed_in(ProvisionSettings.from_env().postgres_admin_dsn, getpass.getuser(), None)
SRC = Path(__file__).resolve().parents[2] / "src" / "loupe"
MIGRATIONS = {service: SRC / service / "migrations" for service in ("shop", "crm", "mes")}
# How long to wait for something that should happen promptly before calling it a failure.
TIMEOUT = 15.0

ALL_QUEUES: Sequence[str] = [
    UNROUTABLE_QUEUE,
    DEAD_LETTER_QUEUE,
    *QUEUES,
    *(spec.retry_queue for spec in QUEUES.values()),
]

T = TypeVar("T")


def admin_amqp_url(settings: Settings) -> str:
    """`settings`' vhost as the broker's administrator: what a test publishes, peeks or
    purges there itself, which no process of loupe may."""
    return dataclasses.replace(ProvisionSettings.from_env(), base=settings).admin_amqp_url


def amqp_url(account: Account | None = None) -> str:
    """The session's vhost as `account` signs in to it (once the session made it), or as the
    administrator."""
    if account is None:
        return admin_amqp_url(SANDBOX.settings)
    return SANDBOX.settings.amqp_url_of(account)


POLL_INTERVAL = 0.02


async def eventually(probe: Callable[[], T | None], what: str) -> T:
    """Poll until probe() returns something truthy; fail naming what never happened."""
    for _ in range(int(TIMEOUT / POLL_INTERVAL)):
        if result := probe():
            return result
        await asyncio.sleep(POLL_INTERVAL)
    raise AssertionError(f"timed out waiting for {what}")


def _spans(
    exporter: InMemorySpanExporter, kind: SpanKind, key: str, value: str
) -> list[ReadableSpan]:
    found = [
        s
        for s in exporter.get_finished_spans()
        if s.kind is kind and (s.attributes or {}).get(key) == value
    ]
    return sorted(found, key=lambda s: s.start_time or 0)


def consumer_spans(exporter: InMemorySpanExporter, queue: str) -> list[ReadableSpan]:
    """Finished consumer spans of one queue, in the order they started."""
    return _spans(exporter, SpanKind.CONSUMER, "messaging.destination.subscription.name", queue)


def producer_spans(exporter: InMemorySpanExporter, exchange: str) -> list[ReadableSpan]:
    """Finished producer spans that published to one exchange, in the order they started."""
    return _spans(exporter, SpanKind.PRODUCER, "messaging.destination.name", exchange)


@dataclass
class Broker:
    connection: AbstractConnection
    channel: AbstractChannel
    consume_channel: AbstractChannel
    exchanges: Exchanges
    publisher: Publisher

    async def consume(
        self,
        queue: str,
        handler: Handler,
        *,
        max_attempts: int = 3,
        retry_delay_ms: int = 100,
        on_dead_letter: DeadLetterHook | None = None,
    ) -> Consumer:
        consumer = Consumer(
            QUEUES[queue],
            handler,
            exchanges=self.exchanges,
            publisher=self.publisher,
            service="test-service",
            max_attempts=max_attempts,
            retry_delay_ms=retry_delay_ms,
            on_dead_letter=on_dead_letter,
            server=SERVER,
        )
        await consumer.start(self.consume_channel)
        return consumer

    async def depth(self, queue: str) -> int:
        """Messages ready in a queue."""
        declared = await self.channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count
        assert count is not None
        return count

    async def depth_when(self, queue: str, expected: int) -> int:
        """Messages ready in a queue once they are `expected`, or after TIMEOUT: a queue counts
        what was peeked at or nacked back a moment after the answer, not at once."""
        for _ in range(int(TIMEOUT / POLL_INTERVAL)):
            if (count := await self.depth(queue)) == expected:
                return count
            await asyncio.sleep(POLL_INTERVAL)
        return await self.depth(queue)

    async def get(self, queue: str, what: str) -> AbstractIncomingMessage:
        """The next message in a queue (taken off it), waiting for it to arrive."""
        declared = await self.channel.get_queue(queue, ensure=False)
        for _ in range(int(TIMEOUT / POLL_INTERVAL)):
            message = await declared.get(no_ack=True, fail=False)
            if message is not None:
                return message
            await asyncio.sleep(POLL_INTERVAL)
        raise AssertionError(f"timed out waiting for {what} in {queue}")


async def wait_for_consumer_spans(
    exporter: InMemorySpanExporter, queue: str, count: int
) -> list[ReadableSpan]:
    """Wait until `count` consumer spans of the queue have ended; return them all."""

    def probe() -> list[ReadableSpan] | None:
        found = consumer_spans(exporter, queue)
        return found if len(found) >= count else None

    return await eventually(probe, f"{count} consumer span(s) of {queue}")


@asynccontextmanager
async def serving(app: FastAPI, port: int) -> AsyncIterator[str]:
    """`app` served by uvicorn on 127.0.0.1:`port` in this event loop, its lifespan run (a
    service connects to the sandbox); yields its base URL, and stops it at the end."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started or task.done(), f"the app on port {port} to start")
    if task.done():
        task.result()
        raise AssertionError(f"the app on port {port} stopped as it started")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
