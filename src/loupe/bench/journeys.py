"""Synthetic OTLP spans shaped like those loupe's services send, for the monitor benchmark.

One shop order that goes the whole way makes six traces of 95 spans, 30 of them with
`order.id` and 18 of those transitions (`order.status.from`/`.to`); the other 65 are database
statements, the HTTP requests of people's actions and MES's model download. The counts come
from a real run of the pipeline (services, RabbitMQ, Jaeger; the benchmark driver's status
polling and start-up spans left out) with every statement a span, as before
LOUPE_TRACE_STATEMENTS_MIN_MS and as it still is at `0`: the heaviest journey the services
send (with the default, a statement is a span only when slow or failing, and a journey is
about 37 spans). The names and attributes are from docs/tracing.md.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1 import trace_pb2 as pb
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags

from loupe.config import DEFAULT_PORTS, SERVICE_NAMES, SERVICES, Settings
from loupe.telemetry.attributes import (
    LINK_REASON,
    ORDER_ID,
    ORDER_PRICE,
    ORDER_SOURCE,
    ORDER_STATUS_FROM,
    ORDER_STATUS_TO,
    PREVIOUS_STEP,
)

SHOP, CRM, MES = (SERVICE_NAMES[s] for s in ("shop", "crm", "mes"))
PORTS = {SERVICE_NAMES[s]: DEFAULT_PORTS[s] for s in SERVICES}
DATABASES = {SERVICE_NAMES[s]: Settings().database_name(s) for s in SERVICES}
QUEUE_OF = {SHOP: "shop.order-status", CRM: "crm.order-status", MES: "mes.order-submitted"}

STATEMENTS = {
    "SELECT": "SELECT id, status, source, last_step_context FROM orders WHERE id = $1 FOR UPDATE",
    "INSERT": "INSERT INTO processed_messages (queue, message_id) VALUES ($1, $2)"
    " ON CONFLICT DO NOTHING",
    "UPDATE": "UPDATE orders SET status = $2, last_step_context = $3, updated_at = now()"
    " WHERE id = $1",
}


@dataclass(frozen=True)
class SpanSpec:
    """One span of a journey's trace: who makes it, and which order attributes it carries."""

    service: str
    name: str
    kind: SpanKind = SpanKind.INTERNAL
    order: bool = False
    move: tuple[str, str] | None = None
    queue: str | None = None  # a consumer's subscription (queue)
    route: str | None = None  # an HTTP server span's route

    @property
    def has_order(self) -> bool:
        return self.order or self.move is not None


def _server(service: str, method: str, route: str) -> SpanSpec:
    return SpanSpec(service, f"{method} {route}", SpanKind.SERVER, route=route)


def _publish(service: str) -> SpanSpec:
    return SpanSpec(service, "publish loupe.orders", SpanKind.PRODUCER, order=True)


def _process(service: str, move: tuple[str, str] | None = None, queue: str = "") -> SpanSpec:
    return SpanSpec(
        service,
        "process loupe.orders",
        SpanKind.CONSUMER,
        order=True,
        move=move,
        queue=queue or QUEUE_OF[service],
    )


def _db(service: str, select: int = 0, insert: int = 0, update: int = 0) -> list[SpanSpec]:
    counts = {"SELECT": select, "INSERT": insert, "UPDATE": update}
    return [
        SpanSpec(service, word, SpanKind.CLIENT) for word, n in counts.items() for _ in range(n)
    ]


def _resumed(
    service: str, method_route: tuple[str, str], name: str, move: tuple[str, str]
) -> list[SpanSpec]:
    """A person's step: the HTTP request, the transition span under it and its publish."""
    return [_server(service, *method_route), SpanSpec(service, name, move=move), _publish(service)]


S, PC, MA = "SUBMITTED", "PRICE_CALCULATED", "MANUFACTURING_APPROVED"
MS, MC, SH, CL = "MANUFACTURING_STARTED", "MANUFACTURING_COMPLETED", "SHIPPED", "CLOSED"

