"""The console benchmark: how long loupe-portal takes to answer its two heaviest pages, and
how soon Chromium has a usable order page, measured on real processes in one run.

- The Now page with 1,000 stuck or broken orders in 20 places (6 stuck at SLO steps, 14
  broken at different operations), found by the real monitor's detection.
- The order page of an order with 6 traces and about 100 spans in the real Jaeger (memory
  storage), linked step to step, and its journey in the monitor.

Jaeger, the monitor and the portal run as processes (`loupe monitor`, `loupe portal`) in a
sandbox; the ID token they check is signed by a key this benchmark makes, whose keys it
serves on a loopback port as an OpenID Connect issuer would. Requests alternate between the
pages and the upstream calls each page makes (the monitor's API, Jaeger's search), so the
portal's own share is measured side by side. Results go to the console and to the `console`
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind
from rich.console import Console
from rich.table import Table

from loupe.bench.measure import machine, percentile, spread
from loupe.bench.report import write_section
from loupe.bench.slo import slo_toml
from loupe.config import SERVICE_NAMES
from loupe.monitor import store
from loupe.monitor.slo import Slo
from loupe.monitor.spans import SpanFacts
from loupe.orders.lifecycle import HAPPY_PATH
from loupe.stack.components import (
    JaegerPorts,
    jaeger_process,
    monitor_process,
    portal_process,
)
from loupe.stack.gateway import Secrets
from loupe.stack.process import free_port
from loupe.stack.sandbox import Sandbox
from loupe.stack.supervisor import Stack
from loupe.telemetry.attributes import ORDER_ID, ORDER_STATUS_FROM, ORDER_STATUS_TO

SECTION = "console"
CLIENT_ID = "loupe-bench"
STUCK_PLACES = 6
BROKEN_PLACES = 14
AIMS = {"now": 0.300, "order": 0.150, "browser": 1.0}


class _Issuer:
    """An OpenID Connect issuer on loopback: its discovery document and keys, and tokens
    signed with them, so the monitor and the portal verify as they do behind the gateway."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        documents = {
            "/.well-known/openid-configuration": {
                "issuer": self.url,
                "jwks_uri": f"{self.url}/keys",
            },
            "/keys": {"keys": [{**public, "kid": "bench", "use": "sig", "alg": "RS256"}]},
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(documents.get(self.path, {})).encode()
                self.send_response(200 if self.path in documents else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def token(self) -> str:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": CLIENT_ID,
            "sub": "bench",
            "email": "developer@example.com",
            "groups": ["developers"],
            "iat": now,
            "exp": now + 3600,
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "bench"})

    def close(self) -> None:
        self._server.shutdown()


def _facts(
    order_id: str,
    status_from: str,
    status_to: str | None,
    at: datetime,
    *,
    trace_id: str | None = None,
    span_id: str | None = None,
    service: str = "shop-api",
    name: str = "POST /orders",
    error: str | None = None,
    place: str | None = None,
) -> SpanFacts:
    return SpanFacts(
        trace_id=trace_id or uuid.uuid4().hex,
        span_id=span_id or uuid.uuid4().hex[:16],
        parent_span_id=None,
        service=service,
        name=name,
        kind="SERVER",
        started_at=at - timedelta(milliseconds=20),
        ended_at=at,
        order_id=order_id,
        status_from=status_from if status_to else None,
        status_to=status_to,
        source="shop",
        failure_reason=None,
        error=error is not None,
        error_message=error,
        error_type="RuntimeError" if error else None,
        dead_lettered=False,
        place=place or name,
        links=(),
    )


def _findings_spans(orders: int, now: datetime, slo: Slo) -> list[SpanFacts]:
    """`orders` orders: most waiting past the SLO at one of six statuses, the rest failed at
    one of fourteen operations after they were submitted."""
    spans = []
    broken = orders * BROKEN_PLACES // (STUCK_PLACES + BROKEN_PLACES)
    for n in range(orders):
        order_id = f"bench-{n:05d}"
        at = now - timedelta(seconds=120 - n * 0.05)
        if n < broken:
            spans.append(_facts(order_id, "NEW", "SUBMITTED", at))
            place = f"process step-{n % BROKEN_PLACES:02d}"
            spans.append(
                _facts(
                    order_id,
                    "",
                    None,
                    at + timedelta(seconds=5),
                    service=SERVICE_NAMES["mes"],
                    name=place,
                    error="the model could not be priced",
                )
            )
            continue
        statuses = [s.value for s in HAPPY_PATH]
        reached = n % STUCK_PLACES
        for step in range(reached + 1):
            spans.append(
                _facts(
                    order_id,
                    statuses[step - 1] if step else "NEW",
                    statuses[step],
                    at + timedelta(milliseconds=step * 10),
                )
            )
        # Past its queue, the service that must act has the order (its copy of the move):
        # the order then waits for a person there, a place of its own.
        waiting = slo.step(statuses[reached])
        if waiting is not None and waiting.then:
            spans.append(
                _facts(
                    order_id,
                    statuses[reached - 1] if reached else "NEW",
                    statuses[reached],
                    at + timedelta(milliseconds=reached * 10 + 5),
                    service=waiting.service,
                    name="process loupe.orders",
                )
            )
    return spans


