"""Prometheus metrics of the order flow, served at /metrics on the monitor's own address."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from loupe.monitor.broker import UNCONSUMED
from loupe.monitor.detection import PLACE
from loupe.monitor.models import FindingKind
from loupe.monitor.slo import Slo
from loupe.monitor.store import incident_summary

# From a demo's seconds to the workshop's days.
DURATION_BUCKETS = (1, 2, 5, 10, 30, 60, 300, 1800, 3600, 4 * 3600, 8 * 3600, 86400, 3 * 86400)


class FlowMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.spans_received = Counter(
            "loupe_monitor_spans_received",
            "Spans received over OTLP, before the monitor's own filter, by the service that"
            " sent them (service.name).",
            ["service"],
            registry=self.registry,
        )
        self.spans_kept = Counter(
            "loupe_monitor_spans_kept",
            "Spans the monitor kept (they touch an order or failed).",
            registry=self.registry,
        )
        self.spans_unstorable = Counter(
            "loupe_monitor_spans_unstorable",
            "Kept spans with a value PostgreSQL cannot take as sent (reason: nul byte, too"
            " long, refused by PostgreSQL), by what became of them (outcome: cleaned and stored,"
            " or dropped).",
            ["reason", "outcome"],
            registry=self.registry,
        )
        self.spans_refused = Counter(
            "loupe_monitor_spans_refused",
            "Spans refused for their time or size (reason: in the future, older than retention,"
            " too large); the other spans of their request are stored. Also counted in spans"
            " received.",
            ["reason"],
            registry=self.registry,
        )
        self.requests_refused = Counter(
            "loupe_monitor_intake_refused",
            "OTLP requests the intake refused, by HTTP status: 401 no or a wrong token, 413 too"
            " large, 400 not OTLP, 415 another type or encoding, 503 the database unavailable"
            " (the sender retries).",
            ["status"],
            registry=self.registry,
        )
        self.transition_seconds = Histogram(
            "loupe_order_transition_duration_seconds",
            "Time an order spent at `from` before it moved to `to`.",
            ["from_status", "to_status"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.detection_latency = Histogram(
            "loupe_monitor_detection_latency_seconds",
            "From an order's SLO deadline (or error) to its finding.",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=self.registry,
        )
        self.stuck = Gauge(
            "loupe_orders_stuck",
            "Orders stuck now, by the status they wait at.",
            ["step"],
            registry=self.registry,
        )
        self.broken = Gauge(
            "loupe_orders_broken",
            "Orders (and unattributed dead letters) reported broken now, by service.",
            ["service"],
            registry=self.registry,
        )
        self.places_broken = Gauge(
            "loupe_places_broken",
            "Places reported broken now (requests there failed and created no order), by service.",
            ["service"],
            registry=self.registry,
        )
        self.queues_unconsumed = Gauge(
            "loupe_queues_unconsumed",
            "Work queues with messages and no consumer now, by the service that consumes them.",
            ["service"],
            registry=self.registry,
        )
        self.unroutable = Gauge(
            "loupe_unroutable_findings",
            "Unroutable findings now (messages no queue is bound for, per app, routing key and"
            " order), by publishing app.",
            ["service"],
            registry=self.registry,
        )
        self.incidents_open = Gauge(
            "loupe_incidents_open", "Incidents open now.", registry=self.registry
        )
        self.mttr = Gauge(
            "loupe_mttr_seconds",
            "Mean time to resolve, over incidents resolved in the last 7 days.",
            registry=self.registry,
        )
        self.mttd = Gauge(
            "loupe_mttd_seconds",
            "Mean time to detect, over incidents opened in the last 7 days.",
            registry=self.registry,
        )
        # The medians and counts beside the means: one outlier moves a mean, not a median.
        self.ttr_median = Gauge(
            "loupe_time_to_resolve_median_seconds",
            "Median time to resolve, over incidents resolved in the last 7 days.",
            registry=self.registry,
        )
        self.ttd_median = Gauge(
            "loupe_time_to_detect_median_seconds",
            "Median time to detect, over incidents opened in the last 7 days.",
            registry=self.registry,
        )
        self.ttr_incidents = Gauge(
            "loupe_time_to_resolve_incidents",
            "How many incidents the time to resolve is over (resolved in the last 7 days).",
            registry=self.registry,
        )
        self.ttd_incidents = Gauge(
            "loupe_time_to_detect_incidents",
            "How many incidents the time to detect is over (opened in the last 7 days).",
            registry=self.registry,
        )
        self.service_up = Gauge(
            "loupe_service_up",
            "1 when the service's last health probe passed.",
            ["service"],
            registry=self.registry,
        )

    async def refresh(self, pool: asyncpg.Pool, slo: Slo) -> None:
        """Set the gauges from the database (the state every replica shares)."""
        async with pool.acquire() as connection:
            stuck = await connection.fetch(
                "SELECT status, count(*) AS n FROM findings WHERE cleared_at IS NULL"
                " AND state = $1 GROUP BY status",
                FindingKind.STUCK,
            )
            broken = await connection.fetch(
                "SELECT service, starts_with(subject, $2) AS place, count(*) AS n"
                " FROM findings WHERE cleared_at IS NULL AND state = $1 GROUP BY 1, 2",
                FindingKind.BROKEN,
                PLACE,
            )
            shown = await connection.fetch(
                "SELECT service, state = $1 AS unroutable, count(*) AS n FROM findings"
                " WHERE cleared_at IS NULL AND (state = $1 OR starts_with(subject, $2))"
                " GROUP BY 1, 2",
                FindingKind.UNROUTABLE,
                UNCONSUMED,
            )
            summary = await incident_summary(connection, timedelta(days=7))
            probes = await connection.fetch(
                "SELECT DISTINCT ON (service) service, ok FROM health_samples"
                " ORDER BY service, at DESC"
            )
        counts = {r["status"]: r["n"] for r in stuck}
        for status in slo.steps:
            self.stuck.labels(step=status.value).set(counts.get(status.value, 0))
        self.broken.clear()
        self.places_broken.clear()
        for row in broken:
            gauge = self.places_broken if row["place"] else self.broken
            gauge.labels(service=row["service"]).set(row["n"])
        self.queues_unconsumed.clear()
        self.unroutable.clear()
        for row in shown:
            gauge = self.unroutable if row["unroutable"] else self.queues_unconsumed
            gauge.labels(service=row["service"]).set(row["n"])
        self.incidents_open.set(summary.open)
        detect, resolve = summary.time_to_detect, summary.time_to_resolve
        for gauge, seconds in (
            (self.mttr, resolve.mean_seconds),
            (self.mttd, detect.mean_seconds),
            (self.ttr_median, resolve.median_seconds),
            (self.ttd_median, detect.median_seconds),
        ):
            gauge.set(float("nan") if seconds is None else seconds)
        self.ttr_incidents.set(resolve.count)
        self.ttd_incidents.set(detect.count)
        for row in probes:
            self.service_up.labels(service=row["service"]).set(1 if row["ok"] else 0)