# The six traces of one shop order, each in the order its spans end.
JOURNEY: tuple[tuple[SpanSpec, ...], ...] = (
    # 1. The customer submits; MES prices; CRM and the shop follow both events.
    (
        SpanSpec(SHOP, "POST /orders", SpanKind.SERVER, move=("NEW", S), route="/orders"),
        _publish(SHOP),
        _process(CRM, ("NEW", S)),
        _process(SHOP),  # the shop's own event back: stale, ignored
        SpanSpec(MES, "GET", SpanKind.CLIENT),
        _server(SHOP, "GET", "/models/{sha256}"),
        SpanSpec(MES, "price order", order=True),
        _publish(MES),
        _process(MES, (S, PC)),
        _process(CRM, (S, PC)),
        _process(SHOP, (S, PC)),
        *_db(SHOP, select=3, insert=3, update=1),
        *_db(MES, select=2, insert=2, update=1),
        *_db(CRM, select=2, insert=3, update=1),
    ),
    # 2. A seller approves (CRM); MES and the shop follow.
    (
        *_resumed(CRM, ("POST", "/orders/{order_id}/approve"), "approve manufacturing", (PC, MA)),
        _process(CRM),
        _process(MES, (PC, MA), "mes.order-decisions"),
        _process(SHOP, (PC, MA)),
        *_db(CRM, select=2, insert=1, update=1),
        *_db(MES, select=1, insert=1, update=1),
        *_db(SHOP, select=1, insert=1, update=1),
    ),
    # 3. An operator takes it (MES).
    (
        *_resumed(MES, ("POST", "/operator/orders/{order_id}/take"), "take order", (MA, MS)),
        _process(CRM, (MA, MS)),
        _process(SHOP, (MA, MS)),
        *_db(MES, select=1, update=1),
        *_db(CRM, select=1, insert=1, update=1),
        *_db(SHOP, select=1, insert=1, update=1),
    ),
    # 4. ... and completes it.
    (
        *_resumed(
            MES, ("POST", "/operator/orders/{order_id}/complete"), "complete order", (MS, MC)
        ),
        _process(CRM, (MS, MC)),
        _process(SHOP, (MS, MC)),
        *_db(MES, select=1, update=1),
        *_db(CRM, select=1, insert=1, update=1),
        *_db(SHOP, select=1, insert=1, update=1),
    ),
    # 5. A seller ships it (CRM).
    (
        *_resumed(CRM, ("POST", "/orders/{order_id}/ship"), "ship order", (MC, SH)),
        _process(CRM),
        _process(SHOP, (MC, SH)),
        *_db(CRM, select=2, insert=1, update=1),
        *_db(SHOP, select=1, insert=1, update=1),
    ),
    # 6. ... and closes it.
    (
        *_resumed(CRM, ("POST", "/orders/{order_id}/close"), "close order", (SH, CL)),
        _process(CRM),
        _process(SHOP, (SH, CL)),
        *_db(CRM, select=2, insert=1, update=1),
        *_db(SHOP, select=1, insert=1, update=1),
    ),
)

# What a submitted order makes when MES never takes it: everything of the first trace but
# MES's part (pricing, the model download, the price event and those who follow it).
SUBMISSION: tuple[SpanSpec, ...] = tuple(
    s
    for s in JOURNEY[0]
    if s.service != MES and (s.move or ("", ""))[1] != PC and s.route != "/models/{sha256}"
)


def spans_per_order() -> tuple[int, int, int]:
    """(all spans, spans with order.id, transitions) of one order's whole journey."""
    every = [s for trace in JOURNEY for s in trace]
    return len(every), sum(s.has_order for s in every), sum(s.move is not None for s in every)


@dataclass(frozen=True)
class Batch:
    """One OTLP/HTTP request body, ready to send, and what it holds."""

    body: bytes
    spans: int
    kept: int  # spans the monitor keeps: those with order.id (none fail here)


_SCOPES = {
    SpanKind.SERVER: "opentelemetry.instrumentation.fastapi",
    SpanKind.PRODUCER: "loupe.messaging",
    SpanKind.CONSUMER: "loupe.messaging",
}


def scope_of(spec: SpanSpec) -> str:
    if spec.kind == SpanKind.CLIENT:
        if spec.name == "GET":
            return "opentelemetry.instrumentation.httpx"
        return "loupe.telemetry.statements"
    if spec.name == "price order":
        return "loupe.mes"
    return _SCOPES.get(spec.kind, "loupe.orders")


