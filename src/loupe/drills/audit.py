"""What a drill left behind, read from the ground truth: the services' own databases, the
monitor's database, and the counters Jaeger and the monitor publish."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import reduce

import asyncpg
import httpx

from loupe.bench.measure import metric_sum
from loupe.config import SERVICES, Settings
from loupe.database import dsn_for
from loupe.drills.stack import LoupeUp
from loupe.monitor.models import FindingKind
from loupe.orders import OrderStatus
from loupe.orders.lifecycle import is_behind

MONITOR_EXPORTER = {"exporter": "otlphttp/monitor"}


def furthest(statuses: list[OrderStatus]) -> OrderStatus:
    """The most advanced of the views of one order (services follow each other)."""
    return reduce(lambda a, b: a if is_behind(a, b) else b, statuses)


@dataclass(frozen=True)
class Orders:
    """Each order's status as each service holds it; `source` from the first that has it."""

    views: dict[str, dict[str, OrderStatus]]
    """service -> order id -> status"""
    shop_created: dict[str, datetime]
    b2b_created: dict[str, datetime]

    def status(self, order_id: str) -> OrderStatus | None:
        held = [view[order_id] for view in self.views.values() if order_id in view]
        return furthest(held) if held else None

    def submitted_between(self, start: datetime, end: datetime) -> list[str]:
        created = {**self.shop_created, **self.b2b_created}
        return [order_id for order_id, at in created.items() if start <= at <= end]

    def lost(self, order_ids: list[str]) -> list[str]:
        """Accepted by the shop, in no later service."""
        later = self.views["mes"].keys() | self.views["crm"].keys()
        return [o for o in order_ids if o in self.shop_created and o not in later]

    def ghosts(self, shop_sourced: set[str]) -> list[str]:
        """In MES or CRM as a shop order, unknown to the shop."""
        return sorted(shop_sourced - self.shop_created.keys())


async def read_orders(settings: Settings) -> tuple[Orders, set[str], int]:
    """Every order in the sandbox's three databases, the ids MES and CRM hold as shop orders,
    and how many events still wait in the services' outboxes."""
    views: dict[str, dict[str, OrderStatus]] = {}
    created: dict[str, dict[str, datetime]] = {}
    shop_sourced: set[str] = set()
    waiting = 0
    # The shop last: an order the actors place meanwhile is then never in MES or CRM without
    # being in the shop as read, which would look like a ghost.
    for service in sorted(SERVICES, key=lambda s: s == "shop"):
        connection = await asyncpg.connect(
            dsn_for(settings.postgres_dsn, settings.database_name(service))
        )
        try:
            rows = await connection.fetch("SELECT id, source, status, created_at FROM orders")
            waiting += await connection.fetchval("SELECT count(*) FROM outbox")
        finally:
            await connection.close()
        views[service] = {r["id"]: OrderStatus(r["status"]) for r in rows}
        created[service] = {r["id"]: r["created_at"] for r in rows}
        if service != "shop":
            shop_sourced |= {r["id"] for r in rows if r["source"] == "shop"}
    b2b = {
        order_id: at
        for order_id, at in created["mes"].items()
        if order_id not in created["shop"] and order_id not in shop_sourced
    }
    return Orders(views, created["shop"], b2b), shop_sourced, waiting


@dataclass(frozen=True)
class Incident:
    place: str
    state: str
    started_at: datetime
    opened_at: datetime
    resolved_at: datetime | None

    def describe(self) -> str:
        detected = (self.opened_at - self.started_at).total_seconds()
        if self.resolved_at is None:
            return f"{self.state} at {self.place}: detected in {detected:.0f} s, still open"
        repaired = (self.resolved_at - self.started_at).total_seconds()
        return f"{self.state} at {self.place}: detected in {detected:.0f} s, MTTR {repaired:.0f} s"


@dataclass(frozen=True)
class StuckFinding:
    order_id: str
    status: OrderStatus
    since: datetime
    """When the order reached `status` (by the monitor's spans)."""


@dataclass(frozen=True)
class MonitorView:
    incidents: list[Incident]
    """Opened since the drill began."""
    stuck: list[StuckFinding]
    """Every open stuck finding about an order."""
    statuses: dict[str, OrderStatus]
    """The last status the monitor saw of each order."""

    def behind(self, orders: Orders, order_ids: list[str]) -> list[str]:
        """Orders whose last move the monitor has not seen: a span that never reached it."""
        return [o for o in order_ids if self.statuses.get(o) != orders.status(o)]


async def read_monitor(settings: Settings, since: datetime) -> MonitorView:
    connection = await asyncpg.connect(
        dsn_for(settings.postgres_dsn, settings.database_name("monitor"))
    )
    try:
        incidents = await connection.fetch(
            "SELECT place, state, started_at, opened_at, resolved_at FROM incidents"
            " WHERE opened_at >= $1 ORDER BY opened_at",
            since,
        )
        stuck = await connection.fetch(
            "SELECT order_id, status, since FROM findings WHERE cleared_at IS NULL AND state = $1"
            " AND order_id IS NOT NULL AND status IS NOT NULL",
            FindingKind.STUCK.value,
        )
        statuses = await connection.fetch(
            "SELECT order_id, status FROM orders WHERE status IS NOT NULL"
        )
    finally:
        await connection.close()
    return MonitorView(
        [Incident(**dict(r)) for r in incidents],
        [StuckFinding(r["order_id"], OrderStatus(r["status"]), r["since"]) for r in stuck],
        {r["order_id"]: OrderStatus(r["status"]) for r in statuses},
    )


def contradicted(
    orders: Orders, stuck: list[StuckFinding], since: datetime | None = None
) -> set[str]:
    """Orders reported stuck at a status the services' databases show they have left; with
    `since`, only those that reached it since then (what one drill caused)."""
    found = set()
    for finding in stuck:
        if since is not None and finding.since < since:
            continue
        actual = orders.status(finding.order_id)
        if (
            actual is not None
            and actual != finding.status
            and not is_behind(finding.status, actual)
        ):
            found.add(finding.order_id)
    return found


@dataclass(frozen=True)
class SpanCounters:
    """Order spans Jaeger forwarded to the monitor (sent, and lost on the way: failed to send or
    to queue), and what the monitor received. Counters restart with their process."""

    forwarded: float
    dropped: float
    received: float

    def since(self, before: SpanCounters) -> SpanCounters:
        # A counter lower than before belongs to a restarted process: count it from zero.
        def delta(now: float, then: float) -> float:
            return now - then if now >= then else now

        return SpanCounters(
            delta(self.forwarded, before.forwarded),
            delta(self.dropped, before.dropped),
            delta(self.received, before.received),
        )


def read_spans(loupe: LoupeUp) -> SpanCounters:
    jaeger = httpx.get(f"http://127.0.0.1:{loupe.jaeger.metrics}/metrics", timeout=5).text
    monitor = httpx.get(f"{loupe.sandbox.monitor_url}/metrics", timeout=5).text
    return SpanCounters(
        forwarded=metric_sum(jaeger, "otelcol_exporter_sent_spans_total", MONITOR_EXPORTER),
        dropped=metric_sum(jaeger, "otelcol_exporter_send_failed_spans_total", MONITOR_EXPORTER)
        + metric_sum(jaeger, "otelcol_exporter_enqueue_failed_spans_total", MONITOR_EXPORTER),
        received=metric_sum(monitor, "loupe_monitor_spans_received_total"),
    )
