"""The monitor's Prometheus metrics (loupe.monitor.metrics): the gauges `refresh` sets from the
database, read back from the text a scrape gets. The whole /metrics route, on the real
PostgreSQL, is in tests/monitor/test_app.py."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from loupe.monitor.broker import UNCONSUMED
from loupe.monitor.detection import PLACE
from loupe.monitor.metrics import DURATION_BUCKETS, FlowMetrics
from loupe.monitor.models import FindingKind
from tests.support.otlp_spans import slo

SLO = slo("SUBMITTED", "PRICE_CALCULATED")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class FakeDatabase:
    """Answers refresh()'s queries from memory: open findings per status and per service
    (broken orders and broken places apart; unroutable ones and queues with no consumer apart),
    the incidents' summary row (with each counted incident's times as arrays) and the last
    probes."""

    stuck: dict[str, int] = field(default_factory=dict)
    broken: dict[str, int] = field(default_factory=dict)
    places: dict[str, int] = field(default_factory=dict)
    unroutable: dict[str, int] = field(default_factory=dict)
    unconsumed: dict[str, int] = field(default_factory=dict)
    summary: dict[str, Any] = field(
        default_factory=lambda: {"open": 0, "resolved": 0, "ttd": None, "ttr": None}
    )
    probes: dict[str, bool] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeDatabase]:
        yield self

    async def fetch(self, query: str, *args: object) -> list[dict[str, Any]]:
        if "health_samples" in query:
            return [{"service": s, "ok": ok} for s, ok in self.probes.items()]
        if args == (FindingKind.STUCK,):
            return [{"status": s, "n": n} for s, n in self.stuck.items()]
        if args == (FindingKind.UNROUTABLE, UNCONSUMED):
            return [
                {"service": s, "unroutable": True, "n": n} for s, n in self.unroutable.items()
            ] + [{"service": s, "unroutable": False, "n": n} for s, n in self.unconsumed.items()]
        assert args == (FindingKind.BROKEN, PLACE), query
        return [{"service": s, "place": False, "n": n} for s, n in self.broken.items()] + [
            {"service": s, "place": True, "n": n} for s, n in self.places.items()
        ]

    async def fetchrow(self, query: str, *_: object) -> dict[str, Any]:
        assert "FROM incidents" in query
        return self.summary


async def scraped(metrics: FlowMetrics, database: FakeDatabase | None = None) -> Samples:
    """What a scrape reads, after a refresh from `database` when one is given."""
    if database is not None:
        await metrics.refresh(cast(asyncpg.Pool, database), SLO)
    text = generate_latest(metrics.registry).decode()
    families = text_string_to_metric_families(text)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


async def test_refresh_sets_the_gauges_from_the_database() -> None:
    database = FakeDatabase(
        # CLOSED is final (no SLO step): it never shows as a stuck step.
        stuck={"SUBMITTED": 2, "CLOSED": 5},
        broken={"crm-api": 1},
        places={"shop-api": 1},
        # Each incident's time to detect (array_agg: None over no incident); one found late.
        summary={"open": 3, "resolved": 1, "ttd": [10.0, 11.0, 600.0], "ttr": None},
        probes={"shop-api": True, "mes-api": False},
        unroutable={"partner-gateway": 2},
        unconsumed={"crm-api": 1},
    )
    seen = await scraped(FlowMetrics(), database)
    stuck = {labels: v for (name, labels), v in seen.items() if name == "loupe_orders_stuck"}
    # Every SLO step is there, at 0 when nothing waits at it, so dashboards see no gaps.
    assert stuck == {(("step", "SUBMITTED"),): 2, (("step", "PRICE_CALCULATED"),): 0}
    assert seen[("loupe_orders_broken", (("service", "crm-api"),))] == 1
    # A broken place is not an order.
    assert seen[("loupe_places_broken", (("service", "shop-api"),))] == 1
    assert ("loupe_orders_broken", (("service", "shop-api"),)) not in seen
    assert seen[("loupe_incidents_open", ())] == 3
    assert seen[("loupe_mttd_seconds", ())] == 207.0
    assert seen[("loupe_time_to_detect_median_seconds", ())] == 11.0
    assert seen[("loupe_time_to_detect_incidents", ())] == 3
    # No incident resolved in the window: not a made-up 0 s time to resolve.
    assert math.isnan(seen[("loupe_mttr_seconds", ())])
    assert math.isnan(seen[("loupe_time_to_resolve_median_seconds", ())])
    assert seen[("loupe_time_to_resolve_incidents", ())] == 0
    assert seen[("loupe_service_up", (("service", "shop-api"),))] == 1
    assert seen[("loupe_service_up", (("service", "mes-api"),))] == 0
    # What the broker shows, apart from the orders.
    assert seen[("loupe_unroutable_findings", (("service", "partner-gateway"),))] == 2
    assert seen[("loupe_queues_unconsumed", (("service", "crm-api"),))] == 1
    assert ("loupe_queues_unconsumed", (("service", "partner-gateway"),)) not in seen


async def test_a_service_no_longer_broken_leaves_the_gauge() -> None:
    metrics = FlowMetrics()
    database = FakeDatabase(broken={"crm-api": 2, "mes-api": 1}, stuck={"SUBMITTED": 4})
    await scraped(metrics, database)
    database.broken, database.stuck = {"mes-api": 1}, {}
    database.unconsumed = {"crm-api": 1}
    await scraped(metrics, database)
    database.unconsumed = {}
    seen = await scraped(metrics, database)
    assert not [name for name, _ in seen if name == "loupe_queues_unconsumed"]
    broken = {labels for name, labels in seen if name == "loupe_orders_broken"}
    assert broken == {(("service", "mes-api"),)}, "crm-api's old count must not linger"
    assert seen[("loupe_orders_stuck", (("step", "SUBMITTED"),))] == 0


async def test_spans_and_transitions_are_counted_in_the_documented_buckets() -> None:
    metrics = FlowMetrics()
    metrics.spans_received.labels(service="mes-api").inc(3)
    metrics.spans_kept.inc(2)
    metrics.transition_seconds.labels("SUBMITTED", "PRICE_CALCULATED").observe(7)
    seen = await scraped(metrics)
    assert seen[("loupe_monitor_spans_received_total", (("service", "mes-api"),))] == 3
    assert seen[("loupe_monitor_spans_kept_total", ())] == 2
    move = (("from_status", "SUBMITTED"), ("to_status", "PRICE_CALCULATED"))
    buckets = {
        dict(labels)["le"]: value
        for (name, labels), value in seen.items()
        if name == "loupe_order_transition_duration_seconds_bucket" and set(move) <= set(labels)
    }
    assert list(buckets) == [f"{float(b)}" for b in DURATION_BUCKETS] + ["+Inf"]
    assert (buckets["5.0"], buckets["10.0"], buckets["+Inf"]) == (0, 1, 1)


async def test_each_monitor_has_its_own_registry() -> None:
    # Several monitors in one process (tests, the benchmark) must not share or clash.
    first, second = FlowMetrics(), FlowMetrics()
    first.spans_received.labels(service="shop-api").inc()
    received = ("loupe_monitor_spans_received_total", (("service", "shop-api"),))
    assert (await scraped(first))[received] == 1
    assert received not in await scraped(second)
