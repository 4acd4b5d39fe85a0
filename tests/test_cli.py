"""`loupe stuck`, `loupe incidents` and `loupe journey` against a real monitor database, as
a user on the host runs them with their output piped: tables as wide as COLUMNS, console links
in the JSON, and the short ids of a narrow table accepted by `loupe journey`."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from typer.testing import CliRunner

from loupe import cli
from loupe.database import drop_database, dsn_for
from loupe.monitor import detection, store
from loupe.monitor.spans import decode
from tests.support.integration import POSTGRES_DSN
from tests.support.otlp_spans import Spans, ago, otlp, slo

pytestmark = pytest.mark.integration

SLO = slo("SUBMITTED", "PRICE_CALCULATED")
CONSOLE = "https://loupe.example.com"
# Two stuck orders whose ids share their first 8 characters, and one rejected.
STUCK = "5c7248a5-8c54-46c5-a75c-da138afe577b"
TWIN = "5c7248a5-0000-46c5-a75c-da138afe577b"
REJECTED = "9e1f03c2-77aa-4b1e-9a55-0c2d8d1e4f10"


async def _fill(database: str) -> None:
    made = Spans()
    pool = await store.open_store(POSTGRES_DSN, database)
    try:
        for service, order_id, status_from, status_to, seconds_ago in [
            ("shop-api", STUCK, "NEW", "SUBMITTED", 250),
            ("shop-api", TWIN, "NEW", "SUBMITTED", 45),
            ("shop-api", REJECTED, "NEW", "SUBMITTED", 8),
            ("mes-api", REJECTED, "SUBMITTED", "PRICE_CALCULATED", 6),
            ("crm-api", REJECTED, "PRICE_CALCULATED", "REJECTED", 4),
        ]:
            span = made.make(
                service, "step", ago(seconds_ago), order_id=order_id, move=(status_from, status_to)
            )
            kept, received = decode(otlp([span]))
            await store.ingest(pool, kept, SLO, received.total())
        await detection.tick(pool, SLO, None)
    finally:
        await pool.close()


async def _drop(database: str) -> None:
    connection = await asyncpg.connect(dsn_for(POSTGRES_DSN, "postgres"))
    try:
        await drop_database(connection, database)
    finally:
        await connection.close()


@pytest.fixture
def monitored() -> Iterator[dict[str, str]]:
    """A monitor database with findings and incidents; the environment the CLI reads it with."""
    prefix = f"loupe_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_fill(f"{prefix}_monitor"))
    yield {
        "LOUPE_POSTGRES_DSN": POSTGRES_DSN,
        "LOUPE_DATABASE_PREFIX": prefix,
        "LOUPE_CONSOLE_URL": CONSOLE,
        "COLUMNS": "80",
    }
    asyncio.run(_drop(f"{prefix}_monitor"))


def loupe(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    done = CliRunner().invoke(cli.app, list(args), env=env)
    return done.exit_code, done.stdout, done.stderr


def test_stuck_and_incidents_piped_fit_columns_and_link_to_the_console(
    monitored: dict[str, str],
) -> None:
    code, out, _ = loupe(monitored, "stuck")
    assert code == 0
    title, header, *rows, hint = out.splitlines()
    print(out)  # what a user sees (pytest -s)
    assert title == "3 order(s) stuck or broken"
    assert header.split() == ["order", "state", "since", "where", "evidence"]
    assert [row.split()[:4] for row in rows] == [
        ["5c7248a5", "stuck", "4", "min"],
        ["5c7248a5", "stuck", "45", "s"],
        ["9e1f03c2", "broken", "4", "s"],
    ]
    assert all(len(line) <= 80 for line in out.splitlines())
    assert hint == f"open: {CONSOLE}/orders/{STUCK}"

    code, out, _ = loupe(monitored, "stuck", "--json")
    assert code == 0
    found = json.loads(out)["findings"]
    assert [f["console_url"] for f in found] == [
        f"{CONSOLE}/orders/{order}" for order in (STUCK, TWIN, REJECTED)
    ]

    code, out, _ = loupe({**monitored, "COLUMNS": "120"}, "incidents")
    assert code == 0
    print(out)
    summary, detect, resolve, *_ = out.splitlines()
    assert summary == "Incidents (last 7 days): 2 open, 0 resolved"
    assert detect.startswith("Time to detect (TTD): median ") and detect.endswith(" 2 incidents")
    assert resolve == "Time to resolve (TTR): no incident"
    assert all(len(line) <= 120 for line in out.splitlines())
    code, out, _ = loupe(monitored, "incidents", "--json")
    incidents = json.loads(out)["incidents"]
    assert [i["console_url"] for i in incidents] == [
        f"{CONSOLE}/incidents/{i['id']}" for i in incidents
    ]


def test_journey_takes_a_short_id_when_only_one_order_starts_with_it(
    monitored: dict[str, str],
) -> None:
    code, out, _ = loupe(monitored, "journey", "9e1f03c2")
    assert code == 0
    print(out)
    lines = out.splitlines()
    assert lines[0] == f"Order {REJECTED}: REJECTED (source unknown)"
    assert lines[1].split() == ["when", "at", "(UTC)", "move", "service", "operation"]
    assert lines[-1] == f"open: {CONSOLE}/orders/{REJECTED}"
    assert all(len(line) <= 80 for line in lines)
    code, out, _ = loupe(monitored, "journey", "9e1f03c2", "--json")
    assert json.loads(out)["order_id"] == REJECTED

    code, out, err = loupe(monitored, "journey", "5c7248a5")
    assert (code, out) == (1, "")
    assert err == f"several orders start with 5c7248a5: {TWIN}, {STUCK}; give more of the id\n"
    code, out, err = loupe(monitored, "journey", "5c7248a5-8c")
    assert code == 0 and out.startswith(f"Order {STUCK}: SUBMITTED")
    code, out, err = loupe(monitored, "journey", "ffffffff")
    assert code == 1
    assert err == "no spans of order ffffffff have reached the monitor\n"
