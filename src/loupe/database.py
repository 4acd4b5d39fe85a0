"""PostgreSQL for loupe's services: each owns one database, created and migrated by itself.

Migrations are numbered SQL files (`001_orders.sql`, …) in the service's `migrations/`
folder, applied in order, each in its own transaction, recorded in `schema_migrations`, under
an advisory lock so two starting replicas never race. A set several databases share (every
service's inbox and outbox, service/migrations/) is numbered on its own and recorded in
`schema_migrations_<its package>`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

log = logging.getLogger(__name__)

UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable; TimeoutError (a pool that cannot hand out) too
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08: the connection failed or was lost
    asyncpg.InsufficientResourcesError,  # 53: too many connections, out of memory or disk
    asyncpg.OperatorInterventionError,  # 57: shutting down, restarting, not accepting yet
    asyncpg.TransactionRollbackError,  # 40: serialization failure, deadlock
    # The connection closed under a statement or a transaction's end (PostgreSQL restarted),
    # or the pool is closing as the process stops.
    asyncpg.InterfaceError,
    # A pooled connection a restart cut off mid-statement, handed out again before the pool
    # noticed: "cannot switch to state 15; another operation (2) is in progress" (seen once in
    # the PostgreSQL-restart drill). The pool discards it as it comes back.
    asyncpg.InternalClientError,
)
"""Errors that mean "the database cannot answer now, ask again soon", not a bug: callers answer
them with 503 and Retry-After (HTTP) or a retry, never 500."""
RETRY_AFTER_SECONDS = 5
"""What a 503 for an UNAVAILABLE database tells clients to wait."""


_MIGRATION_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_MIGRATION_LOCK = 0x6C6F757065  # "loupe"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(folder: Path) -> list[Migration]:
    migrations = []
    for path in sorted(folder.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise ValueError(f"migration file {path} must be named NNN_name.sql")
        migrations.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations in {folder} must be numbered 001, 002, … without gaps")
    return migrations


def dsn_for(base_dsn: str, database: str) -> str:
    """The base DSN pointed at another database (the query string, e.g. host=, is kept)."""
    parts = urlsplit(base_dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def ensure_database(base_dsn: str, database: str) -> None:
    connection = await asyncpg.connect(dsn_for(base_dsn, "postgres"))
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            log.info("creating database %s", database)
            # Another service replica may create it first; that is fine.
            # (PostgreSQL reports a concurrent CREATE DATABASE as a unique violation.)
            with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                await connection.execute(f'CREATE DATABASE "{database}"')
    finally:
        await connection.close()


async def drop_database(connection: asyncpg.Connection, database: str, attempts: int = 20) -> None:
    """DROP DATABASE IF EXISTS … WITH (FORCE), retried for a while.

    FORCE ends other sessions, but an autovacuum worker that happens to be in the database
    cannot be ended by a role that is not superuser (PostgreSQL answers "must be a member of
    the role whose process is being terminated"); it is gone a moment later.
    """
    for attempt in range(1, attempts + 1):
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            return
        except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
            if attempt == attempts:
                raise
            await asyncio.sleep(0.25)


async def migrate(
    pool: asyncpg.Pool, migrations: list[Migration], record: str = "schema_migrations"
) -> list[int]:
    """Apply what is missing; returns the versions applied now. `record` is the table that
    remembers which were applied (a name from code, never from input)."""
    applied_now = []
    async with pool.acquire() as connection:
        await connection.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        try:
            await connection.execute(
                f"CREATE TABLE IF NOT EXISTS {record} ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await connection.fetch(f"SELECT version FROM {record}")}
            for migration in migrations:
                if migration.version in done:
                    continue
                async with connection.transaction():
                    await connection.execute(migration.sql)
                    await connection.execute(
                        f"INSERT INTO {record} (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
                log.info("applied migration %03d_%s", migration.version, migration.name)
                applied_now.append(migration.version)
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


async def _keep_session(_: asyncpg.Connection) -> None:
    """Release a connection to the pool without asyncpg's reset query.

    The services keep no session state (no SET, advisory locks released where taken; the
    outbox relay's LISTEN is on a connection it holds and removes before giving it back), so
    the default reset would only add a round trip, and a span, to every request.
    asyncpg still rolls back an unfinished transaction before calling this.
    """


async def open_database(
    base_dsn: str, database: str, migrations_folder: Path, *more_folders: Path
) -> asyncpg.Pool:
    """Create the database if needed, connect, migrate; the pool is ready for the service.

    `more_folders` are sets of migrations several databases share (each service's delivery
    bookkeeping); each is numbered on its own and recorded in `schema_migrations_<its
    package>`, applied before the database's own."""
    await ensure_database(base_dsn, database)
    pool = await asyncpg.create_pool(
        dsn_for(base_dsn, database), min_size=1, max_size=10, reset=_keep_session
    )
    try:
        for folder in more_folders:
            await migrate(pool, load_migrations(folder), f"schema_migrations_{folder.parent.name}")
        await migrate(pool, load_migrations(migrations_folder))
    except BaseException:
        await pool.close()
        raise
    return pool


# -- roles: one per database, set up by `loupe provision` as the set-up's administrator -------


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802, RFC 7677),
    made here so the password itself never reaches the server or its statement log."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class DatabaseAdmin:
    """PostgreSQL as the set-up's administrator (a role that may create roles and databases):
    one role per database, each database closed to every other role."""

    dsn: str

    @contextlib.asynccontextmanager
    async def _connected(self, database: str = "postgres") -> AsyncIterator[asyncpg.Connection]:
        connection = await asyncpg.connect(dsn_for(self.dsn, database))
        try:
            yield connection
        finally:
            await connection.close()

    async def ensure_role(self, role: str, password: str) -> None:
        """A role that may sign in with `password` and do nothing else of its own (no
        superuser, no new databases or roles); the administrator becomes a member, so that it
        can hand the role a database and what is in it."""
        async with self._connected() as admin:
            exists = await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            verifier = scram_verifier(password).replace("'", "''")
            if exists:
                # Only a superuser may even restate the attributes CREATE gave it.
                await admin.execute(f"ALTER ROLE {_ident(role)} WITH LOGIN PASSWORD '{verifier}'")
            else:
                await admin.execute(
                    f"CREATE ROLE {_ident(role)} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
                    f" NOREPLICATION PASSWORD '{verifier}'"
                )
            member = await admin.fetchval(
                "SELECT rolsuper OR pg_has_role(current_user, $1, 'MEMBER') FROM pg_roles"
                " WHERE rolname = current_user",
                role,
            )
            if not member:
                await admin.execute(f"GRANT {_ident(role)} TO current_user")

    async def ensure_owned_database(self, database: str, owner: str) -> None:
        """`database`, owned by `owner` with every table in it, and closed to every other
        role (PostgreSQL lets any role connect to any database unless told not to).

        A database made before roles existed (the administrator's) is handed over."""
        async with self._connected() as admin:
            exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
            if not exists:
                with contextlib.suppress(
                    asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError
                ):
                    await admin.execute(f"CREATE DATABASE {_ident(database)} OWNER {_ident(owner)}")
            await admin.execute(f"ALTER DATABASE {_ident(database)} OWNER TO {_ident(owner)}")
            await admin.execute(f"REVOKE ALL ON DATABASE {_ident(database)} FROM PUBLIC")
        async with self._connected(database) as inside:
            # Tables (their indexes and serial sequences follow) and views that migrations made
            # while the administrator owned the database.
            rows = await inside.fetch(
                "SELECT c.relname, c.relkind FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')"
                " AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = $1)",
                owner,
            )
            for row in rows:
                kind = {"v": "VIEW", "m": "MATERIALIZED VIEW"}.get(row["relkind"], "TABLE")
                await inside.execute(
                    f"ALTER {kind} public.{_ident(row['relname'])} OWNER TO {_ident(owner)}"
                )

    async def grant_reader(self, database: str, owner: str, reader: str) -> None:
        """`reader` may connect to `database` and read every table its owner has made or will
        make there, and nothing else."""
        async with self._connected() as admin:
            await admin.execute(f"GRANT CONNECT ON DATABASE {_ident(database)} TO {_ident(reader)}")
        async with self._connected(database) as inside:
            # As the owner, so that the default covers the tables its migrations make later.
            await inside.execute(f"SET ROLE {_ident(owner)}")
            await inside.execute(
                f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {_ident(reader)};"
                " ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES"
                f" TO {_ident(reader)}"
            )

    async def drop(self, databases: Iterable[str], roles: Iterable[str]) -> None:
        """Drops the databases, then the roles (what they were granted went with them)."""
        async with self._connected() as admin:
            for database in databases:
                await drop_database(admin, database)
            for role in roles:
                await admin.execute(f"DROP ROLE IF EXISTS {_ident(role)}")
