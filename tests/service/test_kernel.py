"""A service's kernel on real PostgreSQL and RabbitMQ: health before, during and after a run,
its database migrated, and its consumers run with the service's settings (attempts, delay)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from loupe.messaging.consumer import Delivery
from loupe.orders import OrderEvent, OrderStatus
from loupe.service import kernel as kernel_module
from loupe.service import outbox
from loupe.service.kernel import ServiceKernel
from loupe.stack.process import free_port
from tests.support.integration import MIGRATIONS, SANDBOX, Broker, eventually
from tests.support.service_fakes import status_event

pytestmark = pytest.mark.integration

QUEUE = "crm.order-status"
NOT_STARTED = {"database": "database unavailable (RuntimeError)"}
DISCONNECTED = {"broker": "not connected to RabbitMQ"}


@pytest.fixture
async def kernel(broker: Broker) -> AsyncIterator[ServiceKernel]:
    # The session's sandbox (its vhost and its databases, dropped when the session ends), with
    # few, quick retries; `broker` has declared and purged the queues.
    settings = dataclasses.replace(SANDBOX.settings, max_delivery_attempts=2, retry_delay_ms=50)
    kernel = ServiceKernel("crm", settings, MIGRATIONS["crm"])
    yield kernel
    if "database" not in await kernel.health():  # still running: the test did not stop it
        await kernel.stop()


def test_a_service_consumes_only_its_own_queues(tmp_path: Path) -> None:
    async def handler(_: OrderEvent, __: Delivery) -> None: ...

    kernel = ServiceKernel("shop", SANDBOX.settings, tmp_path)
    with pytest.raises(ValueError, match="belongs to mes, not shop"):
        kernel.consume("mes.order-submitted", handler)


async def test_health_follows_the_connections_from_start_to_stop(kernel: ServiceKernel) -> None:
    assert await kernel.health() == NOT_STARTED | DISCONNECTED
    with pytest.raises(RuntimeError, match="has not started"):
        kernel.exchanges  # noqa: B018 (the property is what is tested)

    await kernel.start()
    assert await kernel.health() == {}
    assert kernel.exchanges.orders.name == "loupe.orders"
    # The service's own migrations ran: its order table is there, empty.
    assert await kernel.pool.fetchval("SELECT count(*) FROM orders") == 0

    # Callbacks run first, while the database can still be used (e.g. to finish a batch).
    seen: list[int] = []

    async def last_words() -> None:
        seen.append(await kernel.pool.fetchval("SELECT 1"))

    kernel.on_stop(last_words)
    await kernel.stop()
    assert seen == [1]
    problems = await kernel.health()
    assert problems["broker"] == DISCONNECTED["broker"]
    assert problems["database"] == "database unavailable (InterfaceError)"


async def test_consumers_retry_and_dead_letter_as_the_settings_say(
    kernel: ServiceKernel, broker: Broker
) -> None:
    handled: list[tuple[str, int]] = []
    dead: list[tuple[str, str]] = []

    async def handler(event: OrderEvent, delivery: Delivery) -> None:
        handled.append((event.order_id, delivery.attempt))
        if event.order_id == "o-bad":
            raise RuntimeError("cannot follow")

    async def on_dead_letter(order_id: str, reason: str, _: OrderEvent | None) -> None:
        dead.append((order_id, reason))

    kernel.consume(QUEUE, handler, on_dead_letter)
    await kernel.start()
    for order_id in ("o-good", "o-bad"):
        await broker.publisher.publish_event(
            broker.exchanges.orders, status_event(order_id, OrderStatus.SHIPPED)
        )
    await eventually(lambda: dead and len(handled) == 3, "the bad event dead-lettered")
    # LOUPE_MAX_DELIVERY_ATTEMPTS=2: the bad one is tried twice, then given up.
    assert sorted(handled) == [("o-bad", 1), ("o-bad", 2), ("o-good", 1)]
    ((order_id, reason),) = dead
    assert order_id == "o-bad" and "cannot follow" in reason


async def test_a_service_starts_without_rabbitmq_and_publishes_once_it_is_back(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RabbitMQ "down": a port where nothing listens yet; later a relay to the real broker.
    port = free_port()
    amqp = urlsplit(SANDBOX.settings.amqp_url)._replace(netloc=f"127.0.0.1:{port}")
    settings = dataclasses.replace(SANDBOX.settings, amqp_url=urlunsplit(amqp))
    monkeypatch.setattr(kernel_module, "BROKER_RETRY_SECONDS", 0.1)
    kernel = ServiceKernel("crm", settings, MIGRATIONS["crm"])
    await kernel.start()
    try:
        assert await kernel.health() == DISCONNECTED
        order_id = str(uuid.uuid4())
        async with kernel.pool.acquire() as connection, connection.transaction():
            await outbox.add(connection, status_event(order_id, OrderStatus.SHIPPED))
        await asyncio.sleep(0.3)
        assert await kernel.pool.fetchval("SELECT count(*) FROM outbox") == 1, "it waits"

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        async def forward(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
            broker_r, broker_w = await asyncio.open_connection("127.0.0.1", 5672)
            await asyncio.gather(pipe(client_r, broker_w), pipe(broker_r, client_w))

        async with await asyncio.start_server(forward, "127.0.0.1", port):
            for _ in range(100):
                if await broker.depth(QUEUE) == 1:
                    break
                await asyncio.sleep(0.1)
            assert await broker.depth(QUEUE) == 1, "the waiting event was published"
            assert await kernel.health() == {}
            assert await kernel.pool.fetchval("SELECT count(*) FROM outbox") == 0
    finally:
        await kernel.stop()
