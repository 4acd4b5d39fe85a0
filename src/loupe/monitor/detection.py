"""Detection, run every tick: orders past their SLO are stuck, orders with an error and no
progress after it (or FAILED, REJECTED, dead-lettered) are broken, and so is a place whose
requests failed without creating an order; what RabbitMQ shows (broker.py) is found at once:
unroutable messages, a work queue with messages and no consumer. Findings that share a place
make one incident, which resolves itself once orders flow through that place again (or, for
the broker's, once the broker shows the condition gone)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
import httpx

from loupe.config import DEFAULT_CONSOLE_URL
from loupe.messaging.management import Management, QueueStats
from loupe.monitor import broker, rows
from loupe.monitor.broker import BrokerView, BrokerWatch
from loupe.monitor.models import (
    Alert,
    AlertEvent,
    Finding,
    FindingKind,
    Incident,
    LastStep,
    LinkedIncident,
)
from loupe.monitor.projection import BROKEN_STATUSES, TELEMETRY, place_key
from loupe.monitor.settings import STUCK_HORIZON_HOURS, TELEMETRY_GAP_SECONDS
from loupe.monitor.slo import Slo, Step
from loupe.monitor.store import ALL_DISMISSED, writing
from loupe.telemetry.delivery import HELD_SECONDS_MAX

log = logging.getLogger(__name__)

DEFAULT_STUCK_HORIZON = timedelta(hours=STUCK_HORIZON_HOURS.default)
PLACE = "place:"
DEFAULT_TELEMETRY_GAP = timedelta(seconds=TELEMETRY_GAP_SECONDS.default)
# How long a stuck order may wait for its silent service to be heard: the services'
# exporters give up a span they could not send for this long, so a move older than that
# will never be told.
SILENCE_HELD_MAX = timedelta(seconds=HELD_SECONDS_MAX)
# A service is down by its probes when this many in a row failed: one that timed out on a
# loaded machine says little, a frozen or dead service fails every one.
PROBES_DOWN = 2
# How long after an order's row last changed its broken finding may still follow the move's
# origin: the services export within seconds of each other (OTEL_BSP_SCHEDULE_DELAY, 5 s).
ORIGIN_GRACE = timedelta(minutes=1)
"""A broken place's finding's subject starts so, then its place key (projection.place_key)."""
# Failed requests that named no order (or only the order they failed to create), per place:
# how many since a request last passed there ($2: the place subject's prefix). Only places
# the monitor has seen a request pass (in `flow`): it receives only spans that name an order
# or failed, so elsewhere (a list, a download) it could never see the place work again.
# Leaves out a failure whose trace names an order elsewhere (that order's error, judged as
# such) and the failures an open finding of the place, or one closed for good since, stands
# for.
_FAILED_PLACES = """
SELECT e.service, e.place, count(*) AS failures, min(e.at) AS since,
  (array_agg(e.trace_id ORDER BY e.at DESC))[1] AS trace_id,
  (array_agg(e.message ORDER BY e.at DESC))[1] AS message
FROM errors e
JOIN flow w ON w.place_key = e.service || '|' || e.place
LEFT JOIN findings f ON f.subject = $2 || e.service || '|' || e.place AND f.cleared_at IS NULL
WHERE e.order_id IS NULL AND e.kind = 'SERVER' AND NOT e.dead_lettered AND NOT e.refusal
  AND e.at > w.last_at AND f.id IS NULL
  AND NOT EXISTS (SELECT 1 FROM findings c WHERE c.subject = $2 || e.service || '|' || e.place
    AND c.cleared_reason IS NOT NULL AND c.cleared_at >= e.at)
  AND NOT EXISTS (SELECT 1 FROM errors o WHERE o.trace_id = e.trace_id AND o.order_id IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM transitions t WHERE t.trace_id = e.trace_id)
