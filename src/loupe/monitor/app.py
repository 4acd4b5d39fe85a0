"""The monitor's HTTP side: OTLP/HTTP intake at /v1/traces, the JSON API under /monitor/api
(behind the gateway, role-checked), Prometheus metrics at /metrics, /healthz."""

# No `from __future__ import annotations` here: FastAPI must see the `Reader` dependency's
# annotation as an object, and it is made at run time by Access.

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

import asyncpg
import httpx
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from loupe.access import Access, TokenVerifier
from loupe.accounts import Account
from loupe.config import SERVICE_NAMES
from loupe.database import RETRY_AFTER_SECONDS, UNAVAILABLE
from loupe.hosts import answer_only_known_hosts
from loupe.monitor import alerts, detection, intake, store
from loupe.monitor.broker import BrokerWatch
from loupe.monitor.metrics import FlowMetrics
from loupe.monitor.models import (
    Dismissal,
    Finding,
    FindingKind,
    FindingList,
    Incident,
    IncidentDetail,
    IncidentList,
    IncidentState,
    Journey,
    Move,
    Uptime,
)
from loupe.monitor.settings import API_PREFIX, MonitorSettings
from loupe.monitor.slo import Slo, SloError
from loupe.monitor.spans import (
    MalformedSpans,
    Senders,
    SpanFacts,
    TimeWindow,
    TooLarge,
    Unstorable,
    UnstorableSpan,
    decode,
    screen,
)

log = logging.getLogger(__name__)

# The `state` query parameter: a FindingKind, its choices spelled out where the parameter is
# in the OpenAPI document (an enum parameter would only name FindingKind's schema).
FindingKindQuery = Literal[
    FindingKind.STUCK, FindingKind.BROKEN, FindingKind.UNROUTABLE, FindingKind.TELEMETRY_GAP
]
# The `status` query parameter of /incidents: an IncidentState, or both.
INCIDENT_STATUSES = f"^({'|'.join([*IncidentState, store.ALL])})$"

T = TypeVar("T")

PROTOBUF = "application/x-protobuf"
RETRY_AFTER = {"Retry-After": str(RETRY_AFTER_SECONDS)}
# Detection runs every LOUPE_MONITOR_TICK_SECONDS; a pass this much later than the last means
# the monitor itself was not running (frozen, suspended), so it heard nothing meanwhile.
LISTENING_PAUSE = timedelta(seconds=10)


@dataclass
class Monitor:
    """What the running monitor holds: the pool and the SLOs; no per-order state."""

    settings: MonitorSettings
    slo: Slo
    # Who may send spans (intake.authorize); None lets nobody in.
    intake_token: str | None = None
    metrics: FlowMetrics = field(default_factory=FlowMetrics)
    pool: asyncpg.Pool | None = None
    loops: list[asyncio.Task[None]] = field(default_factory=list)
    client: httpx.AsyncClient | None = None  # the loops' HTTP client (probes, webhooks)
    # Detection's look at RabbitMQ's queues (unroutable messages, queues nobody consumes).
    watch: BrokerWatch | None = None
    # When the last detection pass ended: how current the findings are.
    detected_at: datetime | None = None
    # Since when this monitor has been listening without a pause (a start, or a process
    # stopped and continued): a service's silence counts only from then.
    listening_since: datetime | None = None

    @property
    def db(self) -> asyncpg.Pool:
        if self.pool is None:
            raise HTTPException(
                503, "the monitor is starting: its database is not open yet", RETRY_AFTER
            )
        return self.pool

    async def detect_once(self) -> detection.TickResult:
        now = datetime.now(UTC)
        if self.detected_at is None or now - self.detected_at > LISTENING_PAUSE:
            self.listening_since = now
        result = await detection.tick(
            self.db,
            self.slo,
            self.settings.management,
            self.settings.webhook_urls,
            self.settings.base.console_url,
            self.settings.stuck_horizon,
            self.watch,
            self.settings.telemetry_gap,
            self.listening_since,
        )
        for seconds in result.latencies:
            self.metrics.detection_latency.observe(seconds)
        self.detected_at = datetime.now(UTC)
        return result

    async def probe_once(self, client: httpx.AsyncClient) -> None:
        samples = []
        for service, url in self.settings.base.service_urls.items():
            try:
                response = await client.get(f"{url.rstrip('/')}/healthz")
                ok, detail = response.status_code == 200, f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                ok, detail = False, f"{type(exc).__name__}"
            samples.append((SERVICE_NAMES[service], ok, detail))
        async with self.db.acquire() as connection:
            await connection.executemany(
                "INSERT INTO health_samples (service, at, ok, detail)"
                " VALUES ($1, clock_timestamp(), $2, $3) ON CONFLICT DO NOTHING",
                samples,
            )

    def start_loops(self) -> None:
        settings = self.settings
        client = self.client = httpx.AsyncClient(timeout=5.0, trust_env=False)
        self.watch = BrokerWatch(settings.base.amqp_url_of(Account.MONITOR), settings.management)
        retention = settings.retention
        self.loops = [
            asyncio.create_task(_every(settings.tick_seconds, self.detect_once, "detection")),
            asyncio.create_task(
                _every(settings.probe_seconds, lambda: self.probe_once(client), "probe")
            ),
            asyncio.create_task(
                _every(1.0, lambda: alerts.deliver_due(self.db, client), "webhooks")
            ),
            asyncio.create_task(
                _every(600.0, lambda: detection.prune(self.db, retention), "retention")
            ),
        ]

    async def stop(self) -> None:
        for task in self.loops:
            task.cancel()
        for task in self.loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.client is not None:
            await self.client.aclose()
        if self.watch is not None:
            await self.watch.close()
        if self.pool is not None:
            await self.pool.close()


