"""Who signs in to RabbitMQ and PostgreSQL, under which name, with which password file.

Each process has an account of its own (least privilege: see messaging/permissions.py for what
each may do on the broker, database.py for the databases' roles, docs/security.md for the
threat model). Names are derived, so one set-up serves many sandboxes side by side: the
broker user of a process is `<vhost>-<process>`, the database role of a database is the
database's own name. Passwords are made by the set-up (`loupe provision`) into the secrets
folder, one file per account, mode 0600; a URL or DSN that names a user itself wins.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit


class Account(StrEnum):
    """A process that signs in to the broker (and, but for the portal, to a database)."""

    SHOP = "shop"
    CRM = "crm"
    MES = "mes"
    PORTAL = "portal"
    MONITOR = "monitor"


READER_SUFFIX = "_reader"
"""The read-only role of a database is `<database>_reader` (the CLI reads the monitor's)."""
BROKER_FOLDER = "rabbitmq"
DATABASE_FOLDER = "postgres"


def vhost_of(amqp_url: str) -> str:
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def broker_user(vhost: str, account: Account) -> str:
    return f"{vhost.strip('/') or 'default'}-{account.value}"


def broker_password_file(secrets_dir: Path, user: str) -> Path:
    return secrets_dir / BROKER_FOLDER / user


def database_password_file(secrets_dir: Path, role: str) -> Path:
    return secrets_dir / DATABASE_FOLDER / role


def read_password(path: Path) -> str | None:
    """The password kept in `path`; None when there is none (the server may then take the
    connection without one: PostgreSQL's peer authentication)."""
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def signed_in(url: str, user: str, password: str | None) -> str:
    """`url` with `user` (and `password`, when there is one) as its user-info; a URL that
    names a user already is returned as it is."""
    parts = urlsplit(url)
    if parts.username:
        return url
    host = parts.netloc
    info = quote(user, safe="")
    if password is not None:
        info += ":" + quote(password, safe="")
    return urlunsplit(parts._replace(netloc=f"{info}@{host}"))