GROUP BY e.service, e.place
HAVING min(e.at) <= $1
"""
# A finding closed for good (`cleared_reason` set: expired, dismissed, acknowledged) of order
# `o` at the status it is still at. It stands for the order there: the order is not reported
# again as the same kind while it stays, and retention forgets it like a settled order.
_CLOSED_FOR_ORDER = (
    "f.subject = o.order_id AND f.cleared_reason IS NOT NULL"
    " AND f.status IS NOT DISTINCT FROM o.status"
)


def _unreported(now: str) -> str:
    """SQL: order `o` has no open finding, nor one closed for good of the kind it is due as
    at `now` (an SQL expression): broken once its broken time has come, else stuck."""
    return (
        f"NOT EXISTS (SELECT 1 FROM findings f WHERE f.subject = o.order_id"
        f" AND (f.cleared_at IS NULL OR ({_CLOSED_FOR_ORDER}"
        f" AND (f.state = '{FindingKind.BROKEN}') = coalesce(o.broken_at <= {now}, false))))"
    )


@dataclass
class TickResult:
    opened: list[Finding] = field(default_factory=list)
    cleared: int = 0
    incidents_opened: list[Incident] = field(default_factory=list)
    incidents_resolved: list[Incident] = field(default_factory=list)
    # stuck findings cleared because their order had been silent past the horizon
    expired: list[Finding] = field(default_factory=list)
    # seconds from each new finding's deadline to its detection
    latencies: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class _Finding:
    subject: str
    order_id: str | None
    state: FindingKind
    status: str | None
    since: datetime
    deadline: datetime
    service: str
    place: str
    trace_id: str | None
    evidence: str
    settled: bool
    last_step: LastStep | None = None

    @property
    def flow_key(self) -> str:
        if self.state == FindingKind.STUCK and self.status:
            return f"step:{self.status}"
        return place_key(self.service, self.place)


class QueueEvidence:
    """Queue figures from RabbitMQ's management API, asked at most once per queue per tick."""

    def __init__(self, management: Management | None) -> None:
        self._management = management
        self._seen: dict[str, str] = {}

    async def describe(self, queue: str) -> str:
        if queue not in self._seen:
            self._seen[queue] = await self._ask(queue)
        return self._seen[queue]

    async def prefetch(self, queues: Iterable[str]) -> None:
        """Ask for these queues now, all at once, so that describing them later waits on
        nothing."""
        wanted = sorted(set(queues) - self._seen.keys())
        for queue, described in zip(
            wanted, await asyncio.gather(*(self._ask(q) for q in wanted)), strict=True
        ):
            self._seen[queue] = described

    async def _ask(self, queue: str) -> str:
        if self._management is None:
            return f"queue {queue}: no figures (no RabbitMQ management API configured)"
        try:
            stats: QueueStats | None = await self._management.queue_stats(queue)
        except httpx.HTTPError as exc:
            return f"queue {queue}: RabbitMQ management API unreachable ({type(exc).__name__})"
        if stats is None:
            return f"queue {queue} does not exist"
        return stats.describe()


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


async def _stuck(
    connection: asyncpg.Connection,
    order: asyncpg.Record,
    slo: Slo,
    queues: QueueEvidence,
    now: datetime,
) -> _Finding:
    step = slo.step(order["status"])
    assert step is not None
    has_it = await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM transitions WHERE order_id = $1 AND status_to = $2"
        " AND service = $3)",
        order["order_id"],
        order["status"],
        step.service,
    )
    where = step.where(bool(has_it))
    waited = (now - order["status_at"]).total_seconds()
    within = _age(step.within.total_seconds())
    evidence = (
        f"no move from {order['status']} for {_age(waited)} (SLO {within}); "
        f"last step by {order['service']} ({order['operation']})"
    )
    if where.startswith("queue ") and step.queue:
        evidence += f"; {await queues.describe(step.queue)}"
    return _Finding(
        subject=order["order_id"],
        order_id=order["order_id"],
        state=FindingKind.STUCK,
        status=order["status"],
        since=order["status_at"],
        deadline=order["deadline"],
        service=step.service,
        place=where,
        trace_id=order["trace_id"],
        evidence=evidence,
        settled=False,
        last_step=rows.last_step(order),
    )