def constant_attributes(spec: SpanSpec) -> dict[str, str | int | float]:
    """A span's attributes that are the same for every order (see docs/tracing.md)."""
    service = spec.service
    attributes: dict[str, str | int | float] = {}
    if spec.kind == SpanKind.CLIENT and spec.name != "GET":
        attributes = {
            "db.system.name": "postgresql",
            "db.namespace": DATABASES[service],
            "db.query.text": STATEMENTS[spec.name],
            "server.address": "/var/run/postgresql/.s.PGSQL.5432",
            "network.transport": "pipe",
        }
    elif spec.kind == SpanKind.CLIENT:
        attributes = {
            "http.request.method": "GET",
            "http.response.status_code": 200,
            "server.address": "127.0.0.1",
            "server.port": PORTS[SHOP],
            "network.peer.address": "127.0.0.1",
            "network.peer.port": PORTS[SHOP],
            "network.protocol.version": "1.1",
        }
    elif spec.kind == SpanKind.SERVER:
        method, route = spec.name.split(" ", 1)
        attributes = {
            "http.request.method": method,
            "http.route": route,
            "http.response.status_code": 201 if route == "/orders" else 200,
            "url.scheme": "http",
            "server.address": f"127.0.0.1:{PORTS[service]}",
            "server.port": PORTS[service],
            "network.protocol.version": "1.1",
        }
        if "{" not in route:
            attributes["url.path"] = route
        elif "{sha256}" in route:
            attributes["url.path"] = route.replace("{sha256}", "ab" * 32)
    elif spec.kind in (SpanKind.PRODUCER, SpanKind.CONSUMER):
        producer = spec.kind == SpanKind.PRODUCER
        attributes = {
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "send" if producer else "process",
            "messaging.operation.name": "publish" if producer else "process",
            "messaging.destination.name": "loupe.orders",
            "messaging.rabbitmq.destination.routing_key": "order.status",
            "messaging.message.body.size": 412,
            "server.address": "127.0.0.1",
            "server.port": 5672,
        }
        if not producer:
            attributes["messaging.destination.subscription.name"] = spec.queue or ""
            attributes["messaging.rabbitmq.message.delivery_tag"] = 1
            attributes["loupe.messaging.delivery_attempt"] = 1
    if spec.has_order:
        attributes[ORDER_SOURCE] = "shop"
    if spec.move:
        attributes[ORDER_STATUS_FROM], attributes[ORDER_STATUS_TO] = spec.move
    if service == MES and spec.kind == SpanKind.CONSUMER and spec.move:
        attributes[ORDER_PRICE] = 1250.0
    return attributes


def _links(spec: SpanSpec) -> bool:
    """A person's transition links to the order's previous step."""
    return spec.move is not None and spec.kind == SpanKind.INTERNAL


@dataclass
class _Template:
    span: pb.Span  # as the SDK encodes it, with the attributes every order shares
    resource: Resource
    scope: InstrumentationScope
    order_path: str | None  # url.path with {order_id} still in it
    message_id: bool


class Request:
    """One OTLP ExportTraceServiceRequest being filled: a ResourceSpans per service, a
    ScopeSpans per instrumentation scope, as the SDK's encoder groups them."""

    def __init__(self) -> None:
        self.message = ExportTraceServiceRequest()
        self._scopes: dict[tuple[str, str], pb.ScopeSpans] = {}
        self._resources: dict[str, pb.ResourceSpans] = {}
        self.spans = 0
        self.kept = 0

    def add(self, template: _Template, encoded: pb.ResourceSpans, kept: bool) -> pb.Span:
        service = template.resource.attributes["service.name"]
        key = (str(service), template.scope.name)
        scope_spans = self._scopes.get(key)
        if scope_spans is None:
            resource_spans = self._resources.get(key[0])
            if resource_spans is None:
                resource_spans = self.message.resource_spans.add()
                resource_spans.resource.CopyFrom(encoded.resource)
                self._resources[key[0]] = resource_spans
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.CopyFrom(encoded.scope_spans[0].scope)
            self._scopes[key] = scope_spans
        span = scope_spans.spans.add()
        span.CopyFrom(template.span)
        self.spans += 1
        self.kept += kept
        return span

    def batch(self) -> Batch:
        return Batch(self.message.SerializeToString(), self.spans, self.kept)