async def _every(seconds: float, action: Callable[[], Awaitable[object]], name: str) -> None:
    """Runs `action` every `seconds`; a failing round is logged and the next one runs anyway."""
    while True:
        started = asyncio.get_running_loop().time()
        try:
            await action()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("monitor %s round failed", name)
        elapsed = asyncio.get_running_loop().time() - started
        await asyncio.sleep(max(seconds - elapsed, 0.0))


def _count_unstorable(metrics: FlowMetrics, bad: UnstorableSpan) -> None:
    """Counted, and logged with the span's ids, to find it in Jaeger, and with why."""
    outcome = "dropped" if bad.dropped else "cleaned"
    metrics.spans_unstorable.labels(bad.reason.value, outcome).inc()
    span = bad.span
    why = f"{bad.reason} in {', '.join(bad.fields)}" if bad.fields else str(bad.reason)
    log.warning(
        "span %s/%s of %.100r (%.100r): %s%s; %s",
        span.trace_id,
        span.span_id,
        span.service,
        span.name,
        why,
        f": {bad.detail}" if bad.detail else "",
        "dropped" if bad.dropped else "stored with those values cleaned",
    )


def _decoded(
    raw: bytes, encoding: str, limit: int, window: TimeWindow
) -> tuple[list[SpanFacts], Senders, list[SpanFacts], list[UnstorableSpan]]:
    """The request decoded (run in a worker thread): the spans worth keeping, who sent how
    many, and those of the kept spans PostgreSQL can store and cannot as sent (`screen`)."""
    try:
        decoded, received = decode(intake.inflate(raw, encoding, limit), window)
    except MalformedSpans as exc:
        raise HTTPException(400, str(exc)) from None
    except TooLarge as exc:
        raise HTTPException(413, f"{exc}; send smaller batches") from None
    return (decoded, received, *screen(decoded))