async def _broken(connection: asyncpg.Connection, order: asyncpg.Record) -> _Finding:
    final = order["status"] in BROKEN_STATUSES
    if final:
        # The failure itself: the span that failed the order, else the first dead letter.
        error = await connection.fetchrow(
            "SELECT * FROM errors WHERE order_id = $1 AND NOT refusal ORDER BY"
            " (trace_id = $2 AND span_id = $3) DESC, dead_lettered DESC, at LIMIT 1",
            order["order_id"],
            order["trace_id"],
            order["span_id"],
        )
        reason = await connection.fetchval(
            "SELECT failure_reason FROM transitions WHERE order_id = $1 AND status_to = $2"
            " AND failure_reason IS NOT NULL ORDER BY at LIMIT 1",
            order["order_id"],
            order["status"],
        )
        evidence = f"{order['status']}: {reason or (error['message'] if error else 'no reason')}"
        since = order["status_at"]
    else:
        error = await connection.fetchrow(
            "SELECT * FROM errors WHERE order_id = $1 AND NOT refusal"
            " AND ($2::timestamptz IS NULL OR at > $2)"
            " ORDER BY dead_lettered DESC, at DESC LIMIT 1",
            order["order_id"],
            order["status_at"] if order["status"] else None,
        )
        assert error is not None
        evidence = ("dead-lettered: " if error["dead_lettered"] else "") + error["message"]
        since = error["at"]
    if error is not None:
        service, place, trace_id = error["service"], error["place"], error["trace_id"]
    else:
        service, place, trace_id = order["service"], order["operation"], order["trace_id"]
    return _Finding(
        subject=order["order_id"],
        order_id=order["order_id"],
        state=FindingKind.BROKEN,
        status=order["status"],
        since=since,
        deadline=order["broken_at"],
        service=service,
        place=place,
        trace_id=trace_id,
        evidence=evidence,
        settled=final,
        last_step=rows.last_step(order),
    )


async def _incident_for(
    connection: asyncpg.Connection, finding: _Finding, now: datetime, result: TickResult
) -> asyncpg.Record:
    """The open incident at the finding's place, opened now if there is none."""
    incident = await connection.fetchrow(
        "SELECT * FROM incidents WHERE state = $1 AND service = $2 AND place = $3"
        " AND resolved_at IS NULL",
        finding.state,
        finding.service,
        finding.place,
    )
    if incident is None:
        incident = await connection.fetchrow(
            "INSERT INTO incidents (state, service, place, flow_key, started_at, opened_at,"
            " deadline_at, last_since) VALUES ($1, $2, $3, $4, $5, $6, $7, $5) RETURNING *",
            finding.state,
            finding.service,
            finding.place,
            finding.flow_key,
            finding.since,
            now,
            finding.deadline,
        )
        result.incidents_opened.append(rows.incident(incident, 1))
    else:
        await connection.execute(
            "UPDATE incidents SET started_at = least(started_at, $2),"
            " deadline_at = least(deadline_at, $3), last_since = greatest(last_since, $2)"
            " WHERE id = $1",
            incident["id"],
            finding.since,
            finding.deadline,
        )
    return incident


async def _record(
    connection: asyncpg.Connection, finding: _Finding, now: datetime, result: TickResult
) -> None:
    incident = await _incident_for(connection, finding, now, result)
    row = await connection.fetchrow(
        "INSERT INTO findings (subject, order_id, state, status, since, deadline, service, place,"
        " trace_id, evidence, settled, detected_at, incident_id, last_step)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb)"
        " RETURNING *",
        finding.subject,
        finding.order_id,
        finding.state,
        finding.status,
        finding.since,
        finding.deadline,
        finding.service,
        finding.place,
        finding.trace_id,
        finding.evidence,
        finding.settled,
        now,
        incident["id"],
        finding.last_step.model_dump_json() if finding.last_step else None,
    )
    result.opened.append(rows.finding(row))
    result.latencies.append(max((now - finding.deadline).total_seconds(), 0.0))