MS = 1_000_000  # nanoseconds


@dataclass(frozen=True)
class _StepWriter:
    """Writes the child spans of one step's trace, at offsets in milliseconds from `base`."""

    tracers: dict[str, trace.Tracer]
    order_id: str
    base: int

    def __call__(
        self,
        service: str,
        name: str,
        begin: int,
        length: int,
        parent: trace.Span,
        kind: SpanKind = SpanKind.INTERNAL,
        **attributes: str,
    ) -> trace.Span:
        made = self.tracers[service].start_span(
            name,
            context=trace.set_span_in_context(parent),
            kind=kind,
            start_time=self.base + begin * MS,
            attributes={ORDER_ID: self.order_id, **attributes},
        )
        made.end(end_time=self.base + (begin + length) * MS)
        return made


@dataclass(frozen=True)
class LinkedOrder:
    order_id: str
    traces: int
    spans: int


def _export_order(jaeger: JaegerPorts, now: datetime) -> tuple[LinkedOrder, list[SpanFacts]]:
    """An order whose six steps are six traces of about 17 spans across the three services,
    each linked to the step before, sent to Jaeger; and the monitor's facts of its moves."""
    order_id = f"bench-order-{uuid.uuid4().hex[:8]}"
    providers = {}
    for service in SERVICE_NAMES.values():
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        exporter = OTLPSpanExporter(endpoint=f"{jaeger.otlp_http_url}/v1/traces", timeout=10)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers[service] = provider
    tracers = {s: p.get_tracer("loupe.bench") for s, p in providers.items()}
    statuses = ["NEW", *(s.value for s in HAPPY_PATH)]
    owners = ["shop-api", "mes-api", "crm-api", "mes-api", "mes-api", "crm-api"]
    facts = []
    previous: trace.SpanContext | None = None
    spans = 0
    start = now - timedelta(minutes=30)
    for step, owner in enumerate(owners):
        base = int((start + timedelta(minutes=step * 4)).timestamp() * 1e9)
        root = tracers[owner].start_span(
            f"POST /orders/{{order_id}}/step-{step}",
            kind=SpanKind.SERVER,
            start_time=base,
            links=[Link(previous)] if previous else None,
            attributes={ORDER_ID: order_id},
        )
        write = _StepWriter(tracers, order_id, base)
        moved = write(
            owner,
            "UPDATE orders",
            3,
            4,
            root,
            **{ORDER_STATUS_FROM: statuses[step], ORDER_STATUS_TO: statuses[step + 1]},
        )
        for n in range(5):
            write(owner, "SELECT orders", 8 + n * 2, 1, root, SpanKind.CLIENT)
        publish = write(owner, "publish loupe.orders", 20, 3, root, SpanKind.PRODUCER)
        for n, other in enumerate(s for s in SERVICE_NAMES.values() if s != owner):
            consume = write(
                other, "process loupe.orders", 26 + n * 4, 12, publish, SpanKind.CONSUMER
            )
            for k in range(3):
                write(other, "UPDATE orders", 28 + n * 4 + k * 3, 2, consume, SpanKind.CLIENT)
        root.end(end_time=base + 60 * MS)
        spans += 17
        context = root.get_span_context()
        facts.append(
            _facts(
                order_id,
                statuses[step],
                statuses[step + 1],
                datetime.fromtimestamp((base + 7 * MS) / 1e9, UTC),
                trace_id=format(context.trace_id, "032x"),
                span_id=format(moved.get_span_context().span_id, "016x"),
                service=owner,
            )
        )
        previous = context
    for provider in providers.values():
        provider.shutdown()
    return LinkedOrder(order_id, len(owners), spans), facts


async def _seed(dsn: str, database: str, spans: list[SpanFacts], slo: Slo) -> None:
    pool = await store.open_store(dsn, database)
    try:
        for start in range(0, len(spans), 500):
            batch = spans[start : start + 500]
            await store.ingest(pool, batch, slo, len(batch))
    finally:
        await pool.close()


@dataclass
class Timings:
    values: dict[str, list[float]]

    def add(self, name: str, seconds: float) -> None:
        self.values.setdefault(name, []).append(seconds)


def _timed(client: httpx.Client, url: str, headers: dict[str, str]) -> tuple[float, httpx.Response]:
    began = time.perf_counter()
    response = client.get(url, headers=headers)
    return time.perf_counter() - began, response


