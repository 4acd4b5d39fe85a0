"""The spans benchmark: what one span costs a service's process, component by component.

Everything runs in this one process, so no other process on the machine competes for what is
measured: each figure is CPU time of the thread that does the work (`time.thread_time`),
divided by the spans it made. The spans are one order's whole journey as docs/tracing.md
describes it and `loupe.bench.journeys` counts it (95 spans: HTTP server spans, every
database statement with its SQL text, as `LOUPE_TRACE_STATEMENTS_MIN_MS=0` records them,
publish and process spans, a person's transitions with a link, the stale deliveries' events),
started and ended through the OpenTelemetry SDK the way the services start them, with the
services' sampler and resource.

Components, each against what the same code costs without it:

* the SDK: starting, filling and ending a span, and the batch processor's queueing of it,
  against the no-op tracer that `OTEL_SDK_DISABLED=true` leaves;
* the instrumentations' wrappers around a request (FastAPI: with tracing on, against the same
  wrapper with tracing off and against no wrapper) and a query (loupe's statement spans, with
  and without a span, against no wrapper);
* on the batch processor's thread: redaction, the RetryingSpanExporter, OTLP encoding (the
  SDK's, and otlp-proto's when installed, for comparison) and the HTTP POST to a local sink
  that discards what it gets, at several batch sizes.

Variants are measured in rounds that take turns, so the machine's own drift spreads over all
of them; each figure is the median of its rounds, with their spread. Results go to the console
and to the `spans` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
from rich.console import Console
from rich.table import Table

from loupe.bench.journeys import JOURNEY, MES, SHOP, SpanSpec, constant_attributes, scope_of
from loupe.bench.measure import machine, spread
from loupe.bench.report import write_section
from loupe.telemetry.attributes import (
    LINK_REASON,
    ORDER_ID,
    PREVIOUS_STEP,
)
from loupe.telemetry.delivery import RetryingSpanExporter
from loupe.telemetry.encoding import LoupeOTLPSpanExporter
from loupe.telemetry.encoding import encode_spans as encode_spans_fast
from loupe.telemetry.redaction import RedactingSpanExporter
from loupe.telemetry.statements import StatementSpans

SECTION = "spans"

STALE_EVENT = "stale status event ignored"
BATCH_SIZES = (64, 512, 2048)

# The variants measured, by name.
OFF = "no-op tracer (OTEL_SDK_DISABLED)"
SDK = "SDK: start, fill, end"
QUEUED = "SDK: … and the batch processor's queue"
FASTAPI = "FastAPI request, "
ASYNCPG = "asyncpg query, "
REDACTION = "redaction"
DELIVERY = "RetryingSpanExporter"
ENCODING_SDK = "OTLP encoding: the SDK's"
ENCODING_LOUPE = "OTLP encoding: loupe's"
ENCODING_OTLP_PROTO = "OTLP encoding: otlp-proto"
EXPORT = "OTLP/HTTP export, loupe's encoder, batches of "
PATH_BEFORE = "batch thread, SDK's exporter"
PATH_AFTER = "batch thread, loupe's exporter"


@dataclass
class Figures:
    """Microseconds of CPU per span of each variant, one value per round."""

    rounds: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.rounds.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        return statistics.median(self.rounds[name])

    def spread(self, name: str) -> float:
        return spread(self.rounds[name])


def _cpu_us(work: Callable[[], int]) -> float:
    """CPU time of this thread for `work`, in µs per unit it returns."""
    gc.collect()
    start = time.thread_time_ns()
    units = work()
    return (time.thread_time_ns() - start) / units / 1000


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _Collect(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


RESOURCE = Resource.create(
    {"service.name": SHOP, "service.namespace": "loupe", "service.version": "0.1.0"}
)


def _provider(processor: str) -> TracerProvider:
    """The services' provider (resource, sampler); `processor` is `none`, `batch` (queueing
    only, to an exporter that discards) or `collect` (every span kept, for the later stages)."""
    provider = TracerProvider(resource=RESOURCE, sampler=ParentBased(ALWAYS_ON))
    if processor == "batch":
        # Queue room for every span of a round: the bench makes them faster than any service,
        # and a dropped span would cost less than a queued one.
        provider.add_span_processor(BatchSpanProcessor(_Discard(), max_queue_size=1_000_000))
    elif processor == "collect":
        collector = _Collect()
        provider.add_span_processor(SimpleSpanProcessor(collector))
        provider.collected = collector  # type: ignore[attr-defined]
    return provider


def _journey_spans(tracers: Callable[[str], trace.Tracer], orders: int) -> int:
    """Start and end `orders` whole journeys' spans; returns how many."""
    made = 0
    previous = Link(
        SpanContext(uuid.uuid4().int, 1, True, TraceFlags(TraceFlags.SAMPLED)),
        {LINK_REASON: PREVIOUS_STEP},
    )
    for _ in range(orders):
        order_id = str(uuid.uuid4())
        for specs in JOURNEY:
            made += _trace(tracers, specs, order_id, previous)
    return made


