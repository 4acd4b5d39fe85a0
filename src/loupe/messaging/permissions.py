"""What each account may do on RabbitMQ, derived from the topology (topology.py), and the
set-up that makes it so through the management API, as the broker's administrator.

RabbitMQ checks three permissions per resource, each a regular expression over names:
configure (declare, delete), write (publish to an exchange; bind a queue) and read (consume,
get, purge a queue; bind from an exchange). A passive declare, which the monitor uses to count
a queue's messages, needs none. The set-up declares the whole topology, so no account may
configure anything:

- a service publishes order events and its own retries and dead letters (write on the
  orders, retry and dead-letter exchanges) and consumes its own work queues (read);
- the portal reads the dead-letter queue and requeues a letter straight to its work queue
  through the default exchange (write on `amq.default`: it can reach every work queue, which
  requeueing needs); its management-API user lists letters (tag `management`);
- the monitor reads the unroutable and dead-letter queues through the management API, each
  message put straight back (read on both; tag `monitoring`), and publishes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from loupe.accounts import Account
from loupe.messaging.topology import (
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DEFAULT_EXCHANGE,
    ORDERS_EXCHANGE,
    QUEUES,
    RETRY_EXCHANGE,
    UNROUTABLE_QUEUE,
)

NOTHING = "^$"
"""RabbitMQ's way of saying no name: an empty expression would match every name."""
ADMINISTRATOR = "administrator"
MONITORING = "monitoring"
MANAGEMENT = "management"


def exactly(names: Iterable[str]) -> str:
    """A permission expression matching these names and no other."""
    listed = sorted(set(names))
    if not listed:
        return NOTHING
    return "^(" + "|".join(re.escape(name) for name in listed) + ")$"


@dataclass(frozen=True)
class Grant:
    """One account's permissions in its vhost, and its user tags."""

    configure: str
    write: str
    read: str
    tags: tuple[str, ...] = ()

    def permissions(self) -> dict[str, str]:
        return {"configure": self.configure, "write": self.write, "read": self.read}


def _service_grant(service: str) -> Grant:
    return Grant(
        configure=NOTHING,
        write=exactly((ORDERS_EXCHANGE, RETRY_EXCHANGE, DEAD_LETTER_EXCHANGE)),
        read=exactly(spec.name for spec in QUEUES.values() if spec.service == service),
    )


GRANTS: dict[Account, Grant] = {
    Account.SHOP: _service_grant(Account.SHOP),
    Account.CRM: _service_grant(Account.CRM),
    Account.MES: _service_grant(Account.MES),
    Account.PORTAL: Grant(
        configure=NOTHING,
        write=exactly((DEFAULT_EXCHANGE,)),
        read=exactly((DEAD_LETTER_QUEUE,)),
        tags=(MANAGEMENT,),
    ),
    Account.MONITOR: Grant(
        configure=NOTHING,
        write=NOTHING,
        read=exactly((UNROUTABLE_QUEUE, DEAD_LETTER_QUEUE)),
        tags=(MONITORING,),
    ),
}
EVERYTHING = Grant(configure=".*", write=".*", read=".*", tags=(ADMINISTRATOR,))
"""The set-up's administrator, in every vhost it sets up."""


def password_matches(password: str, stored_hash: str, algorithm: str) -> bool:
    """Whether `password` is the one behind the broker's stored hash (RabbitMQ keeps a 4-byte
    salt followed by the digest of salt and password), so a set-up that runs again changes
    nothing that is right."""
    digests = {
        "rabbit_password_hashing_sha256": hashlib.sha256,
        "rabbit_password_hashing_sha512": hashlib.sha512,
        "rabbit_password_hashing_md5": hashlib.md5,
    }
    digest = digests.get(algorithm)
    if digest is None or not stored_hash:
        return False
    try:
        raw = base64.b64decode(stored_hash)
    except ValueError:
        return False
    salt, kept = raw[:4], raw[4:]
    return digest(salt + password.encode()).digest() == kept


@dataclass(frozen=True)
class BrokerAdmin:
    """The management API as the set-up's administrator: vhosts, users and permissions, each
    changed only when it differs from what is wanted."""

    url: str
    user: str
    password: str
    timeout: float = 10.0

    def _client(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.url.rstrip('/')}/api",
            auth=(self.user, self.password),
            timeout=self.timeout,
            trust_env=False,
        )

    def ensure_vhost(self, vhost: str) -> None:
        with self._client() as client:
            path = f"/vhosts/{quote(vhost, safe='')}"
            if client.get(path).status_code == 404:
                client.put(path).raise_for_status()

    def ensure_user(self, user: str, password: str, grant: Grant, vhost: str) -> bool:
        """The user with this password, tags and permissions in `vhost`; True when anything
        had to change."""
        changed = False
        with self._client() as client:
            path = f"/users/{quote(user, safe='')}"
            found = client.get(path)
            if found.status_code == 404:
                current: dict[str, object] = {}
            else:
                found.raise_for_status()
                current = found.json()
            tags = current.get("tags") or []
            tags = tags.split(",") if isinstance(tags, str) else list(tags)  # 3.10: a string
            same_password = password_matches(
                password,
                str(current.get("password_hash") or ""),
                str(current.get("hashing_algorithm") or ""),
            )
            if not same_password or sorted(t for t in tags if t) != sorted(grant.tags):
                client.put(
                    path, json={"password": password, "tags": ",".join(grant.tags)}
                ).raise_for_status()
                changed = True
        return self.grant(user, grant, vhost) or changed

    def grant(self, user: str, grant: Grant, vhost: str) -> bool:
        """The user's permissions in `vhost` as `grant` says; True when they had to change."""
        path = f"/permissions/{quote(vhost, safe='')}/{quote(user, safe='')}"
        wanted = grant.permissions()
        with self._client() as client:
            held = client.get(path)
            if held.status_code != 404 and {k: held.json().get(k) for k in wanted} == wanted:
                return False
            client.put(path, json=wanted).raise_for_status()
        return True

    def delete_user(self, user: str) -> bool:
        """True when the user existed."""
        with self._client() as client:
            response = client.delete(f"/users/{quote(user, safe='')}")
        if response.status_code == 404:
            return False
        response.raise_for_status()
        return True

    def delete_vhost(self, vhost: str) -> None:
        with self._client() as client:
            response = client.delete(f"/vhosts/{quote(vhost, safe='')}")
        if response.status_code != 404:
            response.raise_for_status()