class Journeys:
    """Makes the spans of orders' traces, with ids from a seeded generator: the same seed
    gives the same spans, another seed spans of the same shape that no one has seen.

    Each kind of span is encoded once by the OpenTelemetry SDK's OTLP encoder; every span made
    is a copy of it with its own ids, times and order, which is what makes hundreds of
    thousands of spans quick to make."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._resources = {
            service: Resource.create(
                {
                    "service.name": service,
                    "service.namespace": "loupe",
                    "service.version": "0.1.0",
                    # One process per service, as under `loupe up`.
                    "service.instance.id": str(uuid.UUID(int=self._rng.getrandbits(128))),
                }
            )
            for service in (SHOP, CRM, MES)
        }
        self._scopes: dict[str, InstrumentationScope] = {}
        self._templates: dict[SpanSpec, tuple[_Template, pb.ResourceSpans]] = {}

    def order_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def uniform(self, upper: float) -> float:
        """A moment in [0, upper), from the same seeded generator."""
        return self._rng.uniform(0.0, upper)

    def _template(self, spec: SpanSpec) -> tuple[_Template, pb.ResourceSpans]:
        found = self._templates.get(spec)
        if found is not None:
            return found
        scope_name = scope_of(spec)
        scope = self._scopes.setdefault(scope_name, InstrumentationScope(scope_name, "0.1.0"))
        context = SpanContext(1, 1, False, TraceFlags(TraceFlags.SAMPLED))
        previous = Link(SpanContext(2, 2, False), {LINK_REASON: PREVIOUS_STEP})
        links = (previous,) if _links(spec) else ()
        readable = ReadableSpan(
            name=spec.name,
            context=context,
            parent=context,
            resource=self._resources[spec.service],
            attributes=constant_attributes(spec),
            links=links,
            kind=spec.kind,
            start_time=1,
            end_time=2,
            instrumentation_scope=scope,
        )
        encoded = encode_spans([readable]).resource_spans[0]
        route = spec.route or ""
        template = _Template(
            span=encoded.scope_spans[0].spans[0],
            resource=self._resources[spec.service],
            scope=scope,
            order_path=route if "{order_id}" in route else None,
            message_id=spec.kind in (SpanKind.PRODUCER, SpanKind.CONSUMER),
        )
        self._templates[spec] = (template, encoded)
        return template, encoded

    def trace(
        self,
        request: Request,
        specs: Sequence[SpanSpec],
        order_id: str,
        end_ns: int,
        previous: tuple[bytes, bytes] | None = None,
    ) -> tuple[bytes, bytes] | None:
        """Add one trace's spans to `request`, the last ending at `end_ns`, 1 ms apart; the
        first is the root and the others its children. `previous` (trace id, span id) is
        the order's last move, which a person's transition links to; returns this trace's
        last move."""
        rng = self._rng
        trace_id = rng.randbytes(16)
        root = b""
        last_move = None
        count = len(specs)
        for index, spec in enumerate(specs):
            template, encoded = self._template(spec)
            span = request.add(template, encoded, spec.has_order)
            span_id = rng.randbytes(8)
            span.trace_id, span.span_id = trace_id, span_id
            if index == 0:
                root = span_id
                span.ClearField("parent_span_id")
            else:
                span.parent_span_id = root
            end = end_ns - (count - 1 - index) * 1_000_000
            span.start_time_unix_nano, span.end_time_unix_nano = end - 800_000, end
            if spec.has_order:
                _string(span, ORDER_ID, order_id)
            if template.order_path:
                _string(span, "url.path", template.order_path.replace("{order_id}", order_id))
            if template.message_id:
                _string(span, "messaging.message.id", str(uuid.UUID(bytes=rng.randbytes(16))))
            if span.links:
                if previous is None:
                    del span.links[:]
                else:
                    span.links[0].trace_id, span.links[0].span_id = previous
            if spec.move:
                last_move = (trace_id, span_id)
        return last_move


def _string(span: pb.Span, key: str, value: str) -> None:
    attribute = span.attributes.add()
    attribute.key = key
    attribute.value.string_value = value


def steady_flow(
    seed: int, batches: int, orders_per_batch: int, start_ns: int, gap_ns: int
) -> Iterator[Batch]:
    """Requests as a collector sends them while orders flow: request `b` holds step `s` of
    the orders that started at request `b - s`, for each of the journey's six steps, so each
    request has every kind of span in the journey's proportions and touches six times
    `orders_per_batch` orders, each moving on from where an earlier request left it.

    The first `WARM_UP` requests (the flow filling up) hold fewer steps; callers send them
    untimed. Request `b`'s spans end at `start_ns + b * gap_ns`.
    """
    journeys = Journeys(seed)
    steps = len(JOURNEY)
    # The orders of each group still under way, each with its last move (trace, span id).
    groups: dict[int, list[tuple[str, tuple[bytes, bytes] | None]]] = {}
    for b in range(batches):
        groups[b] = [(journeys.order_id(), None) for _ in range(orders_per_batch)]
        groups.pop(b - steps, None)
        request = Request()
        for step in range(steps):
            if b - step not in groups:
                continue
            groups[b - step] = [
                (
                    order_id,
                    journeys.trace(
                        request, JOURNEY[step], order_id, start_ns + b * gap_ns, previous
                    ),
                )
                for order_id, previous in groups[b - step]
            ]
        yield request.batch()


WARM_UP = len(JOURNEY) - 1


def submissions(journeys: Journeys, orders: int, end_ns: int) -> tuple[Batch, list[str]]:
    """One request with the submission traces of `orders` new orders that MES never prices."""
    request = Request()
    ids = [journeys.order_id() for _ in range(orders)]
    for order_id in ids:
        journeys.trace(request, SUBMISSION, order_id, end_ns)
    return request.batch(), ids
