"""loupe-monitor's HTTP side on a throwaway database: OTLP/HTTP intake, the role-checked JSON
API under /monitor/api (ID tokens from a fake OpenID Connect provider), Prometheus metrics and
uptime from health probes. Driven with httpx through ASGI, the app's lifespan entered around it
(so detection and probes run in the test's event loop, where the app's pool lives)."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import logging
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from loupe.access import AccessSettings, Jwks, TokenVerifier
from loupe.database import drop_database, dsn_for
from loupe.monitor import store
from loupe.monitor.app import Monitor, create_app
from loupe.monitor.settings import MonitorSettings
from loupe.monitor.spans import MAX_NAME_BYTES
from tests.support.integration import POSTGRES_DSN, SANDBOX
from tests.support.otlp_requests import export_requests
from tests.support.otlp_spans import Spans, ago, otlp, slo

pytestmark = pytest.mark.integration

INTAKE_TOKEN = secrets.token_urlsafe(32)
PROTOBUF = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {INTAKE_TOKEN}"}
ACCESS = AccessSettings()
SLO = slo("SUBMITTED", "PRICE_CALCULATED")
FINDING_FIELDS = {"order_id", "state", "status", "since", "service", "where", "trace_id"}


# -- identity: a fake OpenID Connect provider, through httpx's mock transport ---------------

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _provider(request: httpx.Request) -> httpx.Response:
    issuer = ACCESS.issuer
    if request.url.path.endswith("/.well-known/openid-configuration"):
        return httpx.Response(200, json={"issuer": issuer, "jwks_uri": f"{issuer}/keys"})
    if request.url.path.endswith("/keys"):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
        return httpx.Response(200, json={"keys": [{**jwk, "kid": "k1", "use": "sig"}]})
    return httpx.Response(404)


def verifier() -> TokenVerifier:
    return TokenVerifier(
        Jwks(ACCESS.issuer, transport=httpx.MockTransport(_provider)), ACCESS.client_id
    )


def bearer(email: str, groups: list[str]) -> dict[str, str]:
    now = int(time.time())
    claims = {
        "iss": ACCESS.issuer,
        "aud": ACCESS.client_id,
        "sub": email.split("@")[0],
        "email": email,
        "groups": groups,
        "iat": now,
        # Hours: these are made when the module is collected, long before its tests run.
        "exp": now + 6 * 3600,
    }
    token = jwt.encode(claims, KEY, algorithm="RS256", headers={"kid": "k1"})
    return {"Authorization": f"Bearer {token}"}


DEVELOPER = bearer("developer@example.com", ["developers"])
DEVOPS = bearer("devops@example.com", ["devops"])
GUEST = bearer("guest@example.com", [])
FORGED = {
    "X-Forwarded-User": "devops",
    "X-Forwarded-Email": "devops@example.com",
    "X-Forwarded-Groups": "devops",
}


# -- spans, made with the real SDK and sent as OTLP ----------------------------------------


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def ended(span: ReadableSpan) -> datetime:
    """When the span ended, as the monitor reads it from OTLP."""
    return datetime.fromtimestamp((span.end_time or 0) / 1e9, UTC)


def trace_id(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")


# -- the app on a throwaway database ---------------------------------------------------------


def closed_port() -> int:
    """A port nothing listens on (just released by the OS)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A database prefix of this test's own; the monitor's database is dropped at the end."""
    prefix = f"loupe_test_{uuid.uuid4().hex[:12]}"
    yield prefix
    connection = await asyncpg.connect(dsn_for(POSTGRES_DSN, "postgres"))
    try:
        await drop_database(connection, f"{prefix}_monitor")
    finally:
        await connection.close()


def settings_for(prefix: str, service_urls: dict[str, str] | None = None) -> MonitorSettings:
    urls = service_urls or {s: f"http://127.0.0.1:{closed_port()}" for s in ("shop", "crm", "mes")}
    # The session's vhost as the monitor's own user; the throwaway database as the tests'.
    base = dataclasses.replace(
        SANDBOX.settings, database_prefix=prefix, postgres_dsn=POSTGRES_DSN, service_urls=urls
    )
    return MonitorSettings(base=base, access=ACCESS)


class Api(httpx.AsyncClient):
    """A client of one running monitor app; `monitor` is what the app holds."""

    monitor: Monitor

    async def read(self, path: str, headers: dict[str, str] = DEVELOPER) -> Any:
        response = await self.get(path, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()


Start = Callable[..., Awaitable[Api]]


@pytest.fixture
async def open_app(prefix: str) -> AsyncIterator[Start]:
    """Starts the monitor (lifespan: create, migrate, open the pool); stopped at the end."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(service_urls: dict[str, str] | None = None) -> Api:
            settings = settings_for(prefix, service_urls)
            app = create_app(
                settings,
                intake_token=INTAKE_TOKEN,
                verifier=verifier(),
                run_loops=False,
                slo=SLO,
            )
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = Api(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8091")
            client.monitor = app.state.monitor
            return await stack.enter_async_context(client)

        yield start


@pytest.fixture
async def client(open_app: Start) -> Api:
    return await open_app()


async def send(client: Api, spans: Sequence[ReadableSpan]) -> httpx.Response:
    response = await client.post("/v1/traces", content=otlp(spans), headers=PROTOBUF)
    assert response.status_code == 200, response.text
    return response


async def metrics(client: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def received(seen: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    """Spans received, by the service that sent them."""
    return {
        dict(labels)["service"]: value
        for (name, labels), value in seen.items()
        if name == "loupe_monitor_spans_received_total"
    }


# -- OTLP intake ----------------------------------------------------------------------------


async def test_otlp_protobuf_and_gzip_are_stored(client: Api) -> None:
    made = Spans()
    submitted = made.happy_move(0, "o-1", ago(3))
    noise = made.make("shop-api", "SELECT orders", ago(3))
    response = await client.post("/v1/traces", content=otlp([submitted, noise]), headers=PROTOBUF)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse()
    answer.ParseFromString(response.content)
    assert not answer.HasField("partial_success")

    priced = made.happy_move(1, "o-1", ago(1))
    response = await client.post(
        "/v1/traces",
        content=gzip.compress(otlp([priced])),
        headers={**PROTOBUF, "Content-Encoding": "gzip"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-protobuf"

    journey = await client.read("/monitor/api/orders/o-1/journey")
    assert journey["status"] == "PRICE_CALCULATED"
    assert [(m["status"], m["service"]) for m in journey["transitions"]] == [
        ("SUBMITTED", "shop-api"),
        ("PRICE_CALCULATED", "mes-api"),
    ]
    seen = await metrics(client)
    assert received(seen) == {"shop-api": 2, "mes-api": 1}
    assert seen[("loupe_monitor_spans_kept_total", ())] == 2


async def test_otlp_refuses_other_content_types_and_garbage(client: Api) -> None:
    span = Spans().happy_move(0, "o-x", ago(1))
    body = otlp([span])
    for content_type in ("application/json", "text/plain", ""):
        response = await client.post(
            "/v1/traces", content=body, headers={**PROTOBUF, "Content-Type": content_type}
        )
        assert response.status_code == 415, content_type
        assert "application/x-protobuf" in response.json()["detail"]
    garbage = await client.post("/v1/traces", content=b"\xff\xfenot protobuf", headers=PROTOBUF)
    assert garbage.status_code == 400
    assert "not an OTLP ExportTraceServiceRequest" in garbage.json()["detail"]
    not_gzip = await client.post(
        "/v1/traces", content=body, headers={**PROTOBUF, "Content-Encoding": "gzip"}
    )
    assert not_gzip.status_code == 400
    brotli = await client.post(
        "/v1/traces", content=body, headers={**PROTOBUF, "Content-Encoding": "br"}
    )
    assert brotli.status_code == 415
    # Nothing of it was stored.
    unknown = await client.get("/monitor/api/orders/o-x/journey", headers=DEVELOPER)
    assert unknown.status_code == 404
    assert received(await metrics(client)) == {}


async def test_spans_the_database_cannot_take_get_503_so_the_sender_retries(
    client: Api,
) -> None:
    # OTLP senders drop a batch answered 500 and retry one answered 503 (Jaeger's otlphttp
    # exporter does), so a database the monitor cannot reach must answer 503.
    span = Spans().happy_move(0, "o-db", ago(1))
    await client.monitor.db.close()
    response = await client.post("/v1/traces", content=otlp([span]), headers=PROTOBUF)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert "retry" in response.json()["detail"]
    assert received(await metrics(client)) == {}


TRANSIENT = [
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.ClientCannotConnectError("could not connect"),
    asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.CrashShutdownError("terminating connection because of crash of another process"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.SerializationError("could not serialize access due to concurrent update"),
    asyncpg.DeadlockDetectedError("deadlock detected"),
    asyncpg.InterfaceError("pool is closing"),
    asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError(),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
async def test_every_transient_database_condition_gets_503_never_500(
    client: Api, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    async def unavailable(*_: object) -> store.IngestResult:
        raise error

    monkeypatch.setattr(store, "ingest", unavailable)
    span = Spans().happy_move(0, "o-db", ago(1))
    response = await client.post("/v1/traces", content=otlp([span]), headers=PROTOBUF)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"


async def test_spans_postgresql_cannot_store_cost_only_themselves(
    client: Api, caplog: pytest.LogCaptureFixture
) -> None:
    made = Spans()
    good = [made.happy_move(0, "o-good", ago(3)), made.happy_move(0, "o-op", ago(3))]
    nul_order = made.happy_move(0, "o-\x00", ago(2))
    long_order = made.happy_move(0, secrets.token_hex(MAX_NAME_BYTES), ago(2))
    # An error with a NUL byte in its operation and its message: the values are cleaned and
    # the error stored, so it still counts against its order.
    garbled = made.make(
        "mes-api", "price\x00order", ago(1), order_id="o-op", error="STL header b'\x00\x00'"
    )
    with caplog.at_level(logging.WARNING, "loupe.monitor.app"):
        response = await client.post(
            "/v1/traces",
            content=otlp([good[0], nul_order, long_order, garbled, good[1]]),
            headers=PROTOBUF,
        )
    assert response.status_code == 200, response.text

    assert (await client.read("/monitor/api/orders/o-good/journey"))["status"] == "SUBMITTED"
    journey = await client.read("/monitor/api/orders/o-op/journey")
    assert journey["status"] == "SUBMITTED"
    assert [(e["where"], e["message"]) for e in journey["errors"]] == [
        ("price\ufffdorder", "STL header b'\ufffd\ufffd'")
    ]
    seen = await metrics(client)
    unstorable = "loupe_monitor_spans_unstorable_total"
    assert seen[(unstorable, (("outcome", "dropped"), ("reason", "nul byte")))] == 1
    assert seen[(unstorable, (("outcome", "dropped"), ("reason", "too long")))] == 1
    assert seen[(unstorable, (("outcome", "cleaned"), ("reason", "nul byte")))] == 1
    assert seen[("loupe_monitor_spans_kept_total", ())] == 5
    span_id = format(nul_order.context.span_id, "016x")
    (dropped,) = [r.getMessage() for r in caplog.records if span_id in r.getMessage()]
    assert "nul byte in order_id; dropped" in dropped
    assert "nul byte in name, place, error_message; stored with those values cleaned" in (
        caplog.text
    )


async def test_gzip_members_are_joined_and_cut_or_inflated_bodies_refused(client: Api) -> None:
    made = Spans()
    first = otlp([made.happy_move(0, "o-a", ago(2))])
    second = otlp([made.happy_move(0, "o-b", ago(2))])
    gzipped = {**PROTOBUF, "Content-Encoding": "gzip"}
    # Two gzip members, one after the other (as `cat a.gz b.gz`): one body, both requests'
    # spans (protobuf messages concatenate).
    joined = await client.post(
        "/v1/traces", content=gzip.compress(first) + gzip.compress(second), headers=gzipped
    )
    assert joined.status_code == 200, joined.text
    for order in ("o-a", "o-b"):
        assert (await client.read(f"/monitor/api/orders/{order}/journey"))["status"] == "SUBMITTED"

    cut = await client.post("/v1/traces", content=gzip.compress(first)[:-12], headers=gzipped)
    assert cut.status_code == 400
    assert "cut short" in cut.json()["detail"]
    # A small body that inflates past the limit is refused before it fills memory.
    limit = client.monitor.settings.intake_max_bytes
    bomb = gzip.compress(bytes(limit + 1), compresslevel=9)
    assert len(bomb) < limit // 100
    inflated = await client.post("/v1/traces", content=bomb, headers=gzipped)
    assert inflated.status_code == 413
    assert received(await metrics(client)) == {"shop-api": 2}


async def test_spans_out_of_time_are_refused_counted_and_the_rest_stored(client: Api) -> None:
    made = Spans()
    good = made.happy_move(0, "o-now", ago(2))
    ahead = client.monitor.settings.intake_ahead
    future = made.happy_move(0, "o-future", ago(-(ahead.total_seconds() + 60)))
    # A move to CLOSED from a week ago would hide a real order's finding (statuses only move
    # forward): older than retention, it is refused.
    old = made.happy_move(6, "o-now", ago(client.monitor.settings.retention.total_seconds() + 60))
    response = await client.post("/v1/traces", content=otlp([good, future, old]), headers=PROTOBUF)
    assert response.status_code == 200, response.text
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 2

    assert (await client.read("/monitor/api/orders/o-now/journey"))["status"] == "SUBMITTED"
    missing = await client.get("/monitor/api/orders/o-future/journey", headers=DEVELOPER)
    assert missing.status_code == 404
    seen = await metrics(client)
    refused = "loupe_monitor_spans_refused_total"
    assert seen[(refused, (("reason", "in the future"),))] == 1
    assert seen[(refused, (("reason", "older than retention"),))] == 1
    # Received is every span that came, refused or not: the last hop's count.
    assert received(seen) == {"shop-api": 2, "crm-api": 1}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=export_requests())
async def test_any_well_formed_request_is_stored_never_a_500(
    client: Api, request: ExportTraceServiceRequest
) -> None:
    """Whatever values a sender puts in a well-formed request, PostgreSQL included."""
    response = await client.post(
        "/v1/traces", content=request.SerializeToString(), headers=PROTOBUF
    )
    assert response.status_code == 200, response.text


# -- findings, journeys, incidents, metrics ---------------------------------------------------


async def test_a_stuck_order_is_found_journeyed_counted_and_acknowledged(client: Api) -> None:
    made = Spans()
    stuck = made.happy_move(0, "o-stuck", ago(40))
    moving = [
        made.happy_move(0, "o-moving", ago(10)),
        made.happy_move(1, "o-moving", ago(4), kind=SpanKind.CONSUMER),
    ]
    await send(client, [stuck, moving[0]])
    await send(client, [moving[1]])

    # Nothing is reported before detection runs.
    assert await client.read("/monitor/api/findings") == {
        "count": 0,
        "findings": [],
        "as_of": None,
    }
    before = datetime.now(UTC)
    result = await client.monitor.detect_once()
    assert [f.order_id for f in result.opened] == ["o-stuck"]

    body = await client.read("/monitor/api/findings")
    assert body["count"] == 1
    assert datetime.fromisoformat(body["as_of"]) >= before
    (finding,) = body["findings"]
    assert FINDING_FIELDS | {"evidence"} <= set(finding)
    assert {k: finding[k] for k in FINDING_FIELDS} == {
        "order_id": "o-stuck",
        "state": "stuck",
        "status": "SUBMITTED",
        "since": iso(ended(stuck)),
        "service": "mes-api",
        "where": "queue mes.order-submitted",
        "trace_id": trace_id(stuck),
    }
    assert re.match(
        r"no move from SUBMITTED for 4[01] s \(SLO 30 s\); last step by shop-api \(POST /orders\);"
        r" queue mes\.order-submitted",
        finding["evidence"],
    ), finding["evidence"]
    assert finding["deadline"] == iso(ended(stuck) + timedelta(seconds=30))
    assert (await client.read("/monitor/api/findings?state=stuck"))["count"] == 1
    assert (await client.read("/monitor/api/findings?state=broken"))["count"] == 0
    wrong = await client.get("/monitor/api/findings?state=lost", headers=DEVELOPER)
    assert wrong.status_code == 422

    journey = await client.read("/monitor/api/orders/o-moving/journey")
    fields = ("status", "from", "at", "service", "trace_id", "span_id")
    assert [{k: m[k] for k in fields} for m in journey["transitions"]] == [
        {
            "status": status,
            "from": status_from,
            "at": iso(ended(span)),
            "service": service,
            "trace_id": trace_id(span),
            "span_id": format(span.context.span_id, "016x"),
        }
        for span, service, (status_from, status) in zip(
            moving,
            ("shop-api", "mes-api"),
            (("NEW", "SUBMITTED"), ("SUBMITTED", "PRICE_CALCULATED")),
            strict=True,
        )
    ]
    # Each move against the SLO of the status it left: SUBMITTED may wait 30 s, NEW has none.
    first, second = journey["transitions"]
    assert (first["waited_seconds"], first["slo_seconds"], first["slo_met"]) == (None, None, None)
    assert second["waited_seconds"] == pytest.approx(
        (ended(moving[1]) - ended(moving[0])).total_seconds(), abs=0.01
    )
    assert (second["slo_seconds"], second["slo_met"]) == (30.0, True)
    assert journey["finding"] is None
    stuck_journey = await client.read("/monitor/api/orders/o-stuck/journey")
    assert stuck_journey["finding"]["state"] == "stuck"
    unknown = await client.get("/monitor/api/orders/o-unknown/journey", headers=DEVELOPER)
    assert unknown.status_code == 404
    assert "o-unknown" in unknown.json()["detail"]

    incidents = await client.read("/monitor/api/incidents")
    assert (incidents["open"], incidents["resolved"]) == (1, 0)
    assert incidents["mttd_seconds"] == pytest.approx(40, abs=3)
    assert incidents["mttr_seconds"] is None
    detect = incidents["time_to_detect"]
    assert detect["count"] == 1
    assert detect["median_seconds"] == detect["mean_seconds"] == incidents["mttd_seconds"]
    assert incidents["time_to_resolve"] == {
        "count": 0,
        "median_seconds": None,
        "mean_seconds": None,
    }
    (incident,) = incidents["incidents"]
    assert incident["status"] == "open" and incident["orders"] == 1
    assert (incident["state"], incident["service"], incident["where"]) == (
        "stuck",
        "mes-api",
        "queue mes.order-submitted",
    )
    assert incident["started_at"] == iso(ended(stuck))
    assert incident["time_to_detect_seconds"] == pytest.approx(40, abs=3)
    assert incident["detection_delay_seconds"] == pytest.approx(10, abs=3)
    assert incident["time_to_resolve_seconds"] is None
    assert incident["id"] == finding["incident_id"]
    resolved = await client.read("/monitor/api/incidents?status=resolved")
    assert resolved["incidents"] == []
    detail = await client.read(f"/monitor/api/incidents/{incident['id']}")
    assert {k: detail[k] for k in incident} == incident
    assert [(f["order_id"], f["cleared_at"]) for f in detail["findings"]] == [("o-stuck", None)]
    missing_incident = await client.get("/monitor/api/incidents/999999", headers=DEVELOPER)
    assert missing_incident.status_code == 404

    seen = await metrics(client)
    assert seen[("loupe_orders_stuck", (("step", "SUBMITTED"),))] == 1
    assert seen[("loupe_orders_stuck", (("step", "PRICE_CALCULATED"),))] == 0
    assert seen[("loupe_incidents_open", ())] == 1
    move = (("from_status", "SUBMITTED"), ("to_status", "PRICE_CALCULATED"))
    assert seen[("loupe_order_transition_duration_seconds_count", move)] == 1
    assert seen[("loupe_order_transition_duration_seconds_sum", move)] == pytest.approx(6, abs=0.1)
    assert seen[("loupe_monitor_detection_latency_seconds_count", ())] == 1

    path = f"/monitor/api/incidents/{incident['id']}/acknowledge"
    refused = await client.post(path, headers=DEVELOPER)
    assert refused.status_code == 403
    assert refused.json()["needs_group"] == ["devops"]
    response = await client.post(path, headers=DEVOPS)
    assert response.status_code == 200
    acknowledged = response.json()
    assert acknowledged["acknowledged_by"] == "devops@example.com"
    assert acknowledged["acknowledged_at"]
    assert acknowledged["status"] == "open", "acknowledging does not resolve"
    missing = await client.post("/monitor/api/incidents/999999/acknowledge", headers=DEVOPS)
    assert missing.status_code == 404
    # A stuck order's finding stays: it clears when the order moves on.
    assert (await client.read("/monitor/api/findings", DEVOPS))["count"] == 1

    # It moves on: the finding clears, the incident resolves, the gauges follow.
    await send(client, [made.happy_move(1, "o-stuck", ago(0.5))])
    result = await client.monitor.detect_once()
    assert result.cleared == 1 and len(result.incidents_resolved) == 1
    assert (await client.read("/monitor/api/findings"))["count"] == 0
    incidents = await client.read("/monitor/api/incidents")
    assert (incidents["open"], incidents["resolved"]) == (0, 1)
    assert incidents["mttr_seconds"] == pytest.approx(40, abs=3)
    seen = await metrics(client)
    assert seen[("loupe_orders_stuck", (("step", "SUBMITTED"),))] == 0
    assert seen[("loupe_incidents_open", ())] == 0
    assert seen[("loupe_mttr_seconds", ())] == pytest.approx(40, abs=3)
    assert seen[("loupe_time_to_resolve_median_seconds", ())] == seen[("loupe_mttr_seconds", ())]
    assert seen[("loupe_time_to_resolve_incidents", ())] == 1


async def test_a_move_after_a_status_not_seen_is_not_judged_against_its_slo(
    client: Api,
) -> None:
    # Submitted 100 s ago; the move to PRICE_CALCULATED was never reported. The 95 s until the
    # seller approved it span two steps: not a missed 30 s SLO of pricing's.
    made = Spans()
    await send(client, [made.happy_move(0, "o-gap", ago(100)), made.happy_move(2, "o-gap", ago(5))])
    journey = await client.read("/monitor/api/orders/o-gap/journey")
    assert journey["not_seen"] == [
        {"status": "PRICE_CALCULATED", "before": "MANUFACTURING_APPROVED"}
    ]
    _, approved = journey["transitions"]
    assert approved["from"] == "PRICE_CALCULATED"
    judged = (approved["waited_seconds"], approved["slo_seconds"], approved["slo_met"])
    assert judged == (None, 30.0, None)
    assert (await client.monitor.detect_once()).opened == []

    # Its pricing's span turns up after all: each wait is known now, and judged.
    await send(client, [made.happy_move(1, "o-gap", ago(60))])
    journey = await client.read("/monitor/api/orders/o-gap/journey")
    assert journey["not_seen"] == []
    _, priced, approved = journey["transitions"]
    assert priced["waited_seconds"] == pytest.approx(40, abs=0.5)
    assert approved["waited_seconds"] == pytest.approx(55, abs=0.5)
    assert (priced["slo_met"], approved["slo_met"]) == (False, False)


async def test_devops_dismiss_a_finding_saying_why_and_it_counts_toward_nothing(
    client: Api, caplog: pytest.LogCaptureFixture
) -> None:
    await send(client, [Spans().happy_move(0, "o-test", ago(40))])
    (finding,) = (await client.monitor.detect_once()).opened
    path = f"/monitor/api/findings/{finding.id}/dismiss"

    refused = await client.post(path, json={"reason": "a test order"}, headers=DEVELOPER)
    assert refused.status_code == 403 and refused.json()["needs_group"] == ["devops"]
    for unsaid in ({}, {"reason": ""}, {"reason": "  "}, {"reason": "a\x00b"}):
        response = await client.post(path, json=unsaid, headers=DEVOPS)
        assert response.status_code == 422, unsaid
    assert (await client.read("/monitor/api/findings"))["count"] == 1, "nothing changed yet"

    with caplog.at_level(logging.WARNING, "loupe.monitor.app"):
        response = await client.post(path, json={"reason": " a test order "}, headers=DEVOPS)
    assert response.status_code == 200, response.text
    dismissed = response.json()
    assert (dismissed["id"], dismissed["order_id"]) == (finding.id, "o-test")
    assert dismissed["cleared_reason"] == "dismissed by devops@example.com: a test order"
    assert dismissed["cleared_at"] is not None
    assert f"finding {finding.id} (stuck, order o-test" in caplog.text
    assert "dismissed by devops@example.com: a test order" in caplog.text

    again = await client.post(path, json={"reason": "twice"}, headers=DEVOPS)
    assert again.status_code == 409
    assert (
        "cleared already (dismissed by devops@example.com: a test order)"
        in (again.json()["detail"])
    )
    missing = await client.post(
        "/monitor/api/findings/999999/dismiss", json={"reason": "x"}, headers=DEVOPS
    )
    assert missing.status_code == 404 and missing.json()["detail"] == "no finding 999999"

    # Its incident held nothing else: it resolves at once, in neither MTTD nor MTTR.
    result = await client.monitor.detect_once()
    assert result.opened == [], "the order is not reported again at that status"
    (resolved,) = result.incidents_resolved
    assert (resolved.dismissed, resolved.time_to_resolve_seconds) == (True, None)
    incidents = await client.read("/monitor/api/incidents")
    assert (incidents["open"], incidents["resolved"]) == (0, 1)
    assert (incidents["mttd_seconds"], incidents["mttr_seconds"]) == (None, None)
    assert (await client.read("/monitor/api/findings"))["count"] == 0


# -- who may read and act ---------------------------------------------------------------------

READS = [
    "/monitor/api/findings",
    "/monitor/api/orders/o-1/journey",
    "/monitor/api/incidents",
    "/monitor/api/uptime",
]
ACTS = ["/monitor/api/incidents/1/acknowledge", "/monitor/api/findings/1/dismiss"]


async def test_no_token_and_forged_headers_get_401(client: Api) -> None:
    for headers in ({}, FORGED, {"Authorization": "Bearer not-a-jwt", **FORGED}):
        for path in READS:
            response = await client.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.json()["error"] == "unauthenticated"
            assert response.headers["www-authenticate"] == 'Bearer realm="loupe-monitor"'
        for path in ACTS:
            response = await client.post(path, json={"reason": "x"}, headers=headers)
            assert response.status_code == 401, path


async def test_a_guest_without_a_group_gets_403(client: Api) -> None:
    for path in READS:
        response = await client.get(path, headers=GUEST)
        assert response.status_code == 403, path
        assert response.json()["needs_group"] == ["devops", "developers"]
    for path in ACTS:
        assert (await client.post(path, json={"reason": "x"}, headers=GUEST)).status_code == 403
    # Forwarded groups do not lift a guest either.
    assert (await client.get(READS[0], headers={**GUEST, **FORGED})).status_code == 403


async def test_metrics_need_no_token_and_the_intake_only_its_own(client: Api) -> None:
    assert (await client.get("/metrics")).status_code == 200
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    empty = await client.post("/v1/traces", content=otlp([]), headers=PROTOBUF)
    assert empty.status_code == 200
    # A person's ID token, even a devops', is no intake token.
    signed_in = {**PROTOBUF, **DEVOPS}
    assert (await client.post("/v1/traces", content=otlp([]), headers=signed_in)).status_code == 401


# -- uptime -----------------------------------------------------------------------------------


async def probe(client: Api) -> None:
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:
        await client.monitor.probe_once(http)


async def test_services_on_closed_ports_are_down(client: Api) -> None:
    await probe(client)
    uptime = await client.read("/monitor/api/uptime")
    assert uptime["services"] == {
        name: {"availability": 0.0, "samples": 1, "probe_failures": 1}
        for name in ("shop-api", "crm-api", "mes-api")
    }
    await client.monitor.detect_once()
    seen = await metrics(client)
    for name in ("shop-api", "crm-api", "mes-api"):
        assert seen[("loupe_service_up", (("service", name),))] == 0


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def healthy() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_a_healthy_service_is_up_until_it_serves_a_5xx(open_app: Start, healthy: str) -> None:
    closed = f"http://127.0.0.1:{closed_port()}"
    client = await open_app({"shop": healthy, "crm": closed, "mes": closed})
    before = await client.read("/monitor/api/uptime")
    assert before["services"]["shop-api"] == {
        "availability": None,
        "samples": 0,
        "probe_failures": 0,
    }
    await probe(client)
    # A request shop-api failed (a SERVER span with status ERROR, i.e. a 5xx) after that
    # probe: the next probe's interval is not up, though /healthz answers.
    failed = Spans().make(
        "shop-api", "POST /orders", datetime.now(UTC), error="HTTP 500", kind=SpanKind.SERVER
    )
    await send(client, [failed])
    await probe(client)
    services = (await client.read("/monitor/api/uptime"))["services"]
    assert services["shop-api"] == {"availability": 0.5, "samples": 2, "probe_failures": 0}
    assert services["crm-api"] == {"availability": 0.0, "samples": 2, "probe_failures": 2}
    await client.monitor.detect_once()
    assert (await metrics(client))[("loupe_service_up", (("service", "shop-api"),))] == 1