async def _follow_origins(
    connection: asyncpg.Connection, now: datetime, result: TickResult
) -> None:
    """A broken order is reported from the first span of its final status to arrive, which
    may be a copy following the move (a view mirroring MES's FAILED, its span exported first).
    When the move's own span arrives, the order's row changes and the finding follows it to the
    place that failed; an incident left with no finding resolves as one that never was."""
    moved = await connection.fetch(
        "SELECT o.*, f.id AS finding_id, f.incident_id AS finding_incident,"
        " f.service AS finding_service, f.place AS finding_place,"
        " f.trace_id AS finding_trace_id, f.evidence AS finding_evidence"
        " FROM findings f JOIN orders o ON o.order_id = f.order_id"
        " WHERE f.cleared_at IS NULL AND f.settled AND f.state = $1"
        " AND o.updated_at > f.detected_at AND o.updated_at > $2",
        FindingKind.BROKEN,
        now - ORIGIN_GRACE,
    )
    for row in moved:
        finding = await _broken(connection, row)
        was = (
            row["finding_service"],
            row["finding_place"],
            row["finding_trace_id"],
            row["finding_evidence"],
        )
        if (finding.service, finding.place, finding.trace_id, finding.evidence) == was:
            continue
        incident = await _incident_for(connection, finding, now, result)
        await connection.execute(
            "UPDATE findings SET service = $2, place = $3, trace_id = $4, evidence = $5,"
            " incident_id = $6 WHERE id = $1",
            row["finding_id"],
            finding.service,
            finding.place,
            finding.trace_id,
            finding.evidence,
            incident["id"],
        )
        log.info(
            "the finding of order %s follows its origin to %s / %s",
            finding.order_id,
            finding.service,
            finding.place,
        )
        emptied = await connection.fetchrow(
            "UPDATE incidents i SET resolved_at = $2, dismissed = true"
            " WHERE i.id = $1 AND i.id <> $3 AND i.resolved_at IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM findings f WHERE f.incident_id = i.id)"
            " RETURNING i.*",
            row["finding_incident"],
            now,
            incident["id"],
        )
        if emptied is not None:
            result.incidents_resolved.append(rows.incident(emptied, 0))