def _trace(
    tracers: Callable[[str], trace.Tracer], specs: Sequence[SpanSpec], order_id: str, link: Link
) -> int:
    root, *children = specs
    with _span(tracers, root, order_id, link):
        for spec in children:
            with _span(tracers, spec, order_id, link):
                pass
    return len(specs)


@contextmanager
def _span(
    tracers: Callable[[str], trace.Tracer], spec: SpanSpec, order_id: str, link: Link
) -> Iterator[trace.Span]:
    attributes = constant_attributes(spec)
    links = [link] if spec.move and spec.kind is SpanKind.INTERNAL else None
    with tracers(scope_of(spec)).start_as_current_span(
        spec.name, kind=spec.kind, attributes=attributes, links=links
    ) as span:
        if spec.has_order:
            # The services learn the order once the body is parsed: set after the start.
            span.set_attribute(ORDER_ID, order_id)
        if spec.kind is SpanKind.CONSUMER and not spec.move and spec.service != MES:
            span.add_event(STALE_EVENT, {"order.status": "SUBMITTED"})
        yield span


def _tracer_of(provider: trace.TracerProvider) -> Callable[[str], trace.Tracer]:
    cache: dict[str, trace.Tracer] = {}

    def tracer(scope: str) -> trace.Tracer:
        found = cache.get(scope)
        if found is None:
            found = cache[scope] = provider.get_tracer(scope, "0.1.0")
        return found

    return tracer


def finished_spans(orders: int) -> list[ReadableSpan]:
    """`orders` journeys' spans as the SDK hands them to the batch processor's exporter."""
    provider = _provider("collect")
    _journey_spans(_tracer_of(provider), orders)
    spans = list(provider.collected.spans)  # type: ignore[attr-defined]
    provider.shutdown()
    return spans


# -- the instrumentations' wrappers ------------------------------------------------------------


def _asgi_app(provider: trace.TracerProvider | None) -> Any:
    """A FastAPI app with one route shaped like a person's step, instrumented as
    service/http.py instruments the services' (None: not instrumented)."""
    from fastapi import FastAPI
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    app = FastAPI()

    @app.post("/orders/{order_id}/approve")
    async def approve(order_id: str) -> dict[str, str]:
        return {"id": order_id}

    if provider is not None:
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=provider, exclude_spans=["receive", "send"]
        )
    return app


async def _requests(app: Any, count: int) -> int:
    body = b"{}"
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    for _ in range(count):
        path = f"/orders/{uuid.uuid4()}/approve"
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1:8002"),
                (b"content-type", b"application/json"),
                (b"content-length", b"2"),
                (b"user-agent", b"python-httpx/0.28.1"),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8002),
        }
        await app(scope, receive, send)
        messages.clear()
    return count


class _Connection:
    """What loupe's statement spans read from a connection: its parameters and address."""

    _params = SimpleNamespace(database="loupe_shop", user="loupe")
    _addr = "/var/run/postgresql/.s.PGSQL.5432"


async def _fetchrow(*_args: object, **_kwargs: object) -> None:
    return None


def _asyncpg_wrapper(
    provider: trace.TracerProvider | None, min_ms: float = 0.0
) -> Callable[..., Awaitable[Any]]:
    """The call `telemetry/statements.py` puts around Connection.fetchrow & co., recording
    statements of at least `min_ms` (None: no wrapper, as with tracing off)."""
    connection = _Connection()
    if provider is None:
        return lambda sql, *args: _fetchrow(connection, sql, *args)
    wrapped = StatementSpans(provider.get_tracer("loupe.telemetry.statements"), min_ms).wrap(
        _fetchrow
    )
    return lambda sql, *args: wrapped(connection, sql, *args)


