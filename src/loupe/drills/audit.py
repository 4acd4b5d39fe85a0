"""What a drill left behind, read from the ground truth: the services' own databases, the
monitor's database, and the span counters the services, Jaeger and the monitor publish."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime
from functools import reduce

import asyncpg
import httpx

from loupe.bench.measure import metric_sum
from loupe.config import SERVICE_NAMES, SERVICES, Settings
from loupe.drills.stack import LoupeUp
from loupe.monitor.models import FindingKind
from loupe.monitor.projection import TELEMETRY
from loupe.orders import OrderStatus
from loupe.orders.lifecycle import is_behind
from loupe.telemetry.delivery import SPANS_EXPORTED_METRIC, Exported, Kind

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
            settings.postgres_dsn_of(settings.database_name(service))
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
    service: str
    place: str
    state: str
    started_at: datetime
    opened_at: datetime
    resolved_at: datetime | None

    def describe(self) -> str:
        # A queue or an operation names its place; a service's telemetry needs the service.
        where = self.service if self.place == TELEMETRY else self.place
        detected = (self.opened_at - self.started_at).total_seconds()
        if self.resolved_at is None:
            return f"{self.state} at {where}: detected in {detected:.0f} s, still open"
        repaired = (self.resolved_at - self.started_at).total_seconds()
        return f"{self.state} at {where}: detected in {detected:.0f} s, MTTR {repaired:.0f} s"


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
    connection = await asyncpg.connect(settings.postgres_dsn_of(settings.database_name("monitor")))
    try:
        incidents = await connection.fetch(
            "SELECT service, place, state, started_at, opened_at, resolved_at FROM incidents"
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


PerService = dict[str, float]


def _delta(now: float, then: float) -> float:
    # A counter lower than before belongs to a restarted process: count it from zero.
    return now - then if now >= then else now


@dataclass(frozen=True)
class SpanCounters:
    """The services' monitored spans (those Jaeger forwards to the monitor) on each hop: sent by
    their exporters (or given up: held past their bounds through a collector outage, or dropped
    by a full batch queue before the exporter saw them), forwarded by
    Jaeger to the monitor (or dropped: failed to send or to queue), and received by the monitor
    from those services. Each counter restarts with its process, so the services' are kept
    apart."""

    sent: PerService
    given_up: PerService
    forwarded: float
    dropped: float
    received: PerService
    """By the service that sent them."""

    @property
    def lost(self) -> float:
        return sum(self.given_up.values()) + self.dropped

    @property
    def unreceived(self) -> list[str]:
        """Services that sent more spans than the monitor received from them."""
        return [s for s, n in self.sent.items() if self.received.get(s, 0.0) < n]

    def since(self, before: SpanCounters) -> SpanCounters:
        def each(now: PerService, then: PerService) -> PerService:
            return {s: _delta(n, then.get(s, 0.0)) for s, n in now.items()}

        return SpanCounters(
            each(self.sent, before.sent),
            each(self.given_up, before.given_up),
            _delta(self.forwarded, before.forwarded),
            _delta(self.dropped, before.dropped),
            each(self.received, before.received),
        )


def read_spans(loupe: LoupeUp) -> SpanCounters:
    settings = loupe.sandbox.settings
    exported = {
        SERVICE_NAMES[s]: httpx.get(f"{settings.service_urls[s]}/metrics", timeout=5).text
        for s in SERVICES
    }
    jaeger = httpx.get(f"http://127.0.0.1:{loupe.jaeger.metrics}/metrics", timeout=5).text
    monitor = httpx.get(f"{loupe.sandbox.monitor_url}/metrics", timeout=5).text

    def by_result(result: Exported, *kinds: Kind) -> PerService:
        return {
            name: sum(
                metric_sum(text, SPANS_EXPORTED_METRIC, {"result": result, "kind": kind})
                for kind in kinds
            )
            for name, text in exported.items()
        }

    return SpanCounters(
        # Jaeger forwards no others to the monitor.
        sent=by_result(Exported.SENT, Kind.MONITORED),
        # A span a full queue dropped may have been one it forwards: counted as lost.
        given_up=by_result(Exported.DROPPED, Kind.MONITORED, Kind.UNKNOWN),
        forwarded=metric_sum(jaeger, "otelcol_exporter_sent_spans_total", MONITOR_EXPORTER),
        dropped=metric_sum(jaeger, "otelcol_exporter_send_failed_spans_total", MONITOR_EXPORTER)
        + metric_sum(jaeger, "otelcol_exporter_enqueue_failed_spans_total", MONITOR_EXPORTER),
        received={
            name: metric_sum(monitor, "loupe_monitor_spans_received_total", {"service": name})
            for name in exported
        },
    )


def spans_since(loupe: LoupeUp, before: SpanCounters, patience: float = 20.0) -> SpanCounters:
    """The counters since `before`, with the monitor given up to `patience` seconds to receive
    what the services had sent when first read: spans keep flowing, and those a service had
    just sent are still in Jaeger's batch or on their way."""
    sent = read_spans(loupe).since(before)
    deadline = time.monotonic() + patience
    while True:
        later = read_spans(loupe).since(before)
        caught_up = all(later.received.get(s, 0.0) >= n for s, n in sent.sent.items())
        if caught_up or time.monotonic() > deadline:
            return replace(later, sent=sent.sent, given_up=sent.given_up)
        time.sleep(1)
