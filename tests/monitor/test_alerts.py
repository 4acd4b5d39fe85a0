"""Webhook alerts on real PostgreSQL, to a real local HTTP server: a detection tick queues one
delivery per URL per incident event; delivery retries with backoff until accepted, and gives
up after MAX_ATTEMPTS."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import httpx
import pytest

from loupe.monitor import alerts, detection, store
from loupe.monitor.alerts import MAX_ATTEMPTS, backoff, deliver_due
from loupe.monitor.models import IncidentState
from loupe.monitor.spans import decode
from tests.support.integration import POSTGRES_DSN
from tests.support.otlp_spans import Spans, ago, otlp, slo

pytestmark = pytest.mark.integration

CONSOLE = "https://loupe.example.com"

SLO = slo("SUBMITTED", "PRICE_CALCULATED")


def test_backoff_doubles_from_one_second_up_to_ten_minutes() -> None:
    assert [backoff(n).total_seconds() for n in range(0, 12)] == [
        1,
        1,
        2,
        4,
        8,
        16,
        32,
        64,
        128,
        256,
        512,
        600,
    ]
    assert backoff(MAX_ATTEMPTS) == timedelta(seconds=512)
    assert backoff(40) == alerts.MAX_DELAY == timedelta(minutes=10)
    # However many attempts a deployment allows, the delay stays a delay.
    assert backoff(1000) == alerts.MAX_DELAY


# -- a webhook receiver -----------------------------------------------------------------------


@dataclass
class Receiver:
    """Answers `statuses` in turn (then 200 for ever), recording every request."""

    statuses: list[int]
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def answer(self) -> int:
        return self.statuses.pop(0) if self.statuses else 200


@pytest.fixture
def receiver() -> Iterator[Callable[[list[int]], Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def start(statuses: list[int]) -> Receiver:
        state = Receiver(list(statuses))
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    state.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                    status = state.answer()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/loupe"
        return state

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def pool(database_name: Callable[[], str]) -> AsyncIterator[asyncpg.Pool]:
    pool = await store.open_store(POSTGRES_DSN, database_name())
    yield pool
    await pool.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        yield client


# -- incidents to alert about -----------------------------------------------------------------

_SPANS = Spans()


async def move(
    pool: asyncpg.Pool,
    service: str,
    order_id: str,
    status_from: str,
    status_to: str,
    seconds_ago: float,
    *,
    error: str | None = None,
) -> None:
    """One span of `service` moving `order_id`, through OTLP encoding into the store."""
    span = _SPANS.make(
        service,
        "step",
        ago(seconds_ago),
        order_id=order_id,
        move=(status_from, status_to),
        error=error,
    )
    kept, received = decode(otlp([span]))
    await store.ingest(pool, kept, SLO, received.total())


async def deliveries(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as connection:
        return await connection.fetch(
            "SELECT *, body::text AS text,"
            " extract(epoch FROM next_at - clock_timestamp())::float8 AS due_in"
            " FROM webhook_deliveries ORDER BY id"
        )


async def make_due(pool: asyncpg.Pool) -> None:
    """Skip the backoff wait: every delivery is due now."""
    async with pool.acquire() as connection:
        await connection.execute("UPDATE webhook_deliveries SET next_at = now()")


# -- the tests --------------------------------------------------------------------------------


async def test_a_delivery_is_retried_with_backoff_until_accepted(
    pool: asyncpg.Pool, http: httpx.AsyncClient, receiver: Callable[[list[int]], Receiver]
) -> None:
    hook = receiver([500, 500])
    await move(pool, "shop-api", "o-stuck", "NEW", "SUBMITTED", 40)
    tick = await detection.tick(pool, SLO, None, [hook.url], CONSOLE)
    (opened,) = tick.incidents_opened
    (row,) = await deliveries(pool)
    written = json.loads(row["text"])
    # The incident as the API shows it, and where to open it in the console.
    link = f"{CONSOLE}/incidents/{opened.id}"
    incident = opened.model_dump(mode="json")
    assert written == {"event": "incident.opened", "incident": {**incident, "console_url": link}}
    assert (written["incident"]["state"], written["incident"]["service"]) == ("stuck", "mes-api")
    assert written["incident"]["where"] == "queue mes.order-submitted"
    assert (row["url"], row["attempts"], row["delivered_at"]) == (hook.url, 0, None)

    # First attempt: 500. Retried after 1 s.
    assert await deliver_due(pool, http) == (0, 1)
    (row,) = await deliveries(pool)
    assert (row["attempts"], row["delivered_at"], row["last_error"]) == (1, None, "HTTP 500")
    assert row["due_in"] == pytest.approx(1.0, abs=0.5)
    # Not due yet: nothing is sent.
    assert await deliver_due(pool, http) == (0, 0)
    assert len(hook.requests) == 1

    # Second attempt: 500 again. Retried after 2 s.
    await make_due(pool)
    assert await deliver_due(pool, http) == (0, 1)
    (row,) = await deliveries(pool)
    assert (row["attempts"], row["last_error"]) == (2, "HTTP 500")
    assert row["due_in"] == pytest.approx(2.0, abs=0.5)

    # Third attempt: accepted.
    await make_due(pool)
    assert await deliver_due(pool, http) == (1, 0)
    (row,) = await deliveries(pool)
    assert row["attempts"] == 3 and row["delivered_at"] is not None
    assert row["last_error"] is None

    # Delivered once: never sent again.
    await make_due(pool)
    assert await deliver_due(pool, http) == (0, 0)
    assert len(hook.requests) == 3
    for request in hook.requests:
        assert request["path"] == "/hooks/loupe"
        assert request["headers"]["Content-Type"] == "application/json"
        assert request["headers"]["User-Agent"] == "loupe-monitor"
        assert json.loads(request["body"]) == written


async def test_a_tick_queues_one_delivery_per_url_per_event(
    pool: asyncpg.Pool,
    http: httpx.AsyncClient,
    receiver: Callable[[list[int]], Receiver],
) -> None:
    console = "https://console.example.org/"  # the monitor passes LOUPE_CONSOLE_URL
    first, second = receiver([]), receiver([])
    urls = [first.url, second.url]
    # Two incidents: one stuck order, one broken order at another place.
    await move(pool, "shop-api", "o-stuck", "NEW", "SUBMITTED", 40)
    await move(pool, "shop-api", "o-rejected", "NEW", "SUBMITTED", 5)
    await move(pool, "mes-api", "o-rejected", "SUBMITTED", "PRICE_CALCULATED", 4)
    await move(pool, "crm-api", "o-rejected", "PRICE_CALCULATED", "REJECTED", 3)
    tick = await detection.tick(pool, SLO, None, urls, console)
    assert len(tick.incidents_opened) == 2
    rows = await deliveries(pool)
    queued = sorted(
        (row["url"], json.loads(row["text"])["event"], json.loads(row["text"])["incident"]["id"])
        for row in rows
    )
    assert queued == sorted(
        (url, "incident.opened", incident.id) for url in urls for incident in tick.incidents_opened
    )
    assert sorted(json.loads(row["text"])["incident"]["console_url"] for row in rows) == sorted(
        f"https://console.example.org/incidents/{incident.id}"
        for url in urls
        for incident in tick.incidents_opened
    )

    # A tick with nothing new queues nothing.
    assert (await detection.tick(pool, SLO, None, urls, console)).incidents_opened == []
    assert len(await deliveries(pool)) == 4
    # Without URLs nothing is queued, whatever happens.
    await move(pool, "shop-api", "o-late", "NEW", "SUBMITTED", 31)
    await move(pool, "mes-api", "o-late-2", "SUBMITTED", "PRICE_CALCULATED", 45)
    assert len((await detection.tick(pool, SLO, None, [])).incidents_opened) == 1
    assert len(await deliveries(pool)) == 4

    # The stuck order moves on: its incident resolves, one event per URL.
    await move(pool, "mes-api", "o-stuck", "SUBMITTED", "PRICE_CALCULATED", 0.5)
    await move(pool, "mes-api", "o-late", "SUBMITTED", "PRICE_CALCULATED", 0.5)
    tick = await detection.tick(pool, SLO, None, urls, console)
    (resolved,) = tick.incidents_resolved
    bodies = [json.loads(row["text"]) for row in (await deliveries(pool))[4:]]
    assert [row["url"] for row in (await deliveries(pool))[4:]] == urls
    link = f"https://console.example.org/incidents/{resolved.id}"
    assert (
        bodies
        == [
            {
                "event": "incident.resolved",
                "incident": {**resolved.model_dump(mode="json"), "console_url": link},
            }
        ]
        * 2
    )
    assert resolved.status == IncidentState.RESOLVED and resolved.time_to_resolve_seconds
    assert resolved.time_to_resolve_seconds > 30

    assert await deliver_due(pool, http) == (6, 0)
    assert len(first.requests) == len(second.requests) == 3


async def test_delivery_stops_after_max_attempts(
    pool: asyncpg.Pool,
    http: httpx.AsyncClient,
    receiver: Callable[[list[int]], Receiver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook = receiver([503] * 100)
    await move(pool, "shop-api", "o-stuck", "NEW", "SUBMITTED", 40)
    await detection.tick(pool, SLO, None, [hook.url])
    for attempt in range(1, MAX_ATTEMPTS + 1):
        await make_due(pool)
        with caplog.at_level(logging.WARNING, "loupe.monitor.alerts"):
            assert await deliver_due(pool, http) == (0, 1), attempt
        (row,) = await deliveries(pool)
        assert row["attempts"] == attempt
    assert row["last_error"] == "HTTP 503" and row["delivered_at"] is None
    assert len(hook.requests) == MAX_ATTEMPTS
    # The URL's path is the webhook's credential: the logs name its host only.
    assert f"giving up after {MAX_ATTEMPTS} attempts" in caplog.text
    assert "/hooks/loupe" not in caplog.text
    assert f"{hook.url.rsplit('/hooks', 1)[0]}/***" in caplog.text

    # Given up: however long one waits, it is not sent again.
    await make_due(pool)
    assert await deliver_due(pool, http) == (0, 0)
    assert len(hook.requests) == MAX_ATTEMPTS
    (row,) = await deliveries(pool)
    assert row["attempts"] == MAX_ATTEMPTS


async def test_an_unreachable_url_counts_as_a_failed_attempt(
    pool: asyncpg.Pool, http: httpx.AsyncClient
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await move(pool, "shop-api", "o-stuck", "NEW", "SUBMITTED", 40)
    await detection.tick(pool, SLO, None, [f"http://127.0.0.1:{port}/hook/T0KEN"])
    assert await deliver_due(pool, http) == (0, 1)
    (row,) = await deliveries(pool)
    assert row["attempts"] == 1 and row["last_error"].startswith("ConnectError")
    assert "T0KEN" not in row["last_error"]
    assert row["due_in"] == pytest.approx(1.0, abs=0.5)
