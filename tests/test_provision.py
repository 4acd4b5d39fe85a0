"""The set-up of least privilege against the real RabbitMQ and PostgreSQL: the session's
sandbox is set up as `make setup` sets up `make run`'s vhost and databases."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import asyncpg
import pytest
from aiormq.exceptions import ProbableAuthenticationError

from loupe.accounts import READER_SUFFIX, Account, signed_in
from loupe.config import Settings
from loupe.database import dsn_for
from loupe.messaging.permissions import EVERYTHING
from loupe.monitor import store
from loupe.provision import ProvisionSettings, provision, unprovision
from loupe.stack.sandbox import Sandbox
from tests.support.integration import SANDBOX, Broker

pytestmark = pytest.mark.integration


def _provisioning() -> ProvisionSettings:
    return SANDBOX.provisioning


async def _connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, timeout=10)


async def test_a_second_set_up_changes_nothing_and_takes_about_a_second(broker: Broker) -> None:
    began = time.monotonic()
    done = await provision(_provisioning())
    took = time.monotonic() - began
    # The passwords the broker keeps are checked against the secrets, not set again.
    assert done.broker_users == [] and done.deleted == []
    assert took < 5, f"a set-up with nothing to do took {took:.1f} s"


async def test_a_retired_administrator_is_deleted_and_then_refused(broker: Broker) -> None:
    """What `make setup` does to `guest` (`loupe provision --delete-guest`), done to a
    stand-in of the sandbox's own so that the shared broker's guest is left alone."""
    settings = _provisioning()
    stand_in = f"{SANDBOX.vhost}-guest"
    admin = settings.broker_admin()
    admin.ensure_user(stand_in, "guest", EVERYTHING, SANDBOX.vhost)
    url = signed_in(SANDBOX.settings.amqp_url, stand_in, "guest")
    await (await aio_pika.connect(url, timeout=10)).close()

    assert (await provision(settings, retire=[stand_in])).deleted == [stand_in]
    with pytest.raises(ProbableAuthenticationError):
        await aio_pika.connect(url, timeout=10)
    # A broker where it is gone already is fine.
    assert (await provision(settings, retire=[stand_in])).deleted == []


async def test_guest_is_refused_by_the_broker() -> None:
    """After `make setup`, RabbitMQ's built-in administrator is gone (`guest`/`guest`, which
    every local process knows)."""
    server = urlsplit(Settings.from_env().amqp_url)
    url = f"amqp://guest:guest@{server.hostname}:{server.port or 5672}/"
    with pytest.raises(ProbableAuthenticationError):
        await aio_pika.connect(url, timeout=10)


@pytest.mark.parametrize(
    ("role", "database"),
    [
        ("monitor", "shop"),
        ("monitor", "crm"),
        ("shop", "mes"),
        ("mes", "monitor"),
        ("monitor" + READER_SUFFIX, "shop"),
    ],
)
async def test_a_role_cannot_open_another_processs_database(role: str, database: str) -> None:
    settings = SANDBOX.settings
    name = settings.database_name(database)
    # Its own database opens (the role and its password are right)...
    own_database = settings.database_name(role.removesuffix(READER_SUFFIX))
    own = await _connect(settings.postgres_dsn_of(own_database, settings.database_name(role)))
    await own.close()
    # ...another's does not: closed to every role but its owner.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="CONNECT"):
        await _connect(settings.postgres_dsn_of(name, settings.database_name(role)))


@pytest.fixture
async def monitor_store() -> AsyncIterator[asyncpg.Pool]:
    """The sandbox's monitor database, migrated by the monitor's own role, as it starts."""
    settings = SANDBOX.settings
    database = settings.database_name(Account.MONITOR)
    pool = await store.open_store(settings.postgres_dsn_of(database), database)
    yield pool
    await pool.close()


async def test_the_clis_role_reads_the_monitors_tables_and_changes_nothing(
    monitor_store: asyncpg.Pool,
) -> None:
    settings = SANDBOX.settings
    database = settings.database_name(Account.MONITOR)
    reader = await _connect(settings.postgres_dsn_of(database, database + READER_SUFFIX))
    try:
        # Tables the monitor's migrations made after the set-up granted the reading.
        assert await reader.fetchval("SELECT count(*) FROM orders") >= 0
        assert await reader.fetchval("SELECT count(*) FROM incidents") >= 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.execute("DELETE FROM incidents")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.execute("CREATE TABLE planted (id int)")
    finally:
        await reader.close()


async def test_a_database_made_before_roles_is_handed_to_its_own_role(tmp_path: Path) -> None:
    """A machine set up before least privilege: the administrator's role made the shop's
    database and its migrations' tables. The set-up gives both to the shop's role."""
    sandbox = Sandbox(tmp_path)
    settings = sandbox.provisioning
    database = sandbox.settings.database_name("shop")
    admin = await _connect(settings.postgres_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    made = await _connect(dsn_for(settings.postgres_admin_dsn, database))
    try:
        await made.execute("CREATE TABLE orders (id text primary key)")
    finally:
        await made.close()
    try:
        await provision(settings)
        shop = await _connect(sandbox.settings.postgres_dsn_of(database))
        try:
            await shop.execute("INSERT INTO orders VALUES ('o-1')")
            owner = await shop.fetchval(
                "SELECT tableowner FROM pg_tables WHERE tablename = 'orders'"
            )
        finally:
            await shop.close()
        assert owner == database
    finally:
        await unprovision(settings)
