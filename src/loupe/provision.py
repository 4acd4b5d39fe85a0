"""The set-up of least privilege (`loupe provision`, run by `make setup` and by every sandbox):
each process's broker user and database role, their passwords in the secrets folder, the
topology, each database owned by its own role and closed to the others, and the monitor's
read-only role for the CLI. Idempotent: what is already right is left alone.

It acts as the administrators of both servers, identities that only the set-up and the tests
use, never a running process: RabbitMQ's `loupe-admin` (made by scripts/setup-infra.sh, its
password in the secrets folder) and the PostgreSQL role of the OS user that runs the set-up
(peer authentication over the Unix socket; setup-infra.sh lets it create roles and databases).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika

from loupe import accounts
from loupe.accounts import Account
from loupe.config import DATABASE_OWNERS, SECRETS_DIR, Settings
from loupe.database import DatabaseAdmin
from loupe.environment import EnvSettings, Variable, part
from loupe.messaging.permissions import EVERYTHING, GRANTS, BrokerAdmin
from loupe.messaging.topology import declare_topology
from loupe.secretfiles import generated, password

GUEST = "guest"
"""RabbitMQ's built-in administrator, whose password everybody knows; `make setup` deletes it."""

RABBITMQ_ADMIN_USER = Variable(
    "LOUPE_RABBITMQ_ADMIN_USER",
    "loupe-admin",
    "RabbitMQ administrator of the set-up (`loupe provision`) and the tests, never of a running"
    " process; its password is in `LOUPE_SECRETS_DIR/rabbitmq/<user>`, both made by"
    " `scripts/setup-infra.sh`",
)
POSTGRES_ADMIN_DSN = Variable(
    "LOUPE_POSTGRES_ADMIN_DSN",
    "postgresql:///postgres?host=/var/run/postgresql",
    "PostgreSQL administrator of the set-up and the tests (creates roles and databases), never"
    " of a running process. Default: the OS user's own role over the Unix socket (peer"
    " authentication), which `scripts/setup-infra.sh` lets create roles and databases",
)


@dataclass(frozen=True)
class ProvisionSettings(EnvSettings):
    """The administrators' identities, and the shared settings (vhost, database names,
    secrets folder) of what they set up."""

    rabbitmq_admin_user: str = RABBITMQ_ADMIN_USER.field()
    postgres_admin_dsn: str = POSTGRES_ADMIN_DSN.field()
    # The administrator's own password file is here; the accounts' are in base.secrets_dir
    # (the same folder but in a sandbox, which keeps its accounts' passwords apart).
    secrets_dir: Path = SECRETS_DIR.field()
    base: Settings = part(Settings)

    @property
    def vhost(self) -> str:
        return accounts.vhost_of(self.base.amqp_url)

    @property
    def rabbitmq_admin_password(self) -> str:
        path = accounts.broker_password_file(self.secrets_dir, self.rabbitmq_admin_user)
        found = accounts.read_password(path)
        if found is None:
            raise ProvisionError(
                f"no password for RabbitMQ's administrator {self.rabbitmq_admin_user} in {path};"
                " run `make setup` (scripts/setup-infra.sh makes both)"
            )
        return found

    @property
    def admin_amqp_url(self) -> str:
        """LOUPE_AMQP_URL as the administrator (the tests' own broker connections)."""
        return accounts.signed_in(
            self.base.amqp_url, self.rabbitmq_admin_user, self.rabbitmq_admin_password
        )

    def broker_admin(self) -> BrokerAdmin:
        return BrokerAdmin(
            self.base.management_url, self.rabbitmq_admin_user, self.rabbitmq_admin_password
        )

    def database_admin(self) -> DatabaseAdmin:
        return DatabaseAdmin(self.postgres_admin_dsn)


class ProvisionError(Exception):
    """The set-up cannot go on; the text says why and what to do."""


@dataclass
class Provisioned:
    """What a run changed (nothing, on a machine already set up)."""

    broker_users: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


async def provision(settings: ProvisionSettings, *, retire: Sequence[str] = ()) -> Provisioned:
    """Sets up the vhost, its users, the topology and the databases with their roles.

    `retire` names broker users deleted at the end (`make setup`: `guest`, as nothing of loupe
    signs in as it once this has run); one that is gone already is fine."""
    if settings.rabbitmq_admin_user in retire:
        raise ProvisionError(
            f"the administrator {settings.rabbitmq_admin_user} cannot delete itself"
        )
    done = Provisioned()
    base, vhost = settings.base, settings.vhost
    admin = settings.broker_admin()
    await asyncio.to_thread(admin.ensure_vhost, vhost)
    await asyncio.to_thread(admin.grant, settings.rabbitmq_admin_user, EVERYTHING, vhost)
    for account in Account:
        user = accounts.broker_user(vhost, account)
        secret, _ = generated(accounts.broker_password_file(base.secrets_dir, user), password)
        if await asyncio.to_thread(admin.ensure_user, user, secret, GRANTS[account], vhost):
            done.broker_users.append(user)
    connection = await aio_pika.connect(settings.admin_amqp_url, timeout=10)
    try:
        await declare_topology(await connection.channel())
    finally:
        await connection.close()
    database = settings.database_admin()
    for owner in DATABASE_OWNERS:
        role = base.database_name(owner)
        secret, _ = generated(accounts.database_password_file(base.secrets_dir, role), password)
        await database.ensure_role(role, secret)
        await database.ensure_owned_database(role, role)
    secret, _ = generated(
        accounts.database_password_file(base.secrets_dir, base.reader_role), password
    )
    await database.ensure_role(base.reader_role, secret)
    monitor = base.database_name(Account.MONITOR)
    await database.grant_reader(monitor, monitor, base.reader_role)
    for user in retire:
        if await asyncio.to_thread(admin.delete_user, user):
            done.deleted.append(user)
    return done


async def unprovision(settings: ProvisionSettings) -> None:
    """Removes what `provision` made: the vhost and its users, the databases and their roles,
    their password files (a sandbox's end; never run on `make run`'s own)."""
    base, vhost = settings.base, settings.vhost
    admin = settings.broker_admin()
    for account in Account:
        await asyncio.to_thread(admin.delete_user, accounts.broker_user(vhost, account))
    await asyncio.to_thread(admin.delete_vhost, vhost)
    databases = [base.database_name(owner) for owner in DATABASE_OWNERS]
    await settings.database_admin().drop(databases, [*databases, base.reader_role])
    for path in base.password_files():
        path.unlink(missing_ok=True)