async def _broker_findings(
    connection: asyncpg.Connection, view: BrokerView, now: datetime, result: TickResult
) -> None:
    """Opens a finding for each condition the broker shows that has none (unless one was
    closed for good while it held), updates the evidence of those open (counts change), and
    clears those whose condition is gone: the place works again, as far as the broker can
    tell, so their incident may resolve."""
    wanted = {c.subject: c for c in broker.conditions(view)}
    subjects = list(wanted)
    await connection.execute(
        "DELETE FROM broker_conditions WHERE NOT (subject = ANY($1::text[]))", subjects
    )
    await connection.executemany(
        "INSERT INTO broker_conditions (subject, since) VALUES ($1, $2)"
        " ON CONFLICT (subject) DO NOTHING",
        [(c.subject, min(c.since or now, now)) for c in wanted.values()],
    )
    gone = await connection.fetch(
        "UPDATE findings f SET cleared_at = $1 WHERE f.cleared_at IS NULL"
        " AND EXISTS (SELECT 1 FROM unnest($2::text[]) p WHERE starts_with(f.subject, p))"
        " AND NOT (f.subject = ANY($3::text[])) RETURNING f.service, f.place",
        now,
        list(broker.SUBJECTS),
        subjects,
    )
    result.cleared += len(gone)
    if gone:
        await connection.executemany(
            "INSERT INTO flow (place_key, last_at) VALUES ($1, $2) ON CONFLICT (place_key)"
            " DO UPDATE SET last_at = greatest(flow.last_at, excluded.last_at)",
            [(place_key(r["service"], r["place"]), now) for r in gone],
        )
    await connection.executemany(
        "UPDATE findings SET evidence = $2 WHERE subject = $1 AND cleared_at IS NULL"
        " AND evidence <> $2",
        [(c.subject, c.evidence) for c in wanted.values()],
    )
    due = await connection.fetch(
        "SELECT c.subject, c.since FROM broker_conditions c WHERE c.subject = ANY($1::text[])"
        " AND NOT EXISTS (SELECT 1 FROM findings f WHERE f.subject = c.subject"
        "   AND (f.cleared_at IS NULL OR (f.cleared_reason IS NOT NULL"
        "     AND f.cleared_at >= c.since)))"
        " ORDER BY c.since, c.subject",
        subjects,
    )
    for row in due:
        condition = wanted[row["subject"]]
        finding = _Finding(
            subject=condition.subject,
            order_id=condition.order_id,
            state=condition.state,
            status=None,
            since=row["since"],
            # The broker shows it at once: no deadline to wait for.
            deadline=row["since"],
            service=condition.service,
            place=condition.place,
            trace_id=None,
            evidence=condition.evidence,
            settled=False,
        )
        await _record(connection, finding, now, result)


async def _hearing(connection: asyncpg.Connection) -> tuple[dict[str, datetime], set[str]]:
    """Up to when the monitor has heard from each service that sends heartbeats, and the
    services down by their probes (the last PROBES_DOWN failed)."""
    heard = await connection.fetch(
        "SELECT split_part(place_key, '|', 1) AS service, last_at FROM flow"
        " WHERE place_key LIKE '%|' || $1",
        TELEMETRY,
    )
    # The latest probes of each, through the (service, at) key: a week of samples is kept.
    down = await connection.fetch(
        "SELECT s.service FROM unnest($1::text[]) AS s (service) CROSS JOIN LATERAL"
        " (SELECT bool_or(ok) AS up FROM (SELECT ok FROM health_samples h"
        "   WHERE h.service = s.service ORDER BY h.at DESC LIMIT $2) latest) probes"
        " WHERE NOT probes.up",
        [r["service"] for r in heard],
        PROBES_DOWN,
    )
    return {r["service"]: r["last_at"] for r in heard}, {r["service"] for r in down}


def _unheard(
    step: Step | None, deadline: datetime, now: datetime, heard: dict[str, datetime], down: set[str]
) -> bool:
    """An order at `step` is due, but the monitor has not heard from the service it waits on
    since the deadline: spans leave a service in the order they end, so a move made in time
    may still be on its way (Jaeger frozen or restarting, an exporter holding spans). It is not
    judged until that service is heard again, unless its probes fail (it is down: frozen, hung,
    gone) or SILENCE_HELD_MAX has passed. The others being heard says nothing: after an outage
    each service's backlog arrives in its own time, and a service up but unheard is a telemetry
    gap, reported as such."""
    if step is None or step.service not in heard or step.service in down:
        return False
    return heard[step.service] < deadline and now - deadline < SILENCE_HELD_MAX


