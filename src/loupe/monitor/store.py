"""The monitor's PostgreSQL state, as SQL: spans in (ingest), journeys, findings, incidents
and uptime out, as the models of models.py (shaped by rows.py). The order projection's rules
are in projection.py; detection's and retention's SQL in detection.py.

Everything the monitor knows lives here, so a restart loses nothing and memory stays flat:
the process itself keeps no per-order state.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from loupe.database import open_database
from loupe.monitor import projection, rows
from loupe.monitor.models import (
    Durations,
    Finding,
    FindingKind,
    Incident,
    IncidentDetail,
    IncidentList,
    IncidentState,
    Journey,
    ServiceUptime,
    Uptime,
)
from loupe.monitor.projection import TELEMETRY, OrderRow, StoredError, place_key
from loupe.monitor.slo import Slo
from loupe.monitor.spans import Senders, SpanFacts

MIGRATIONS = Path(__file__).parent / "migrations"
# Serialises writers (ingest requests, detection ticks) across replicas too: the per-order
# projection is read, merged and written back.
WRITE_LOCK = 0x6D6F6E69746F72  # "monitor"
ALL = "all"
"""`incidents(which=ALL)`: open and resolved."""
ALL_DISMISSED = (
    "coalesce((SELECT bool_and(f.dismissed) FROM findings f WHERE f.incident_id = i.id), false)"
)
"""SQL: every finding of incident `i` was dismissed (`dismiss`): nothing in it counts."""


class FindingCleared(Exception):
    """The finding was cleared already: only an open one can be dismissed."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(
            f"finding {finding.id} was cleared already"
            + (f" ({finding.cleared_reason})" if finding.cleared_reason else "")
        )
        self.finding = finding


async def open_store(base_dsn: str, database: str) -> asyncpg.Pool:
    return await open_database(base_dsn, database, MIGRATIONS)