def create_app(
    settings: MonitorSettings,
    *,
    intake_token: str | None = None,
    verifier: TokenVerifier | None = None,
    run_loops: bool = True,
    slo: Slo | None = None,
) -> FastAPI:
    """`intake_token` is what OTLP senders must give (`run_monitor` reads it from
    `settings.intake_token_file`); without it the intake lets nobody in. `run_loops=False`
    leaves detection to the caller (tests call `detect_once`)."""
    monitor = Monitor(settings, slo or Slo.load(settings.slo_file), intake_token)
    access = Access(settings.access, verifier, settings.base.console_url)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        monitor.pool = await store.open_store(
            settings.base.postgres_dsn_of(settings.database), settings.database
        )
        if moved := await store.apply_slo(monitor.pool, monitor.slo):
            log.info("deadlines of %d waiting orders follow the SLO file now", moved)
        if run_loops:
            monitor.start_loops()
        log.info("loupe-monitor ready on %s", settings.url)
        try:
            yield
        finally:
            await monitor.stop()

    app = FastAPI(
        title="loupe-monitor",
        description=(
            "Which orders are stuck or broken, where and since when; what RabbitMQ shows wrong"
            " (messages no queue is bound for, queues with messages and no consumer); incidents"
            " with MTTD and "
            "MTTR; uptime per service. The API is served under /monitor/api behind the "
            "sign-in gateway: developers read, devops also acknowledge incidents and dismiss"
            " findings."
        ),
        lifespan=lifespan,
        version="1",
    )
    app.state.monitor = monitor
    answer_only_known_hosts(app, settings.base)
    access.install(app, "loupe-monitor")
    Reader = access.reader
    Operator = access.operator

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        monitor.db  # noqa: B018 - raises 503 until the database is open
        return {"status": "ok"}

    @app.post("/v1/traces", include_in_schema=False)
    async def otlp_traces(request: Request) -> Response:
        try:
            return await take(request)
        except HTTPException as refused:
            # Counted, so forged or oversized requests show on a dashboard, not only in logs.
            monitor.metrics.requests_refused.labels(str(refused.status_code)).inc()
            raise

    async def take(request: Request) -> Response:
        intake.authorize(request.headers.get("authorization", ""), monitor.intake_token)
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != PROTOBUF:
            raise HTTPException(
                415, f"send OTLP/HTTP with Content-Type {PROTOBUF} (got {content_type!r})"
            )
        limit = settings.intake_max_bytes
        raw = await intake.read_body(request, limit)
        window = TimeWindow.around(datetime.now(UTC), settings.retention, settings.intake_ahead)
        encoding = request.headers.get("content-encoding", "")
        # Off the event loop: detection and /healthz go on while a large batch is decoded.
        decoded, received, spans, unstorable = await asyncio.to_thread(
            _decoded, raw, encoding, limit, window
        )
        try:
            result = await store.ingest(monitor.db, spans, monitor.slo, received.total())
            await store.heard_from(monitor.db, received)
        # OTLP senders retry a 503 and drop a batch answered 500: while PostgreSQL is away (or
        # the pool closes as the monitor stops) the spans wait in the collector's queue.
        except UNAVAILABLE as exc:
            log.warning(
                "cannot store spans now, asking the sender to retry: %s: %s",
                type(exc).__name__,
                exc,
            )
            raise HTTPException(
                503, "the monitor's database is unavailable; retry", RETRY_AFTER
            ) from None
        for span, why in result.refused:
            unstorable.append(UnstorableSpan(span, Unstorable.REFUSED, (), True, why))
        for bad in unstorable:
            _count_unstorable(monitor.metrics, bad)
        for service, count in received.items():
            monitor.metrics.spans_received.labels(service=service).inc(count)
        monitor.metrics.spans_kept.inc(len(decoded))
        for status_from, status_to, seconds in result.durations:
            monitor.metrics.transition_seconds.labels(status_from, status_to).observe(seconds)
        answer = ExportTraceServiceResponse()
        for why, count in received.refused.items():
            monitor.metrics.spans_refused.labels(why.value).inc(count)
            log.warning("refused %d span(s) of one request: %s", count, why)
            # OTLP's partial success: the sender learns that these were not taken, and must
            # not retry them.
            answer.partial_success.rejected_spans += count
            answer.partial_success.error_message = f"spans refused: {why}"
        return Response(answer.SerializeToString(), media_type=PROTOBUF)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        # The gauges are read from the database when scraped, not on every detection tick.
        try:
            await monitor.metrics.refresh(monitor.db, monitor.slo)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("metrics: gauges left as they were, the database cannot be read: %s", exc)
        return Response(generate_latest(monitor.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    api = APIRouter(prefix=f"{API_PREFIX}/api")

    @api.get(
        "/findings",
        summary="Orders stuck or broken now, queues nobody consumes, unroutable messages",
        response_model=FindingList,
    )
    async def findings(_: Reader, state: FindingKindQuery | None = None) -> FindingList:
        found = await store.findings(monitor.db, state)
        return FindingList(count=len(found), findings=found, as_of=monitor.detected_at)

    @api.get(
        "/orders/{order_id}/journey",
        summary="One order's transitions, in order, each against its SLO",
        response_model=Journey,
    )
    async def journey(_: Reader, order_id: str) -> Journey:
        found = _found(
            await store.journey(monitor.db, order_id),
            f"no spans of order {order_id} have reached the monitor",
        )
        _judge(found.transitions, monitor.slo)
        return found

    @api.get("/incidents", summary="Incidents, with MTTD and MTTR", response_model=IncidentList)
    async def incidents(
        _: Reader,
        status: str = Query(store.ALL, pattern=INCIDENT_STATUSES),
        window_hours: float = Query(24.0 * 7, gt=0, le=24.0 * 366),
    ) -> IncidentList:
        return await store.incidents(monitor.db, status, timedelta(hours=window_hours))

    @api.get(
        "/incidents/{incident_id}",
        summary="One incident with the findings it holds",
        response_model=IncidentDetail,
    )
    async def incident(_: Reader, incident_id: int) -> IncidentDetail:
        return _found(await store.incident(monitor.db, incident_id), f"no incident {incident_id}")

    @api.post(
        "/incidents/{incident_id}/acknowledge",
        summary="Take an incident on (devops)",
        response_model=Incident,
    )
    async def acknowledge(who: Operator, incident_id: int) -> Incident:
        by = who.email or who.subject
        found = _found(
            await store.acknowledge(monitor.db, incident_id, by), f"no incident {incident_id}"
        )
        log.warning("incident %s acknowledged by %s", incident_id, by)
        return found

    @api.post(
        "/findings/{finding_id}/dismiss",
        summary="Dismiss an open finding, saying why (devops)",
        response_model=Finding,
        responses={409: {"description": "the finding was cleared already"}},
    )
    async def dismiss(who: Operator, finding_id: int, dismissal: Dismissal) -> Finding:
        by = who.email or who.subject
        try:
            found = await store.dismiss(monitor.db, finding_id, by, dismissal.reason)
        except store.FindingCleared as exc:
            raise HTTPException(409, str(exc)) from None
        found = _found(found, f"no finding {finding_id}")
        # At WARNING, like acknowledging: a person silenced what the monitor reported.
        log.warning(
            "finding %s (%s, order %s at %s) dismissed by %s: %s",
            finding_id,
            found.state,
            found.order_id,
            found.where,
            by,
            dismissal.reason,
        )
        return found

    @api.get("/uptime", summary="Availability per service over a window", response_model=Uptime)
    async def uptime(_: Reader, window_hours: float = Query(24.0, gt=0, le=24.0 * 366)) -> Uptime:
        return await store.uptime(
            monitor.db,
            list(SERVICE_NAMES.values()),
            timedelta(hours=window_hours),
            settings.probe_seconds,
        )

    app.include_router(api)
    return app


def _found(value: T | None, missing: str) -> T:
    """The value, or a 404 whose text says what is missing."""
    if value is None:
        raise HTTPException(404, missing)
    return value


def _judge(moves: list[Move], slo: Slo) -> None:
    """Adds to each move how long the order waited at the status it left (since the move to
    that status), what the SLO of that status allows, and whether that was met. When no span
    reported the move to the status it left (Journey.not_seen), how long it waited there is
    unknown: the time since an earlier move spans several steps and would make a missed SLO
    up."""
    arrived = {move.status: move.at for move in moves}
    for move in moves:
        step = slo.step(move.from_)
        previous = arrived.get(move.from_)
        waited = (move.at - previous).total_seconds() if previous else None
        move.waited_seconds = waited
        move.slo_seconds = step.within.total_seconds() if step else None
        move.slo_met = (
            waited <= move.slo_seconds
            if waited is not None and move.slo_seconds is not None
            else None
        )


def run_monitor() -> None:
    """Run loupe-monitor until SIGINT/SIGTERM."""
    from loupe.service.http import serve
    from loupe.telemetry import configure_telemetry

    try:
        settings = MonitorSettings.from_env()
        app = create_app(settings, intake_token=intake.read_token(settings.intake_token_file))
    except (SloError, ValueError) as exc:
        raise SystemExit(f"loupe-monitor: {exc}") from None
    configure_telemetry("loupe-monitor")
    # Its own intake and scrapes untraced: each would otherwise make a span that comes back
    # through Jaeger to the intake.
    serve(app, settings.host, settings.port, excluded_urls="healthz,v1/traces,metrics")