async def _telemetry_gaps(
    connection: asyncpg.Connection,
    heard: dict[str, datetime],
    down: set[str],
    now: datetime,
    gap: timedelta,
    listening_since: datetime | None,
    result: TickResult,
) -> None:
    """A service up by its probe from which nothing has arrived for `gap` is a finding of its
    own; it clears, like a place that works again, when its spans arrive."""
    for service, heard_until in sorted(heard.items()):
        # Silence while the monitor was not running is not the service's.
        last = max(heard_until, listening_since or heard_until)
        if service in down or now - last < gap:
            continue
        subject = PLACE + place_key(service, TELEMETRY)
        open_already = await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM findings WHERE subject = $1 AND cleared_at IS NULL)",
            subject,
        )
        if open_already:
            continue
        finding = _Finding(
            subject=subject,
            order_id=None,
            state=FindingKind.TELEMETRY_GAP,
            status=None,
            since=last,
            deadline=last + gap,
            service=service,
            place=TELEMETRY,
            trace_id=None,
            evidence=f"telemetry gap at {service} since {last:%H:%M:%S} UTC: no span (not even"
            " its heartbeat) has arrived while its health probe passes: Jaeger, the network or"
            " its exporter holds its spans back",
            settled=False,
        )
        await _record(connection, finding, now, result)


def webhook_body(event: AlertEvent, incident: Incident, console_url: str) -> Alert:
    """An alert: the event and the incident, with the incident's page in the console."""
    return Alert(event=event, incident=LinkedIncident.of(incident, console_url))


async def _queues_of_due_orders(pool: asyncpg.Pool, slo: Slo) -> set[str]:
    """The queues that orders past their deadline, and not yet reported, wait in."""
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT DISTINCT o.status FROM orders o WHERE o.deadline <= clock_timestamp()"
            f" AND {_unreported('clock_timestamp()')}"
        )
    return {step.queue for row in rows if (step := slo.step(row["status"])) and step.queue}