async def _queries(call: Callable[..., Awaitable[Any]], count: int) -> int:
    sql = "SELECT id, status, source, last_step_context FROM orders WHERE id = $1 FOR UPDATE"
    for _ in range(count):
        await call(sql, "5c7248a5-8c54-46c5-a75c-da138afe577b")
    return count


# -- the export path ---------------------------------------------------------------------------


@contextmanager
def otlp_sink(received: list[bytes] | None = None) -> Iterator[str]:
    """A local OTLP/HTTP endpoint that accepts and discards, on a thread of its own (each
    request body is appended to `received` when given)."""

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if received is not None:
                received.append(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    finally:
        server.shutdown()
        server.server_close()


def _fast_encoder() -> Callable[[Sequence[ReadableSpan]], bytes] | None:
    try:
        from otlp_proto import encode_spans as fast
    except ImportError:
        return None
    return fast


def _batches(spans: Sequence[ReadableSpan], size: int) -> list[Sequence[ReadableSpan]]:
    return [spans[i : i + size] for i in range(0, len(spans), size)]


# -- the benchmark -----------------------------------------------------------------------------


def measure(rounds: int, orders: int, console: Console | None = None) -> Figures:
    """Every variant's µs of CPU per span (per request or query for the instrumentations),
    `rounds` times in turn, on `orders` journeys' spans made afresh for each round (so the
    encoders' and redaction's memories see new order ids, as in a service)."""
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")
    figures = Figures()
    noop = trace.NoOpTracerProvider()
    bare, batch = _provider("none"), _provider("batch")
    apps = {"plain": _asgi_app(None), "off": _asgi_app(noop), "on": _asgi_app(bare)}
    calls = {
        "plain": _asyncpg_wrapper(None),
        "on, faster than the minimum": _asyncpg_wrapper(bare, 10.0),
        "on, a span each": _asyncpg_wrapper(bare, 0.0),
    }
    fast = _fast_encoder()
    requests = max(200, orders * 6)
    with otlp_sink() as endpoint:
        sdk_exporter = OTLPSpanExporter(endpoint=endpoint)
        loupe_exporter = LoupeOTLPSpanExporter(endpoint=endpoint)
        variants: list[tuple[str, Callable[[Sequence[ReadableSpan]], int]]] = [
            (OFF, lambda _: _journey_spans(_tracer_of(noop), orders)),
            (SDK, lambda _: _journey_spans(_tracer_of(bare), orders)),
            (QUEUED, lambda _: _journey_spans(_tracer_of(batch), orders)),
            *(
                (f"{FASTAPI}{name}", lambda _, app=app: asyncio.run(_requests(app, requests)))
                for name, app in apps.items()
            ),
            *(
                (f"{ASYNCPG}{name}", lambda _, c=c: asyncio.run(_queries(c, requests * 4)))
                for name, c in calls.items()
            ),
            (REDACTION, _redact),
            (DELIVERY, _deliver),
            (ENCODING_SDK, lambda spans: _encode(spans, _sdk_encoding)),
            (ENCODING_LOUPE, lambda spans: _encode(spans, encode_spans_fast)),
        ]
        if fast is not None:
            variants.append((ENCODING_OTLP_PROTO, lambda spans: _encode(spans, fast)))
        variants += [
            (f"{EXPORT}{size}", lambda spans, s=size: _export(loupe_exporter, spans, s))
            for size in BATCH_SIZES
        ]
        variants += [
            (PATH_BEFORE, lambda spans: _export(_chain(sdk_exporter), spans, 512)),
            (PATH_AFTER, lambda spans: _export(_chain(loupe_exporter), spans, 512)),
        ]
        # Every variant once, untimed: imports, the sink's connection, first-call caches.
        warm = finished_spans(orders)
        for _, work in variants:
            work(warm)
        for r in range(rounds):
            spans = finished_spans(orders)
            for name, work in variants:
                figures.add(name, _cpu_us(lambda work=work, spans=spans: work(spans)))
            if console is not None:
                console.print(f"round {r + 1}/{rounds}: " + _brief(figures))
        sdk_exporter.shutdown()
        loupe_exporter.shutdown()
    for provider in (bare, batch):
        provider.shutdown()
    return figures


def _brief(figures: Figures) -> str:
    last = {name: values[-1] for name, values in figures.rounds.items()}
    return (
        f"SDK {last[SDK] - last[OFF]:.1f} µs, redaction {last[REDACTION]:.1f}, "
        f"export path {last[PATH_BEFORE]:.1f} → {last[PATH_AFTER]:.1f} µs a span"
    )


def _chain(exporter: SpanExporter) -> SpanExporter:
    """The exporters as setup.py stacks them on the batch processor's thread."""
    return RedactingSpanExporter(RetryingSpanExporter(exporter))


def _redact(spans: Sequence[ReadableSpan]) -> int:
    RedactingSpanExporter(_Discard()).export(spans)
    return len(spans)


def _deliver(spans: Sequence[ReadableSpan]) -> int:
    exporter = RetryingSpanExporter(_Discard())
    for batch in _batches(spans, 512):
        exporter.export(batch)
    return len(spans)


def _sdk_encoding(spans: Sequence[ReadableSpan]) -> bytes:
    return encode_spans(spans).SerializePartialToString()


def _encode(
    spans: Sequence[ReadableSpan], encode: Callable[[Sequence[ReadableSpan]], bytes]
) -> int:
    for batch in _batches(spans, 512):
        encode(batch)
    return len(spans)


def _export(exporter: SpanExporter, spans: Sequence[ReadableSpan], size: int) -> int:
    # Exporters take a batch at a time, as the batch processor hands them.
    for batch in _batches(spans, size):
        exporter.export(batch)
    return len(spans)


# -- the report --------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("spans benchmark")
    group.add_argument(
        "--span-rounds", type=int, default=15, help="rounds, every variant in each (15)"
    )
    group.add_argument(
        "--span-orders", type=int, default=20, help="orders' journeys per round, 95 spans each (20)"
    )


def run(args: argparse.Namespace, console: Console, output: Path) -> None:
    """Measure, print the table and write the `spans` section of `output`."""
    started = datetime.now(UTC)
    figures = measure(args.span_rounds, args.span_orders, console)
    table = Table("what", "µs of CPU", "spread")
    for name in figures.rounds:
        table.add_row(name, f"{figures.median(name):.1f}", f"±{figures.spread(name):.0%}")
    console.print(table)
    write_section(output, SECTION, report(figures, args.span_rounds, args.span_orders, started))


def report(figures: Figures, rounds: int, orders: int, started: datetime) -> str:
    m, sp = figures.median, figures.spread

    def cell(name: str) -> str:
        return f"{m(name):.1f} | ±{sp(name):.0%}"

    sdk = m(SDK) - m(OFF)
    queue = m(QUEUED) - m(SDK)
    http = m(f"{EXPORT}512") - m(ENCODING_LOUPE)
    thread = m(REDACTION) + m(DELIVERY) + m(ENCODING_LOUPE) + http
    fastapi_own = m(f"{FASTAPI}off") - m(f"{FASTAPI}plain")
    fastapi_span = m(f"{FASTAPI}on") - m(f"{FASTAPI}off")
    asyncpg_fast = m(f"{ASYNCPG}on, faster than the minimum") - m(f"{ASYNCPG}plain")
    asyncpg_span = m(f"{ASYNCPG}on, a span each") - m(f"{ASYNCPG}plain")
    total = sdk + queue + m(PATH_AFTER)
    # Export cost = per_export + per_span * size, from batches of 64 and 512.
    small, large = m(f"{EXPORT}64"), m(f"{EXPORT}512")
    per_export = max(0.0, (small - large) / (1 / 64 - 1 / 512))
    per_span = large - per_export / 512
    rows = [
        f"| {name} | {cell(name)} |"
        for name in figures.rounds
        if not name.startswith((FASTAPI, ASYNCPG))
    ]
    instrumentation_rows = [
        f"| {name} | {cell(name)} |"
        for name in figures.rounds
        if name.startswith((FASTAPI, ASYNCPG))
    ]
    proto = (
        f"otlp-proto 0.10.1 took {m(ENCODING_OTLP_PROTO):.1f} µs a span here, but"
        if ENCODING_OTLP_PROTO in figures.rounds
        else "otlp-proto 0.10.1 (not installed in this run) took about a third of the SDK's time,"
        " but"
    )
    return f"""## What one span costs a service's process

Every figure in this section comes from one run of this benchmark, in one process: nothing
else competes for what is measured, and the figures are CPU time of the thread doing the work
(`time.thread_time`), per span. `python -m loupe.bench --only spans`; it needs no stack.

- Run: {started:%Y-%m-%d %H:%M} UTC
- Machine: {machine()}
- Spans: {orders} orders' whole journeys a round, {orders * 95:,} spans (`loupe.bench.journeys`:
  95 a journey: HTTP server spans, every database statement with its SQL text as before
  `LOUPE_TRACE_STATEMENTS_MIN_MS`, publish and process spans, a person's transitions with
  their link, the stale deliveries' events), started and ended through the SDK with the
  services' sampler and resource, made afresh each round.
- {rounds} rounds; in each, every variant below in turn. Each figure is the median of its
  rounds; spread is half their range around the mean. CPU time of a thread still grows when
  other processes share the cores (caches, frequency), so a busy machine widens the spread;
  variants compared with each other ran in the same rounds.

| what | µs of CPU per span | spread |
|---|---:|---:|
{chr(10).join(rows)}

The instrumentations' wrappers, per request or query, called in-process. A FastAPI request
(an ASGI call into an app instrumented as `service/http.py` does it, one span): without
instrumentation, with it and tracing off (the no-op tracer), with it and tracing on. A query
that returns at once, with loupe's statement wrapper (`telemetry/statements.py`, installed
only with tracing on): without it, with it as configured (the query is faster than
`LOUPE_TRACE_STATEMENTS_MIN_MS`, so no span), and with the minimum at 0 (a span each).

| what | µs of CPU per call | spread |
|---|---:|---:|
{chr(10).join(instrumentation_rows)}

### Where a span's microseconds go, with tracing on against off

| where | µs per span |
|---|---:|
| the request's thread: the SDK starts, fills and ends it | {sdk:.1f} |
| the request's thread: the batch processor queues it | {queue:.1f} |
| batch thread: redaction | {m(REDACTION):.1f} |
| batch thread: RetryingSpanExporter (held batches, counters) | {m(DELIVERY):.1f} |
| batch thread: OTLP encoding (loupe's) | {m(ENCODING_LOUPE):.1f} |
| batch thread: the HTTP POST, 512 spans a batch (export less encoding) | {http:.1f} |
| batch thread, the parts added up | {thread:.1f} |
| batch thread, measured whole as `setup.py` stacks it | {m(PATH_AFTER):.1f} |
| **a span in all** (request's thread + batch thread measured whole) | **{total:.1f}** |

A FastAPI request costs {fastapi_span:.0f} µs more with tracing on than off (its span
included), and the instrumentation costs {fastapi_own:.0f} µs more than none even with tracing
off (its ASGI middleware collects the request's attributes and matches the route again whether
or not a span records them). A query costs {asyncpg_fast:.1f} µs more with the statement
wrapper when it is faster than the minimum, and {asyncpg_span:.1f} µs more when it becomes a
span. Tracing off, as the pipeline benchmark measures it, keeps the FastAPI instrumentation in
place, so its own cost is in both of its modes: what tracing on adds is the {total:.0f} µs a
span above.

The encoders compared on the same spans: the SDK's {m(ENCODING_SDK):.1f} µs a span, loupe's
{m(ENCODING_LOUPE):.1f} µs (the same bytes; `tests/telemetry/test_encoding.py`). {proto} it is
not a candidate: on the journey's 95 spans it wrote 7,278 bytes where the SDK wrote 38,552,
leaving out every span's attributes, the kind and parent of 89 spans, and all events and links.

### The batch processor's settings

loupe's exporter to a local sink took {m(f"{EXPORT}64"):.1f} µs a span in batches of 64,
{m(f"{EXPORT}512"):.1f} in batches of 512 and {m(f"{EXPORT}2048"):.1f} in batches of 2048:
each export costs about {per_export / 1000:.1f} ms whatever it holds, and
{per_span:.1f} µs a span. So the SDK's defaults stay (`OTEL_BSP_*` change them, as before):

- `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` 512: a bigger batch saves at most
  {per_export / 512:.1f} µs a span and holds more spans longer;
- `OTEL_BSP_SCHEDULE_DELAY` 5 s: under load a batch fills to 512 before the delay is up; when
  it is quiet, even one export a second would cost {per_export / 1000 / 10:.2f}% of a core. The
  delay is how late the monitor hears of a move and how much a `kill -9` loses
  ([monitor.md](monitor.md), [reliability.md](reliability.md)), not a question of CPU;
- `OTEL_BSP_MAX_QUEUE_SIZE` 2048: a queued span holds about 2.9 KB (tracemalloc, these spans),
  so a full queue is about 6 MB.
"""
