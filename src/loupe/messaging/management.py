"""RabbitMQ's management HTTP API: the figures the broker keeps about a queue, and a look at
its messages without consuming them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from loupe.accounts import vhost_of
from loupe.messaging.consumer import order_id_of


@dataclass(frozen=True)
class QueueStats:
    name: str
    ready: int
    unacknowledged: int
    consumers: int

    def describe(self) -> str:
        return (
            f"queue {self.name}: {self.ready} ready, {self.unacknowledged} unacknowledged, "
            f"{self.consumers} consumer(s)"
        )


@dataclass(frozen=True)
class Peeked:
    """One message as a look at its queue (`Management.peek`) shows it: where it was published,
    by which app, when (where its publisher said), and the order it names, if any."""

    exchange: str
    routing_key: str
    app_id: str | None
    message_id: str | None
    published_at: datetime | None
    order_id: str | None
    # Where RabbitMQ itself dead-lettered it from, and why (its x-first-death-* headers; loupe
    # strips them from the copies it re-sends, so they are the broker's alone).
    died_in: str | None = None
    died_for: str | None = None
    died_at: datetime | None = None

    @classmethod
    def of(cls, item: dict[str, Any]) -> Peeked:
        properties = item.get("properties") or {}
        headers = properties.get("headers") or {}
        stamp = properties.get("timestamp")
        body = item.get("payload") if item.get("payload_encoding") == "string" else None
        return cls(
            exchange=str(item.get("exchange") or ""),
            routing_key=str(item.get("routing_key") or ""),
            app_id=properties.get("app_id") or None,
            message_id=properties.get("message_id") or None,
            published_at=datetime.fromtimestamp(stamp, UTC) if isinstance(stamp, int) else None,
            order_id=order_id_of(headers, body),
            died_in=headers.get("x-first-death-queue") or None,
            died_for=headers.get("x-first-death-reason") or None,
            died_at=min(deaths) if (deaths := _death_times(headers)) else None,
        )


def _death_times(headers: dict[str, Any]) -> list[datetime]:
    """When RabbitMQ dead-lettered the message, by its x-death entries (one per queue and
    reason)."""
    deaths = headers.get("x-death")
    entries = deaths if isinstance(deaths, list) else []
    return [
        datetime.fromtimestamp(entry["time"], UTC)
        for entry in entries
        if isinstance(entry, dict) and isinstance(entry.get("time"), int)
    ]


@dataclass(frozen=True)
class Management:
    """The API at `url`, for the virtual host and credentials of `amqp_url` (the management
    API takes the same user as AMQP)."""

    url: str
    amqp_url: str
    timeout: float = 5.0

    @property
    def vhost(self) -> str:
        return vhost_of(self.amqp_url)

    @property
    def credentials(self) -> tuple[str, str]:
        parts = urlsplit(self.amqp_url)
        if not parts.username:
            return "guest", "guest"  # as AMQP clients sign in when the URL names nobody
        return unquote(parts.username), unquote(parts.password or "")

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(auth=self.credentials, timeout=self.timeout, trust_env=False)

    def _queue_url(self, queue: str) -> str:
        return (
            f"{self.url.rstrip('/')}/api/queues/{quote(self.vhost, safe='')}/"
            f"{quote(queue, safe='')}"
        )

    async def problem(self) -> str | None:
        """Why the management API (and so, most likely, RabbitMQ) cannot be used now, in
        words; None when it answers for our virtual host."""
        # The vhost's queues by name, not the vhost itself, which only administrators may read.
        url = f"{self.url.rstrip('/')}/api/queues/{quote(self.vhost, safe='')}"
        try:
            async with self._client() as client:
                response = await client.get(url, params={"columns": "name"})
        except httpx.HTTPError as exc:
            return (
                f"RabbitMQ's management API at {self.url} cannot be reached ({type(exc).__name__})"
            )
        if response.status_code != 200:
            return f"RabbitMQ's management API at {self.url} answered {response.status_code}"
        return None

    async def queue_stats(self, queue: str) -> QueueStats | None:
        """None when the queue does not exist; httpx errors when the API cannot be reached."""
        async with self._client() as client:
            response = await client.get(self._queue_url(queue))
        if response.status_code == 404:
            return None
        response.raise_for_status()
        data = response.json()
        return QueueStats(
            name=queue,
            ready=int(data.get("messages_ready") or 0),
            unacknowledged=int(data.get("messages_unacknowledged") or 0),
            consumers=int(data.get("consumers") or 0),
        )

    async def peek(self, queue: str, count: int) -> list[dict[str, Any]]:
        """Up to `count` messages, each put straight back (ackmode ack_requeue_true)."""
        async with self._client() as client:
            response = await client.post(
                f"{self._queue_url(queue)}/get",
                json={
                    "count": count,
                    "ackmode": "ack_requeue_true",
                    "encoding": "auto",
                    "truncate": 100_000,
                },
            )
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return list(response.json())
