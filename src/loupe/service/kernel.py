"""One service's connections: its database, its RabbitMQ connection, its consumers and its
outbox relay, started and stopped with the HTTP app, and the health they report."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import asyncpg
from aio_pika.abc import AbstractRobustConnection

from loupe.accounts import Account
from loupe.config import SERVICE_NAMES, Settings
from loupe.database import open_database
from loupe.messaging import QUEUES, Consumer, Publisher, open_topology
from loupe.messaging.consumer import DeadLetterHook, Handler
from loupe.messaging.publisher import describe_failure
from loupe.messaging.topology import Exchanges
from loupe.orders import OrderEvent
from loupe.service import outbox
from loupe.telemetry import heartbeat

BROKER_RETRY_SECONDS = 5.0
DELIVERY_MIGRATIONS = Path(__file__).parent / "migrations"
"""Every service's inbox and outbox tables, applied before its own migrations."""

log = logging.getLogger(__name__)


async def open_service_database(base_dsn: str, database: str, migrations: Path) -> asyncpg.Pool:
    """A service's database with its inbox and outbox, and its own tables from `migrations`."""
    return await open_database(base_dsn, database, migrations, DELIVERY_MIGRATIONS)


class ServiceKernel:
    """A service's database pool and broker connection, and the consumers it runs on them.

    Consumers are declared before `start`, which opens everything; nothing is opened while the
    app is only built (so its OpenAPI document can be exported offline).
    """

    def __init__(self, service: str, settings: Settings, migrations: Path) -> None:
        self.service = service
        self.service_name = SERVICE_NAMES[service]
        self.settings = settings
        self._migrations = migrations
        self._consumers: list[tuple[str, Handler, DeadLetterHook | None]] = []
        self._on_start: list[Callable[[], Awaitable[Any]]] = []
        self._on_stop: list[Callable[[], Awaitable[Any]]] = []
        self._pool: asyncpg.Pool | None = None
        self._connections: list[AbstractRobustConnection] = []
        self._exchanges: Exchanges | None = None
        self._relay: outbox.Relay | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        amqp = urlsplit(settings.amqp_url)
        self._amqp_server = (amqp.hostname or "127.0.0.1", amqp.port or 5672)
        self.publisher = Publisher(self.service_name, self._amqp_server)

    def consume(
        self, queue: str, handler: Handler, on_dead_letter: DeadLetterHook | None = None
    ) -> None:
        if QUEUES[queue].service != self.service:
            raise ValueError(
                f"queue {queue} belongs to {QUEUES[queue].service}, not {self.service}"
            )
        self._consumers.append((queue, handler, on_dead_letter))

    def on_start(self, callback: Callable[[], Awaitable[Any]]) -> None:
        """Run `callback` once the database is open (RabbitMQ may still be connecting)."""
        self._on_start.append(callback)

    def on_stop(self, callback: Callable[[], Awaitable[Any]]) -> None:
        self._on_stop.append(callback)

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

    async def _publish(self, event: OrderEvent, message_id: str, confirm_seconds: float) -> None:
        if self._exchanges is None:
            raise ConnectionError("not connected yet")
        await self.publisher.publish_event(
            self._exchanges.orders, event, message_id, confirm_seconds
        )

    async def start(self) -> None:
        """Open the database (required: without it nothing can be accepted), then RabbitMQ.
        A broker that cannot be reached yet does not stop the start: orders are accepted,
        their events wait in the outbox, and the connection is tried again in the background
        until it succeeds."""
        database = self.settings.database_name(self.service)
        self._pool = await open_service_database(
            self.settings.postgres_dsn_of(database), database, self._migrations
        )
        self._relay = outbox.Relay(
            self._pool, self._publish, describe=lambda exc: describe_failure(exc, self._amqp_server)
        )
        await self._relay.start()
        self._heartbeat = asyncio.create_task(heartbeat.beat())
        for callback in self._on_start:
            await callback()
        try:
            await self._connect()
        except (OSError, aio_pika.exceptions.AMQPError) as exc:
            log.warning(
                "%s: %s; orders are accepted and their events wait in the outbox; "
                "connecting again every %g s",
                self.service_name,
                describe_failure(exc, self._amqp_server),
                BROKER_RETRY_SECONDS,
            )
            self._connecting = asyncio.create_task(self._connect_until_connected())
        log.info("%s ready", self.service_name)

    async def _connect_until_connected(self) -> None:
        while True:
            await asyncio.sleep(BROKER_RETRY_SECONDS)
            try:
                await self._connect()
            except (OSError, aio_pika.exceptions.AMQPError) as exc:
                log.debug("still cannot reach RabbitMQ: %s", exc)
            else:
                log.warning("%s: connected to RabbitMQ", self.service_name)
                return

    async def _connect(self) -> None:
        # Two connections, as RabbitMQ advises: an alarm blocks a connection that publishes
        # as a whole, and the consumers must still ack and take messages meanwhile.
        connections: list[AbstractRobustConnection] = []
        try:
            for role in ("publish", "consume"):
                connections.append(
                    await aio_pika.connect_robust(
                        self.settings.amqp_url_of(Account(self.service)),
                        client_properties={"connection_name": f"{self.service_name} {role}"},
                    )
                )
            exchanges = await self._declare_and_consume(*connections)
        except BaseException:
            # A robust connection left open would keep reconnecting on its own.
            for connection in connections:
                await connection.close()
            raise
        self._connections, self._exchanges = connections, exchanges
        if self._relay is not None:
            self._relay.wake()

    async def _declare_and_consume(
        self, publishing: AbstractRobustConnection, consuming: AbstractRobustConnection
    ) -> Exchanges:
        channel = await publishing.channel(publisher_confirms=True, on_return_raises=True)
        exchanges = await open_topology(channel)
        consume_channel = await consuming.channel(publisher_confirms=True, on_return_raises=True)
        await consume_channel.set_qos(prefetch_count=self.settings.prefetch)
        for queue, handler, on_dead_letter in self._consumers:
            consumer = Consumer(
                QUEUES[queue],
                handler,
                exchanges=exchanges,
                publisher=self.publisher,
                service=self.service_name,
                max_attempts=self.settings.max_delivery_attempts,
                retry_delay_ms=self.settings.retry_delay_ms,
                on_dead_letter=on_dead_letter,
                server=self._amqp_server,
            )
            await consumer.start(consume_channel)
        return exchanges

    async def stop(self) -> None:
        for task in (self._connecting, self._heartbeat):
            if task is not None:
                task.cancel()
        for callback in self._on_stop:
            await callback()
        if self._relay is not None:
            await self._relay.stop()
        for connection in self._connections:
            await connection.close()
        if self._pool is not None:
            await self._pool.close()

    async def health(self) -> dict[str, str]:
        """What is wrong, by part (database, broker); empty when the service can work."""
        problems = {}
        try:
            async with self.pool.acquire(timeout=2) as connection:
                await connection.fetchval("SELECT 1")
        except Exception as exc:
            # The class, never the driver's text: /healthz answers anyone who can reach the
            # port, and that text can name hosts, users, databases or the statement.
            problems["database"] = f"database unavailable ({type(exc).__name__})"
            log.debug("health: the database does not answer: %s: %s", type(exc).__name__, exc)
        # A robust connection that is reconnecting is not closed, only not connected.
        if not self._connections or not all(c.connected.is_set() for c in self._connections):
            problems["broker"] = "not connected to RabbitMQ"
        elif self._relay is not None and self._relay.problem:
            problems["broker"] = f"events wait in the outbox: {self._relay.problem}"
        if self._relay is not None and not self._relay.running:
            problems["outbox"] = "the outbox relay is not running"
        return problems
