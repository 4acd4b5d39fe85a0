"""open_database: create the service's database, apply its numbered migrations once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import loupe.database
from loupe.database import dsn_for, load_migrations, migrate, open_database
from loupe.service.kernel import open_service_database
from tests.support.integration import MIGRATIONS, POSTGRES_DSN

pytestmark = pytest.mark.integration


async def _fetch(database: str, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn_for(POSTGRES_DSN, database))
    try:
        rows: list[asyncpg.Record] = await connection.fetch(query, *args)
        return rows
    finally:
        await connection.close()


async def _exists(database: str) -> bool:
    rows = await _fetch("postgres", "SELECT 1 FROM pg_database WHERE datname = $1", database)
    return bool(rows)


async def _tables(database: str) -> set[str]:
    rows = await _fetch(
        database, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )
    return {r["table_name"] for r in rows}


@pytest.fixture(autouse=True)
async def pools(
    monkeypatch: pytest.MonkeyPatch, database_name: Callable[[], str]
) -> AsyncIterator[list[asyncpg.Pool]]:
    """Every pool open_database creates, closed at the end of the test (before its databases
    are dropped), even one that open_database itself failed to hand back."""
    created: list[asyncpg.Pool] = []
    create_pool = asyncpg.create_pool

    def recording(*args: Any, **kwargs: Any) -> asyncpg.Pool:
        pool = create_pool(*args, **kwargs)
        created.append(pool)
        return pool

    monkeypatch.setattr(loupe.database.asyncpg, "create_pool", recording)
    yield created
    for pool in created:
        await pool.close()


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (folder / name).write_text(sql)
    return folder


@dataclass
class Scratch:
    """A throwaway database (not created yet) and a folder of migrations for it."""

    database: str
    folder: Path

    def write(self, files: dict[str, str]) -> None:
        """`files` (name: SQL) written into the folder, replacing any of the same name."""
        _write(self.folder, files)

    async def open(self) -> asyncpg.Pool:
        """open_database on the folder as it is now."""
        return await open_database(POSTGRES_DSN, self.database, self.folder)


@pytest.fixture
def scratch(tmp_path: Path, database_name: Callable[[], str]) -> Scratch:
    return Scratch(database_name(), tmp_path / "m")


@pytest.mark.parametrize("service", sorted(MIGRATIONS))
async def test_service_migrations_are_applied_once(
    service: str, database_name: Callable[[], str]
) -> None:
    name = database_name()
    assert not await _exists(name)

    pool = await open_service_database(POSTGRES_DSN, name, MIGRATIONS[service])

    assert await _exists(name)
    expected = load_migrations(MIGRATIONS[service])
    assert expected, f"{service} has no migrations"
    applied = await pool.fetch("SELECT version, name, applied_at FROM schema_migrations")
    assert sorted((r["version"], r["name"]) for r in applied) == [
        (m.version, m.name) for m in expected
    ]
    tables = {"orders", "processed_messages", "outbox", "schema_migrations"}
    assert tables | {"schema_migrations_service"} <= await _tables(name)

    # A second start applies nothing and leaves the record alone.
    second = await open_service_database(POSTGRES_DSN, name, MIGRATIONS[service])
    again = await second.fetch("SELECT version, name, applied_at FROM schema_migrations")
    assert sorted(map(tuple, again)) == sorted(map(tuple, applied))
    assert await migrate(second, expected) == []


async def test_only_new_migrations_are_applied(scratch: Scratch) -> None:
    scratch.write(
        {
            "001_counters.sql": "CREATE TABLE counters (name TEXT PRIMARY KEY, n INTEGER);",
            "002_seed.sql": "INSERT INTO counters VALUES ('seen', 0);",
        }
    )
    pool = await scratch.open()
    assert [r["version"] for r in await pool.fetch("SELECT version FROM schema_migrations")] == [
        1,
        2,
    ]

    # 002 is not run again (it would insert a duplicate key); only 003 is new.
    scratch.write({"003_more.sql": "ALTER TABLE counters ADD COLUMN note TEXT;"})
    assert await migrate(pool, load_migrations(scratch.folder)) == [3]
    assert await pool.fetchval("SELECT count(*) FROM counters") == 1
    assert await migrate(pool, load_migrations(scratch.folder)) == []
    names = await pool.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    assert [tuple(r) for r in names] == [(1, "counters"), (2, "seed"), (3, "more")]


async def test_failing_migration_is_rolled_back_and_not_recorded(scratch: Scratch) -> None:
    scratch.write(
        {
            "001_ok.sql": "CREATE TABLE first (id INTEGER);",
            "002_broken.sql": "CREATE TABLE second (id INTEGER); SELEC oops;",
        }
    )
    with pytest.raises(asyncpg.PostgresSyntaxError):
        await scratch.open()

    rows = await _fetch(scratch.database, "SELECT version FROM schema_migrations")
    assert [r["version"] for r in rows] == [1]
    tables = await _tables(scratch.database)
    assert "first" in tables
    assert "second" not in tables

    # Fixed, the next start applies the rest.
    scratch.write({"002_broken.sql": "CREATE TABLE second (id INTEGER);"})
    await scratch.open()
    assert {"first", "second"} <= await _tables(scratch.database)


async def test_replicas_starting_together_apply_each_migration_once(scratch: Scratch) -> None:
    # The database exists already (see the next test for creating it concurrently).
    await loupe.database.ensure_database(POSTGRES_DSN, scratch.database)
    scratch.write(
        {
            "001_log.sql": "CREATE TABLE log (line TEXT);",
            # Not idempotent: run twice, it would leave two rows.
            "002_entry.sql": "SELECT pg_sleep(0.2); INSERT INTO log VALUES ('migrated');",
        }
    )
    opened = await asyncio.gather(*(scratch.open() for _ in range(4)))
    assert await opened[0].fetchval("SELECT count(*) FROM log") == 1
    assert await opened[0].fetchval("SELECT count(*) FROM schema_migrations") == 2


BUG_CREATE_RACE = (
    "src/loupe/database.py ensure_database: two replicas creating the same database at once "
    "make PostgreSQL raise UniqueViolationError (pg_database_datname_index), not "
    "DuplicateDatabaseError, so one of them fails to start"
)


async def test_replicas_creating_the_database_together_all_start(
    database_name: Callable[[], str],
) -> None:
    name = database_name()
    results = await asyncio.gather(
        *(open_database(POSTGRES_DSN, name, MIGRATIONS["mes"]) for _ in range(8)),
        return_exceptions=True,
    )
    assert [r for r in results if isinstance(r, BaseException)] == []


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"001_a.sql": "", "003_c.sql": ""}, "without gaps"),
        ({"002_b.sql": ""}, "without gaps"),
        ({"001_a.sql": "", "001_again.sql": ""}, "without gaps"),
        ({"001_a.sql": "", "2_b.sql": ""}, r"must be named NNN_name\.sql"),
        ({"001-a.sql": ""}, r"must be named NNN_name\.sql"),
        ({"001_Init.sql": ""}, r"must be named NNN_name\.sql"),
        ({"init.sql": ""}, r"must be named NNN_name\.sql"),
        ({"0001_a.sql": ""}, r"must be named NNN_name\.sql"),
    ],
)
def test_bad_migration_folders_are_refused(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        load_migrations(_write(tmp_path / "m", files))
    assert str(tmp_path / "m") in str(raised.value)


def test_files_that_are_not_sql_are_ignored(tmp_path: Path) -> None:
    folder = _write(tmp_path / "m", {"001_a.sql": "SELECT 1;", "README.md": "", "002.txt": ""})
    assert [(m.version, m.name, m.sql) for m in load_migrations(folder)] == [(1, "a", "SELECT 1;")]


@pytest.mark.parametrize(
    "files", [{"001_a.sql": "", "003_c.sql": ""}, {"1_init.sql": "CREATE TABLE t (id INT);"}]
)
async def test_open_database_refuses_a_bad_folder_before_migrating(
    scratch: Scratch, files: dict[str, str]
) -> None:
    scratch.write(files)
    with pytest.raises(ValueError, match=r"without gaps|must be named NNN_name\.sql"):
        await scratch.open()
    assert await _tables(scratch.database) == set()


BUG_POOL_LEAK = (
    "src/loupe/database.py open_database: when the migrations are refused or fail, the pool "
    "it created is never closed; its connection stays open (and keeps reconnecting)"
)


async def test_open_database_closes_its_pool_when_migrations_are_refused(
    scratch: Scratch, pools: list[asyncpg.Pool]
) -> None:
    scratch.write({"2_b.sql": ""})
    with pytest.raises(ValueError):
        await scratch.open()
    assert len(pools) == 1
    connections = await _fetch(
        "postgres", "SELECT pid FROM pg_stat_activity WHERE datname = $1", scratch.database
    )
    assert connections == []