@contextmanager
def _running(root: Path, findings: int) -> Iterator[dict[str, Any]]:
    issuer = _Issuer()
    try:
        with Sandbox(root) as sandbox:
            slo_file = root / "slo.toml"
            # Every step due after a second, so detection finds every order at once; errors count
            # after a second too.
            slo_file.write_text(slo_toml("1s", "1s"), encoding="utf-8")
            jaeger = JaegerPorts.pick_free()
            portal_url = f"http://127.0.0.1:{free_port()}"
            env = {
                **sandbox.env,
                "LOUPE_MONITOR_SLO_FILE": str(slo_file),
                "LOUPE_OIDC_ISSUER_URL": issuer.url,
                "LOUPE_OIDC_CLIENT_ID": CLIENT_ID,
                "LOUPE_PORTAL_URL": portal_url,
                "LOUPE_CONSOLE_URL": portal_url,
                "LOUPE_JAEGER_QUERY_URL": jaeger.query_url,
            }
            now = datetime.now(UTC)
            slo = Slo.load(slo_file)
            keys = Secrets.ensure(root / "secrets")
            stack = Stack(
                [
                    jaeger_process("memory", jaeger, logs_dir=sandbox.logs),
                    monitor_process(
                        env | keys.monitor_env(),
                        otlp_endpoint=jaeger.otlp_http_url,
                        logs_dir=sandbox.logs,
                    ),
                    portal_process(env, otlp_endpoint=jaeger.otlp_http_url, logs_dir=sandbox.logs),
                ]
            )
            with stack:
                order, moves = _export_order(jaeger, now)
                asyncio.run(
                    _seed(
                        sandbox.settings.postgres_dsn_of(sandbox.settings.database_name("monitor")),
                        sandbox.settings.database_name("monitor"),
                        # The linked order waits at SHIPPED past its SLO: one of the findings.
                        _findings_spans(findings - 1, now, slo) + moves,
                        slo,
                    )
                )
                yield {
                    "portal": portal_url,
                    "monitor": sandbox.monitor_url,
                    "jaeger": jaeger,
                    "order": order,
                    "token": issuer.token(),
                    "database": sandbox.settings.postgres_dsn_of(
                        sandbox.settings.database_name("monitor")
                    ),
                }
    finally:
        issuer.close()


def _wait_for_findings(
    client: httpx.Client, monitor: str, headers: dict[str, str], want: int
) -> int:
    deadline = time.monotonic() + 60
    count = 0
    while time.monotonic() < deadline:
        answer = client.get(f"{monitor}/monitor/api/findings", headers=headers)
        count = answer.json()["count"] if answer.status_code == 200 else 0
        if count >= want:
            return count
        time.sleep(0.5)
    raise RuntimeError(f"the monitor found {count} of {want} orders within 60 s")


def _browser_loads(url: str, headers: dict[str, str], loads: int) -> list[float]:
    """Seconds from navigation start to the order page usable: its waterfall drawn and the
    load event fired, in Debian's headless Chromium."""
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    seconds = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        try:
            context = browser.new_context(
                viewport={"width": 1280, "height": 800}, extra_http_headers=headers
            )
            page = context.new_page()
            for _ in range(loads + 1):  # the first load warms the cache, as a person's would
                page.goto(url, wait_until="load")
                page.wait_for_selector(".band-head")
                seconds.append(
                    page.evaluate(
                        "performance.getEntriesByType('navigation')[0].loadEventEnd / 1000"
                    )
                )
            context.close()
        finally:
            browser.close()
    return seconds[1:]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("console benchmark")
    group.add_argument(
        "--console-requests", type=int, default=60, help="requests per page (default 60)"
    )
    group.add_argument(
        "--console-findings", type=int, default=1000, help="orders on the Now page (1000)"
    )