async def tick(
    pool: asyncpg.Pool,
    slo: Slo,
    management: Management | None,
    webhook_urls: Sequence[str] = (),
    console_url: str = DEFAULT_CONSOLE_URL,
    stuck_horizon: timedelta = DEFAULT_STUCK_HORIZON,
    watch: BrokerWatch | None = None,
    telemetry_gap: timedelta = DEFAULT_TELEMETRY_GAP,
    listening_since: datetime | None = None,
) -> TickResult:
    """One detection pass. Safe to run from several replicas: writers take one lock.

    Webhook alerts link to the incident in the console under `console_url`
    (LOUPE_CONSOLE_URL). A stuck finding expires after `stuck_horizon` of silence
    (LOUPE_MONITOR_STUCK_HORIZON_HOURS). `watch` looks at RabbitMQ's queues; without it (or
    when the broker cannot be asked) its findings stay as they are. A service silent for
    `telemetry_gap` while its probe passes is a telemetry gap
    (LOUPE_MONITOR_TELEMETRY_GAP_SECONDS), counted from `listening_since` at the earliest: a
    monitor that was not running heard nothing from anyone."""
    result = TickResult()
    view = await watch.look() if watch is not None else None
    queues = QueueEvidence(management)
    # RabbitMQ's answers (up to its timeout each) are awaited before the writers' lock is
    # taken, not while every ingest request waits for it. Only an order that falls due in the
    # milliseconds between has its queue asked under the lock.
    await queues.prefetch(await _queues_of_due_orders(pool, slo))
    async with writing(pool) as connection:
        now: datetime = await connection.fetchval("SELECT clock_timestamp()")
        cleared = await connection.fetch(
            "UPDATE findings f SET cleared_at = $1 FROM orders o"
            " WHERE f.cleared_at IS NULL AND NOT f.settled AND f.subject = o.order_id AND ("
            "   o.status IS DISTINCT FROM f.status"
            "   OR (f.state = $2 AND (o.deadline IS NULL OR o.deadline > $1"
            "       OR o.broken_at <= $1))"
            "   OR (f.state = $3 AND (o.broken_at IS NULL OR o.broken_at > $1)))"
            " RETURNING f.id",
            now,
            FindingKind.STUCK,
            FindingKind.BROKEN,
        )
        # A broken place works again once a request passes there after it broke.
        cleared += await connection.fetch(
            "UPDATE findings f SET cleared_at = $1 FROM flow w"
            " WHERE f.cleared_at IS NULL AND f.subject = $2 || w.place_key"
            " AND w.place_key = f.service || '|' || f.place AND w.last_at > f.since"
            " RETURNING f.id",
            now,
            PLACE,
        )
        result.cleared = len(cleared)

        # An order that has said nothing for the horizon is past being waited for: lost,
        # abandoned, or its spans not sampled. Reporting it forever would hold its incident
        # open however well the orders after it flow. (A queue with no consumer, a stuck
        # finding with no order, stands for as long as the broker shows it.)
        hours = stuck_horizon.total_seconds() / 3600
        expired = await connection.fetch(
            "UPDATE findings f SET cleared_at = $1, cleared_reason = $2"
            " WHERE f.cleared_at IS NULL AND f.state = $3 AND f.detected_at <= $4"
            " AND f.order_id IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM transitions t WHERE t.order_id = f.order_id"
            "   AND t.at > $4)"
            " AND NOT EXISTS (SELECT 1 FROM errors e WHERE e.order_id = f.order_id AND e.at > $4)"
            " RETURNING f.*",
            now,
            f"expired: no span for {hours:g} h",
            FindingKind.STUCK,
            now - stuck_horizon,
        )
        result.expired = [rows.finding(r) for r in expired]

        due = await connection.fetch(
            "SELECT o.* FROM orders o WHERE (o.broken_at <= $1 OR o.deadline <= $1)"
            f" AND {_unreported('$1')}"
            " ORDER BY least(o.broken_at, o.deadline)",
            now,
        )
        heard, down = await _hearing(connection)
        for order in due:
            broken = order["broken_at"] is not None and order["broken_at"] <= now
            if not broken and _unheard(
                slo.step(order["status"]), order["deadline"], now, heard, down
            ):
                continue
            finding = (
                await _broken(connection, order)
                if broken
                else await _stuck(connection, order, slo, queues, now)
            )
            await _record(connection, finding, now, result)
        await _follow_origins(connection, now, result)

        # A dead letter no order can be named for (a message that did not parse): it is
        # reported once, under the queue it came from, until someone acknowledges it.
        orphans = await connection.fetch(
            "SELECT e.* FROM errors e WHERE e.order_id IS NULL AND e.dead_lettered"
            " AND NOT EXISTS (SELECT 1 FROM findings f"
            "   WHERE f.subject = 'span:' || e.trace_id || '/' || e.span_id)"
            " ORDER BY e.at"
        )
        for error in orphans:
            finding = _Finding(
                subject=f"span:{error['trace_id']}/{error['span_id']}",
                order_id=None,
                state=FindingKind.BROKEN,
                status=None,
                since=error["at"],
                deadline=error["at"],
                service=error["service"],
                place=error["place"],
                trace_id=error["trace_id"],
                evidence=f"dead-lettered: {error['message']}",
                settled=True,
            )
            await _record(connection, finding, now, result)

        if view is not None:
            await _broker_findings(connection, view, now, result)

        await _telemetry_gaps(connection, heard, down, now, telemetry_gap, listening_since, result)
        # A failed request that created no order is its place's failure: the place is broken
        # once the SLO's grace has passed with no request there succeeding since (a retry
        # that succeeds gets its chance), and works again when one does.
        for failed in await connection.fetch(_FAILED_PLACES, now - slo.error_grace, PLACE):
            failures = failed["failures"]
            finding = _Finding(
                subject=PLACE + place_key(failed["service"], failed["place"]),
                order_id=None,
                state=FindingKind.BROKEN,
                status=None,
                since=failed["since"],
                deadline=failed["since"] + slo.error_grace,
                service=failed["service"],
                place=failed["place"],
                trace_id=failed["trace_id"],
                evidence=f"{failures} failed request{'s' if failures > 1 else ''} that named"
                f" no order, none succeeded since; the last: {failed['message']}",
                settled=False,
            )
            await _record(connection, finding, now, result)

        # An incident whose every finding was dismissed resolves without waiting for orders to
        # flow: there was nothing there.
        resolved = await connection.fetch(
            f"UPDATE incidents i SET resolved_at = $1, dismissed = {ALL_DISMISSED}"
            " WHERE i.resolved_at IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM findings f WHERE f.incident_id = i.id"
            "   AND f.cleared_at IS NULL AND NOT f.settled)"
            f" AND ({ALL_DISMISSED} OR EXISTS (SELECT 1 FROM flow w"
            "   WHERE w.place_key = i.flow_key AND w.last_at > i.last_since))"
            " RETURNING i.*, (SELECT count(*) FROM findings f WHERE f.incident_id = i.id) AS n",
            now,
        )
        result.incidents_resolved += [rows.incident(r, r["n"]) for r in resolved]

        events = [(AlertEvent.OPENED, i) for i in result.incidents_opened] + [
            (AlertEvent.RESOLVED, i) for i in result.incidents_resolved
        ]
        if events and webhook_urls:
            bodies = [
                webhook_body(name, incident, console_url).model_dump_json()
                for name, incident in events
            ]
            await connection.executemany(
                "INSERT INTO webhook_deliveries (url, body) VALUES ($1, $2::jsonb)",
                [(url, body) for body in bodies for url in webhook_urls],
            )
    for finding in result.expired:
        log.warning(
            "order %s is no longer reported stuck at %s: %s",
            finding.order_id,
            finding.status,
            finding.cleared_reason,
        )
    for incident in result.incidents_opened:
        log.warning(
            "incident %s opened: %s at %s / %s",
            incident.id,
            incident.state,
            incident.service,
            incident.where,
        )
    for incident in result.incidents_resolved:
        if incident.dismissed:
            log.warning("incident %s resolved: every finding was dismissed", incident.id)
        else:
            log.warning(
                "incident %s resolved after %.1f s",
                incident.id,
                incident.time_to_resolve_seconds,
            )
    return result


