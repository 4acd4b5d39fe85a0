"""How the pipeline benchmark waits (loupe.bench.pipeline.StatusWatch), on real PostgreSQL:
an order's status is seen in the service's `orders` table within a poll, waits on several
orders share one query per service, and a status never reached times out."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from loupe.bench import pipeline
from loupe.bench.pipeline import POLL_SECONDS, StatusWatch
from loupe.config import SERVICES, Settings
from loupe.database import drop_database, dsn_for, ensure_database
from loupe.orders import OrderStatus
from tests.support.integration import POSTGRES_DSN

pytestmark = pytest.mark.integration


@pytest.fixture
async def watched() -> AsyncIterator[tuple[StatusWatch, dict[str, asyncpg.Connection]]]:
    """Three throwaway service databases, each with an `orders` table, and a watch on them."""
    settings = Settings(
        database_prefix=f"loupe_test_{uuid.uuid4().hex[:12]}",
        postgres_dsn=POSTGRES_DSN,
        data_dir=Path("unused"),
    )
    tables = {}
    for service in SERVICES:
        name = settings.database_name(service)
        await ensure_database(POSTGRES_DSN, name)
        tables[service] = await asyncpg.connect(dsn_for(POSTGRES_DSN, name))
        await tables[service].execute("CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT)")
    watch = StatusWatch(settings)
    await watch.open()
    try:
        yield watch, tables
    finally:
        await watch.close()
        for table in tables.values():
            await table.close()
        admin = await asyncpg.connect(dsn_for(POSTGRES_DSN, "postgres"))
        try:
            for service in SERVICES:
                await drop_database(admin, settings.database_name(service))
        finally:
            await admin.close()


async def test_a_status_is_seen_within_a_poll_and_waits_share_one_query(
    watched: tuple[StatusWatch, dict[str, asyncpg.Connection]],
) -> None:
    watch, tables = watched
    await tables["crm"].executemany(
        "INSERT INTO orders VALUES ($1, $2)", [(f"o{n}", "SUBMITTED") for n in range(5)]
    )
    waits = [
        asyncio.create_task(watch.wait("crm", f"o{n}", OrderStatus.PRICE_CALCULATED))
        for n in range(5)
    ]
    await asyncio.sleep(0.2)
    assert not any(w.done() for w in waits)
    # Five orders waited for about 20 polls: one query each time, not one per order.
    assert watch.queries <= 0.2 / POLL_SECONDS + 2
    queries = watch.queries

    await tables["crm"].execute(
        "UPDATE orders SET status = 'PRICE_CALCULATED' WHERE id IN ('o1', 'o3')"
    )
    changed = time.monotonic()
    await asyncio.wait_for(asyncio.gather(waits[1], waits[3]), 5)
    assert time.monotonic() - changed < POLL_SECONDS + 0.1
    assert not any(waits[n].done() for n in (0, 2, 4))

    await tables["crm"].execute("UPDATE orders SET status = 'PRICE_CALCULATED'")
    await asyncio.wait_for(asyncio.gather(*waits), 5)
    assert watch.queries > queries
    # Nothing waits: nothing is asked.
    await asyncio.sleep(5 * POLL_SECONDS)
    idle = watch.queries
    await asyncio.sleep(10 * POLL_SECONDS)
    assert watch.queries == idle


async def test_each_service_is_read_in_its_own_database(
    watched: tuple[StatusWatch, dict[str, asyncpg.Connection]],
) -> None:
    watch, tables = watched
    await tables["shop"].execute("INSERT INTO orders VALUES ('o', 'CLOSED')")
    await tables["mes"].execute("INSERT INTO orders VALUES ('o', 'MANUFACTURING_APPROVED')")
    await asyncio.wait_for(watch.wait("shop", "o", OrderStatus.CLOSED), 5)
    await asyncio.wait_for(watch.wait("mes", "o", OrderStatus.MANUFACTURING_APPROVED), 5)
    assert len(set(watch.backend_pids())) == len(SERVICES)


async def test_a_status_never_reached_times_out_and_names_the_order(
    watched: tuple[StatusWatch, dict[str, asyncpg.Connection]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watch, tables = watched
    monkeypatch.setattr(pipeline, "STEP_TIMEOUT", 0.3)
    await tables["mes"].execute("INSERT INTO orders VALUES ('late', 'SUBMITTED')")
    with pytest.raises(TimeoutError, match=r"order late did not reach .* in mes"):
        await watch.wait("mes", "late", OrderStatus.MANUFACTURING_APPROVED)
    assert watch.waiting["mes"] == {}