@contextlib.asynccontextmanager
async def writing(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction that holds the writers' lock until it ends."""
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
        yield connection


async def apply_slo(pool: asyncpg.Pool, slo: Slo) -> int:
    """Give every order the deadline `slo` sets for its status (none where it sets none); the
    number of orders whose deadline changed. Deadlines are stored when an order moves, so a
    changed SLO file would otherwise judge waiting orders by the old one."""
    statuses = list(slo.steps)
    async with writing(pool) as connection:
        changed = await connection.fetchval(
            "WITH steps AS (SELECT * FROM unnest($1::text[], $2::interval[]) AS x(status, within)),"
            " target AS (SELECT o.order_id, o.status_at + s.within AS deadline FROM orders o"
            "  LEFT JOIN steps s ON s.status = o.status),"
            " updated AS (UPDATE orders o SET deadline = t.deadline FROM target t"
            "  WHERE o.order_id = t.order_id AND o.deadline IS DISTINCT FROM t.deadline"
            "  RETURNING 1)"
            " SELECT count(*) FROM updated",
            [str(status) for status in statuses],
            [slo.steps[status].within for status in statuses],
        )
    return int(changed)


REFUSED_VALUES = (asyncpg.DataError, asyncpg.ProgramLimitExceededError)
"""What PostgreSQL answers to a value it cannot take (SQLSTATE classes 22 and 54): the fault of
a span, not of the batch or of the database."""


@dataclass
class IngestResult:
    received: int = 0
    kept: int = 0
    new_transitions: int = 0
    new_errors: int = 0
    duplicates: int = 0
    # (from, to, seconds) of each move whose previous status the monitor had seen
    durations: list[tuple[str, str, float]] = field(default_factory=list)
    # spans PostgreSQL refused a value of, and why (not stored)
    refused: list[tuple[SpanFacts, str]] = field(default_factory=list)

    def __add__(self, other: IngestResult) -> IngestResult:
        return IngestResult(
            received=self.received + other.received,
            kept=self.kept + other.kept,
            new_transitions=self.new_transitions + other.new_transitions,
            new_errors=self.new_errors + other.new_errors,
            duplicates=self.duplicates + other.duplicates,
            durations=self.durations + other.durations,
            refused=self.refused + other.refused,
        )


async def heard_from(pool: asyncpg.Pool, senders: Senders) -> None:
    """How far the monitor has heard from each service that sends heartbeats. Only a heartbeat
    starts the record: a service without one (or spans made up in a test) is never judged
    silent."""
    keys = {service: place_key(service, TELEMETRY) for service in senders.latest}
    beating = [s for s in senders.latest if s in senders.beating]
    others = [s for s in senders.latest if s not in senders.beating]
    async with pool.acquire() as connection:
        if beating:
            await connection.execute(
                "INSERT INTO flow (place_key, last_at)"
                " SELECT * FROM unnest($1::text[], $2::timestamptz[])"
                " ON CONFLICT (place_key) DO UPDATE"
                " SET last_at = greatest(flow.last_at, excluded.last_at)",
                [keys[s] for s in beating],
                [senders.latest[s] for s in beating],
            )
        if others:
            await connection.execute(
                "UPDATE flow SET last_at = greatest(flow.last_at, heard.last_at)"
                " FROM unnest($1::text[], $2::timestamptz[]) AS heard (place_key, last_at)"
                " WHERE flow.place_key = heard.place_key",
                [keys[s] for s in others],
                [senders.latest[s] for s in others],
            )


async def ingest(
    pool: asyncpg.Pool, spans: Sequence[SpanFacts], slo: Slo, received: int
) -> IngestResult:
    """Store what `spans` say (each span once, whatever order or how often they come) and move
    each order's projection forward.

    Should PostgreSQL refuse a value (spans.screen cleans the ones known to be refused), the
    batch is stored in halves, down to the span it refuses, which is left out and named in
    `refused`: spans give the same projection however they are grouped, so the rest is stored
    as if the batch had been whole."""
    try:
        return await _ingest(pool, spans, slo, received)
    except REFUSED_VALUES as exc:
        if len(spans) == 1:
            why = f"{type(exc).__name__} ({exc.sqlstate}): {exc}"
            return IngestResult(received=received, refused=[(spans[0], why)])
    # More than one span, and one of them refused: each half on its own.
    half = len(spans) // 2
    first = await ingest(pool, spans[:half], slo, received)
    return first + await ingest(pool, spans[half:], slo, 0)


async def _ingest(
    pool: asyncpg.Pool, spans: Sequence[SpanFacts], slo: Slo, received: int
) -> IngestResult:
    result = IngestResult(received=received, kept=len(spans))
    if not spans:
        return result
    transitions = [s for s in spans if s.transition]
    errors = [s for s in spans if s.error]
    flows: dict[str, datetime] = {}
    for span in spans:
        for key in projection.flow_keys(span):
            flows[key] = max(flows.get(key, span.ended_at), span.ended_at)

    async with writing(pool) as connection:
        new_transitions = await _insert_transitions(connection, transitions)
        new_errors = await _insert_errors(connection, errors)
        result.new_transitions = len(new_transitions)
        result.new_errors = len(new_errors)
        result.duplicates = len(transitions) + len(errors) - len(new_transitions) - len(new_errors)
        if flows:
            await connection.execute(
                "INSERT INTO flow (place_key, last_at)"
                " SELECT * FROM unnest($1::text[], $2::timestamptz[])"
                " ON CONFLICT (place_key) DO UPDATE"
                " SET last_at = greatest(flow.last_at, excluded.last_at)",
                list(flows),
                list(flows.values()),
            )
        touched = sorted(
            {t.order_id for t in new_transitions if t.order_id}
            | {e.order_id for e in new_errors if e.order_id}
        )
        if touched:
            result.durations = await _project(connection, touched, new_transitions, new_errors, slo)
    return result


async def _insert_transitions(
    connection: asyncpg.Connection, spans: list[SpanFacts]
) -> list[SpanFacts]:
    if not spans:
        return []
    rows = await connection.fetch(
        "INSERT INTO transitions (trace_id, span_id, order_id, status_from, status_to, at,"
        " service, operation, source, failure_reason, links, began)"
        " SELECT t, s, o, f, st, a, sv, op, src, fr, l::jsonb, b FROM unnest($1::text[],"
        " $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[],"
        " $8::text[], $9::text[], $10::text[], $11::text[], $12::timestamptz[])"
        " AS x(t, s, o, f, st, a, sv, op, src, fr, l, b)"
        " ON CONFLICT DO NOTHING RETURNING trace_id, span_id",
        [s.trace_id for s in spans],
        [s.span_id for s in spans],
        [s.order_id for s in spans],
        [s.status_from or "" for s in spans],
        [s.status_to for s in spans],
        [s.ended_at for s in spans],
        [s.service for s in spans],
        [s.name for s in spans],
        [s.source for s in spans],
        [s.failure_reason for s in spans],
        [json.dumps([{"trace_id": t, "span_id": p} for t, p in s.links]) for s in spans],
        [s.started_at for s in spans],
    )
    inserted = {(r["trace_id"], r["span_id"]) for r in rows}
    return [s for s in spans if (s.trace_id, s.span_id) in inserted]


async def _insert_errors(connection: asyncpg.Connection, spans: list[SpanFacts]) -> list[SpanFacts]:
    if not spans:
        return []
    rows = await connection.fetch(
        "INSERT INTO errors (trace_id, span_id, order_id, at, service, kind, operation, place,"
        " message, dead_lettered, error_type, refusal)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[],"
        " $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::boolean[],"
        " $11::text[], $12::boolean[])"
        " ON CONFLICT DO NOTHING RETURNING trace_id, span_id",
        [s.trace_id for s in spans],
        [s.span_id for s in spans],
        [s.order_id for s in spans],
        [s.ended_at for s in spans],
        [s.service for s in spans],
        [s.kind for s in spans],
        [s.name for s in spans],
        [s.place for s in spans],
        [s.error_message or "error" for s in spans],
        [s.dead_lettered for s in spans],
        [s.error_type for s in spans],
        [s.refusal for s in spans],
    )
    inserted = {(r["trace_id"], r["span_id"]) for r in rows}
    return [s for s in spans if (s.trace_id, s.span_id) in inserted]


async def _project(
    connection: asyncpg.Connection,
    order_ids: list[str],
    transitions: list[SpanFacts],
    errors: list[SpanFacts],
    slo: Slo,
) -> list[tuple[str, str, float]]:
    """Reads the touched orders' rows, moves them on (projection.py) and writes them back."""
    rows = await connection.fetch(
        "SELECT * FROM orders WHERE order_id = ANY($1::text[])", order_ids
    )
    projected = projection.advance(map(OrderRow.from_row, rows), transitions, errors, slo)
    open_orders = projected.open_orders()
    if open_orders:
        stored = await connection.fetch(
            "SELECT order_id, at, dead_lettered FROM errors WHERE order_id = ANY($1::text[])"
            " AND NOT refusal",
            [o.order_id for o in open_orders],
        )
        by_order: dict[str, list[StoredError]] = {}
        for row in stored:
            by_order.setdefault(row["order_id"], []).append(
                StoredError(row["at"], row["dead_lettered"])
            )
        projection.mark_broken(projected, by_order, slo)

    await connection.executemany(
        "INSERT INTO orders (order_id, status, rank, status_at, service, operation, trace_id,"
        " span_id, source, deadline, broken_at, status_began)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        " ON CONFLICT (order_id) DO UPDATE SET status = excluded.status,"
        " rank = excluded.rank, status_at = excluded.status_at,"
        " status_began = excluded.status_began, service = excluded.service,"
        " operation = excluded.operation, trace_id = excluded.trace_id,"
        " span_id = excluded.span_id, source = excluded.source, deadline = excluded.deadline,"
        " broken_at = excluded.broken_at, updated_at = now()",
        [
            (
                o.order_id,
                o.status,
                o.rank,
                o.status_at,
                o.service,
                o.operation,
                o.trace_id,
                o.span_id,
                o.source,
                o.deadline,
                o.broken_at,
                o.status_began,
            )
            for o in projected.changed_rows()
        ],
    )
    return projected.durations


# -- reading ----------------------------------------------------------------------------------


async def journey(pool: asyncpg.Pool, order_id: str) -> Journey | None:
    """The order's moves in time order (rows.journey), its errors and its open finding."""
    async with pool.acquire() as connection:
        order = await connection.fetchrow("SELECT * FROM orders WHERE order_id = $1", order_id)
        if order is None:
            return None
        transitions = await connection.fetch(
            "SELECT * FROM transitions WHERE order_id = $1 ORDER BY began, service", order_id
        )
        errors = await connection.fetch(
            "SELECT * FROM errors WHERE order_id = $1 ORDER BY at", order_id
        )
        finding = await connection.fetchrow(
            "SELECT * FROM findings WHERE subject = $1 AND cleared_at IS NULL", order_id
        )
    return rows.journey(order, transitions, errors, finding)


async def findings(pool: asyncpg.Pool, state: FindingKind | None = None) -> list[Finding]:
    """Open findings, oldest first; `state` narrows them to one kind."""
    query = "SELECT * FROM findings WHERE cleared_at IS NULL"
    args: list[Any] = []
    if state:
        query += " AND state = $1"
        args.append(state)
    async with pool.acquire() as connection:
        found = await connection.fetch(query + " ORDER BY since, id", *args)
    return [rows.finding(r) for r in found]


async def incidents(
    pool: asyncpg.Pool, which: str = ALL, window: timedelta = timedelta(days=7)
) -> IncidentList:
    """Incidents opened within `window` (and every open one); MTTD and MTTR over them.
    `which`: an IncidentState, or ALL."""
    condition = {
        IncidentState.OPEN: "resolved_at IS NULL",
        IncidentState.RESOLVED: "resolved_at IS NOT NULL AND opened_at >= now() - $1::interval",
        ALL: "(resolved_at IS NULL OR opened_at >= now() - $1::interval)",
    }[which]
    async with pool.acquire() as connection:
        args: list[Any] = [] if which == IncidentState.OPEN else [window]
        found = await connection.fetch(
            "SELECT i.*, (SELECT count(*) FROM findings f WHERE f.incident_id = i.id) AS n"
            f" FROM incidents i WHERE {condition} ORDER BY opened_at DESC, id DESC",
            *args,
        )
        summary = await incident_summary(connection, window)
    return IncidentList(
        window_seconds=window.total_seconds(),
        open=summary.open,
        resolved=summary.resolved,
        mttd_seconds=summary.time_to_detect.mean_seconds,
        mttr_seconds=summary.time_to_resolve.mean_seconds,
        time_to_detect=summary.time_to_detect,
        time_to_resolve=summary.time_to_resolve,
        incidents=[rows.incident(r, r["n"]) for r in found],
    )


async def incident(pool: asyncpg.Pool, incident_id: int) -> IncidentDetail | None:
    """One incident with every finding it holds, open or cleared, oldest first."""
    async with pool.acquire() as connection:
        row = await connection.fetchrow("SELECT * FROM incidents WHERE id = $1", incident_id)
        if row is None:
            return None
        held = await connection.fetch(
            "SELECT * FROM findings WHERE incident_id = $1 ORDER BY since, id", incident_id
        )
    return IncidentDetail(
        **dict(rows.incident(row, len(held))), findings=[rows.finding(f) for f in held]
    )


@dataclass(frozen=True)
class IncidentSummary:
    open: int
    resolved: int
    time_to_detect: Durations
    time_to_resolve: Durations


async def incident_summary(connection: asyncpg.Connection, window: timedelta) -> IncidentSummary:
    """Over the incidents opened within `window` and every open one: how many are open and
    resolved, and their times to detect and to resolve (Durations), leaving out incidents
    whose every finding was dismissed."""
    # Counted: not every finding dismissed. Tested on the findings, not only on the
    # incident's `dismissed` flag, which is set when it resolves: between a dismissal and the
    # next detection pass the incident is still open, and must not count meanwhile.
    counts = f"NOT i.dismissed AND NOT {ALL_DISMISSED}"
    row = await connection.fetchrow(
        "SELECT count(*) FILTER (WHERE resolved_at IS NULL) AS open,"
        " count(*) FILTER (WHERE resolved_at IS NOT NULL) AS resolved,"
        " array_agg(extract(epoch FROM opened_at - started_at)::float8)"
        f"   FILTER (WHERE {counts}) AS ttd,"
        " array_agg(extract(epoch FROM resolved_at - started_at)::float8)"
        f"   FILTER (WHERE resolved_at IS NOT NULL AND {counts}) AS ttr"
        " FROM incidents i WHERE resolved_at IS NULL OR opened_at >= now() - $1::interval",
        window,
    )
    return IncidentSummary(
        open=row["open"],
        resolved=row["resolved"],
        # array_agg over no row is NULL
        time_to_detect=Durations.of(row["ttd"] or []),
        time_to_resolve=Durations.of(row["ttr"] or []),
    )


async def acknowledge(pool: asyncpg.Pool, incident_id: int, who: str) -> Incident | None:
    """Marks the incident seen by `who`; its final orders' findings (FAILED, REJECTED,
    unattributed dead letters) are cleared: someone has taken them on."""
    async with writing(pool) as connection:
        row = await connection.fetchrow(
            "UPDATE incidents SET acknowledged_by = $2, acknowledged_at = now()"
            " WHERE id = $1 RETURNING *",
            incident_id,
            who,
        )
        if row is None:
            return None
        cleared = await connection.fetch(
            "UPDATE findings SET cleared_at = now(), cleared_reason = $2"
            " WHERE incident_id = $1 AND settled AND cleared_at IS NULL RETURNING order_id",
            incident_id,
            f"acknowledged by {who}",
        )
        await connection.execute(
            "UPDATE orders SET broken_at = NULL WHERE order_id = ANY($1::text[])",
            [r["order_id"] for r in cleared if r["order_id"]],
        )
        n = await connection.fetchval(
            "SELECT count(*) FROM findings WHERE incident_id = $1", incident_id
        )
    return rows.incident(row, n)


async def dismiss(pool: asyncpg.Pool, finding_id: int, who: str, reason: str) -> Finding | None:
    """Clears an open finding with the reason `dismissed by <who>: <reason>`: a false alarm,
    or one in hand elsewhere. Its order is not reported again so at that status (detection),
    and it counts toward no MTTD or MTTR: its incident's times become those of its other
    findings, and an incident whose every finding is dismissed resolves at the next detection
    pass without a time to resolve. None when there is no such finding; FindingCleared when
    it was cleared already."""
    async with writing(pool) as connection:
        row = await connection.fetchrow(
            "UPDATE findings SET cleared_at = now(), cleared_reason = $2, dismissed = true"
            " WHERE id = $1 AND cleared_at IS NULL RETURNING *",
            finding_id,
            f"dismissed by {who}: {reason}",
        )
        if row is None:
            cleared = await connection.fetchrow("SELECT * FROM findings WHERE id = $1", finding_id)
            if cleared is None:
                return None
            raise FindingCleared(rows.finding(cleared))
        # The incident's times as detection set them (detection._record), from the findings
        # that still count; unchanged when none does.
        await connection.execute(
            "UPDATE incidents i SET started_at = coalesce(s.started, i.started_at),"
            " opened_at = coalesce(s.detected, i.opened_at),"
            " deadline_at = coalesce(s.deadline, i.deadline_at),"
            " last_since = coalesce(s.latest, i.last_since),"
            f" dismissed = i.resolved_at IS NOT NULL AND {ALL_DISMISSED}"
            " FROM (SELECT min(since) AS started, min(detected_at) AS detected,"
            "   min(deadline) AS deadline, max(since) AS latest"
            "   FROM findings WHERE incident_id = $1 AND NOT dismissed) s"
            " WHERE i.id = $1",
            row["incident_id"],
        )
    return rows.finding(row)


async def uptime(
    pool: asyncpg.Pool, services: Sequence[str], window: timedelta, probe_seconds: float
) -> Uptime:
    """Per service, the share of health probes in `window` that found it up and serving: the
    probe passed and no request it served in the probe's interval failed (5xx)."""
    async with pool.acquire() as connection:
        found = await connection.fetch(
            "SELECT h.service, count(*) AS samples,"
            " count(*) FILTER (WHERE h.ok AND NOT EXISTS (SELECT 1 FROM errors e"
            "   WHERE e.service = h.service AND e.kind = 'SERVER'"
            "   AND e.at > h.at - $2::interval AND e.at <= h.at)) AS good,"
            " count(*) FILTER (WHERE NOT h.ok) AS probe_failures"
            " FROM health_samples h WHERE h.at >= now() - $1::interval"
            " GROUP BY h.service",
            window,
            timedelta(seconds=probe_seconds),
        )
    by_service = {r["service"]: r for r in found}
    result: dict[str, ServiceUptime] = {}
    for service in services:
        row = by_service.get(service)
        samples = row["samples"] if row else 0
        result[service] = ServiceUptime(
            availability=(row["good"] / samples) if row and samples else None,
            samples=samples,
            probe_failures=row["probe_failures"] if row else 0,
        )
    return Uptime(window_seconds=window.total_seconds(), services=result)