async def prune(pool: asyncpg.Pool, retention: timedelta) -> int:
    """Forget what is older than `retention`: final orders with nothing open, orders whose
    finding was closed for good (expired, dismissed) at the status they are still at, their
    spans, old samples, cleared findings and resolved incidents. Keeps the database bounded."""
    async with writing(pool) as connection:
        cutoff: datetime = await connection.fetchval("SELECT now() - $1::interval", retention)
        gone = await connection.fetch(
            "DELETE FROM orders o WHERE o.status_at < $1"
            " AND ((o.deadline IS NULL AND o.broken_at IS NULL)"
            f"   OR EXISTS (SELECT 1 FROM findings f WHERE {_CLOSED_FOR_ORDER}))"
            " AND NOT EXISTS (SELECT 1 FROM findings f"
            "   WHERE f.subject = o.order_id AND f.cleared_at IS NULL)"
            " RETURNING order_id",
            cutoff,
        )
        ids = [r["order_id"] for r in gone]
        await connection.execute("DELETE FROM transitions WHERE order_id = ANY($1::text[])", ids)
        await connection.execute(
            "DELETE FROM errors WHERE order_id = ANY($1::text[]) OR (order_id IS NULL AND at < $2)",
            ids,
            cutoff,
        )
        await connection.execute("DELETE FROM health_samples WHERE at < $1", cutoff)
        await connection.execute(
            "DELETE FROM findings WHERE cleared_at < $1 OR incident_id IN"
            " (SELECT id FROM incidents WHERE resolved_at < $1)",
            cutoff,
        )
        await connection.execute(
            "DELETE FROM incidents i WHERE resolved_at < $1 AND NOT EXISTS"
            " (SELECT 1 FROM findings f WHERE f.incident_id = i.id)",
            cutoff,
        )
        await connection.execute("DELETE FROM webhook_deliveries WHERE created_at < $1", cutoff)
        await connection.execute("DELETE FROM flow WHERE last_at < $1", cutoff)
    return len(ids)
