"""Fixtures of the integration tier: real RabbitMQ (a throwaway vhost) and throwaway PostgreSQL
databases. A pytest plugin, registered by tests/conftest.py, so a test file in any folder
reaches them; the tier itself is the `integration` marker on the file."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import aio_pika
import asyncpg
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loupe.database import drop_database, dsn_for
from loupe.messaging import Publisher, declare_topology
from loupe.monitor import store
from tests.support.integration import (
    ALL_QUEUES,
    POSTGRES_DSN,
    SANDBOX,
    SERVER,
    Broker,
    amqp_url,
)


@pytest.fixture(autouse=True)
def _loupe_spans(request: pytest.FixtureRequest) -> InMemorySpanExporter | None:
    """Every integration test starts with the global tracer provider set and no spans."""
    if request.node.get_closest_marker("integration") is None:
        return None
    spans: InMemorySpanExporter = request.getfixturevalue("spans")
    return spans


@pytest.fixture(scope="session")
def _vhost() -> Iterator[str]:
    SANDBOX.create()
    yield SANDBOX.vhost
    SANDBOX.destroy()


@pytest.fixture
async def broker(_vhost: str) -> AsyncIterator[Broker]:
    """The real topology in the session's vhost, every queue purged; consumers stop at the end."""
    connection = await aio_pika.connect(amqp_url(), client_properties={"connection_name": "tests"})
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchanges = await declare_topology(channel)
        for name in ALL_QUEUES:
            queue = await channel.get_queue(name, ensure=False)
            await queue.purge()
        consume_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        # One message at a time, so deliveries are handled in the order they arrive.
        await consume_channel.set_qos(prefetch_count=1)
        yield Broker(connection, channel, consume_channel, exchanges, Publisher("tests", SERVER))
    finally:
        await connection.close()


@pytest.fixture
async def database_name() -> AsyncIterator[Callable[[], str]]:
    """Names for throwaway databases (`loupe_test_<random>`), all dropped at the end."""
    names: list[str] = []

    def new() -> str:
        names.append(f"loupe_test_{uuid.uuid4().hex[:12]}")
        return names[-1]

    yield new
    connection = await asyncpg.connect(dsn_for(POSTGRES_DSN, "postgres"))
    try:
        for name in names:
            await drop_database(connection, name)
    finally:
        await connection.close()


@pytest.fixture
async def monitor_pool(database_name: Callable[[], str]) -> AsyncIterator[asyncpg.Pool]:
    """The order-flow monitor's store, migrated, in a throwaway database; closed at the end."""
    pool = await store.open_store(POSTGRES_DSN, database_name())
    yield pool
    await pool.close()