def run(args: argparse.Namespace, console: Console, output: Path) -> None:
    """Run the benchmark, print the results and write the `console` section of `output`."""
    timings = Timings({})
    console.print("starting Jaeger, the monitor and the portal; seeding their data")
    with (
        tempfile.TemporaryDirectory(prefix="loupe-bench-") as root,
        _running(Path(root), args.console_findings) as running,
    ):
        headers = {"Authorization": f"Bearer {running['token']}"}
        order: LinkedOrder = running["order"]
        with httpx.Client(trust_env=False, timeout=30) as client:
            found = _wait_for_findings(client, running["monitor"], headers, args.console_findings)
            console.print(f"the monitor reports {found} orders stuck or broken")
            page_urls = {
                "now": f"{running['portal']}/",
                "order": f"{running['portal']}/orders/{order.order_id}",
            }
            upstream_urls = {
                "now: monitor findings": f"{running['monitor']}/monitor/api/findings",
                "order: monitor journey": (
                    f"{running['monitor']}/monitor/api/orders/{order.order_id}/journey"
                ),
            }
            jaeger: JaegerPorts = running["jaeger"]
            tags = json.dumps({ORDER_ID: order.order_id})
            checked = client.get(page_urls["order"], headers=headers)
            if checked.text.count('class="band-head"') != order.traces:
                raise RuntimeError("the order page does not show the order's six traces")
            places = client.get(page_urls["now"], headers=headers).text.count("data-place=")
            if places != STUCK_PLACES + BROKEN_PLACES:
                raise RuntimeError(f"the Now page shows {places} places, not 20")
            with console.status("measuring the pages"):
                for _ in range(args.console_requests):
                    for name, url in page_urls.items():
                        seconds, response = _timed(client, url, headers)
                        response.raise_for_status()
                        timings.add(name, seconds)
                    for name, url in upstream_urls.items():
                        timings.add(name, _timed(client, url, headers)[0])
                    began = time.perf_counter()
                    for service in SERVICE_NAMES.values():
                        client.get(
                            f"{jaeger.query_url}/api/traces",
                            params={"service": service, "tags": tags, "limit": "100"},
                        )
                    timings.add("order: Jaeger search", time.perf_counter() - began)
        with console.status("Chromium loading the order page"):
            timings.values["browser"] = _browser_loads(page_urls["order"], headers, 20)
    body = _report(timings, args, order)
    console.print(_table(timings, args, order))
    write_section(output, SECTION, body)
    console.print(f"written to the `{SECTION}` section of {output}")


ROWS: list[tuple[str, str, Callable[[argparse.Namespace, LinkedOrder], str]]] = [
    ("now", "Now page", lambda a, _: f"{a.console_findings} orders in 20 places"),
    ("order", "order page", lambda _, o: f"{o.traces} traces, {o.spans} spans"),
    ("browser", "Chromium: order page usable", lambda _, o: f"{o.traces} traces, {o.spans} spans"),
    ("now: monitor findings", "… of which the monitor's /findings", lambda *_: "the same 1000"),
    ("order: monitor journey", "… of which the monitor's journey", lambda *_: "6 moves"),
    ("order: Jaeger search", "… of which Jaeger's search (3 services)", lambda *_: ""),
]


def _ms(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value >= 0.01 else f"{value * 1000:.1f} ms"


def _figures(
    timings: Timings, args: argparse.Namespace, order: LinkedOrder
) -> Iterator[tuple[str, str, str, str, str, str]]:
    """Per measured row: what, for what, p50, p95, spread and the aim."""
    for key, label, detail in ROWS:
        values = timings.values.get(key, [])
        if not values:
            continue
        aim = AIMS.get(key)
        yield (
            label,
            detail(args, order),
            _ms(percentile(values, 50)),
            _ms(percentile(values, 95)),
            f"±{spread(values) * 100:.0f}%",
            f"p95 ≤ {_ms(aim)}" if aim else "",
        )


def _table(timings: Timings, args: argparse.Namespace, order: LinkedOrder) -> Table:
    table = Table("what", "for", "p50", "p95", "spread", "aim")
    for row in _figures(timings, args, order):
        table.add_row(*row)
    return table


def _report(timings: Timings, args: argparse.Namespace, order: LinkedOrder) -> str:
    lines = [
        "## Console",
        "",
        f"One run at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}.",
        "",
        "Jaeger (memory), `loupe monitor` and `loupe portal` as processes; the monitor's "
        f"detection found {args.console_findings} orders stuck (6 SLO steps) or broken "
        "(14 operations) from spans written to its database, and the order's 6 linked traces "
        "were sent to Jaeger over OTLP. Each page was asked for "
        f"{args.console_requests} times, alternating with the upstream calls it makes, with "
        "the ID token of a developer (verified as behind the gateway). Times are from request "
        "to the whole response, on loopback; Chromium's is from navigation start to the load "
        "event with the waterfall drawn, after one warming load.",
        "",
        "| what | for | p50 | p95 | spread | aim |",
        "|---|---|---:|---:|---:|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _figures(timings, args, order)]
    median = {key: statistics.median(values) for key, values in timings.values.items()}
    now_share = median["now: monitor findings"] / median["now"]
    order_share = (median["order: monitor journey"] + median["order: Jaeger search"]) / median[
        "order"
    ]
    lines += [
        "",
        f"The monitor's own answer is {now_share:.0%} of the Now page's median time; the "
        f"order page's upstream calls add up to {order_share:.0%} "
        "of its median if made one after the other (the portal makes them at once). Spread "
        "is half the range relative to the mean.",
    ]
    return "\n".join(lines)
