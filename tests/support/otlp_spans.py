"""Spans for the order-flow monitor, made with the real OpenTelemetry SDK and encoded as OTLP
protobuf (as the services export them), and the SLO the monitor tests judge by: the demo
SLO file's.

Importable from every test directory (`pythonpath = ["tests"]` in pyproject.toml)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from loupe.monitor.settings import DEMO_SLO_FILE
from loupe.monitor.slo import Slo
from loupe.telemetry.attributes import DEAD_LETTER_REASON, DEAD_LETTERED_EVENT

# Spelled here, not imported from loupe.monitor.spans, so that the monitor's tests check the
# name it reads against the one the services' consumers write.
SUBSCRIPTION = "messaging.destination.subscription.name"


class Spans:
    """Finished spans of several services (one provider, so one resource, per service)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self._providers: dict[str, TracerProvider] = {}

    def provider(self, service: str, resource: Resource | None = None) -> TracerProvider:
        """The service's provider; `resource` (instead of just its service.name) on first use."""
        if service not in self._providers:
            provider = TracerProvider(
                resource=resource or Resource.create({"service.name": service})
            )
            provider.add_span_processor(SimpleSpanProcessor(self.exporter))
            self._providers[service] = provider
        return self._providers[service]

    def make(
        self,
        service: str,
        name: str,
        at: datetime,
        *,
        order_id: str | None = None,
        move: tuple[str, str] | None = None,
        error: str | None = None,
        status: Status | None = None,
        dead_lettered: bool = False,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, Any] | None = None,
        links: Sequence[Link] = (),
        events: Sequence[tuple[str, dict[str, Any]]] = (),
        exception: BaseException | None = None,
        parent: ReadableSpan | None = None,
        lasted: float = 0.001,
    ) -> ReadableSpan:
        """A span of `service` that ended `at` after `lasted` seconds.

        `order_id` and `move` (from, to) become the order.* attributes; `error` sets status
        ERROR with that message (`status` sets any other); `dead_lettered` adds the
        dead-lettered event, its reason the error (or "poison").
        """
        attrs: dict[str, Any] = dict(attributes or {})
        if order_id:
            attrs["order.id"] = order_id
        if move:
            attrs["order.status.from"], attrs["order.status.to"] = move
        if error:
            status = Status(StatusCode.ERROR, error)
        context = (
            trace.set_span_in_context(trace.NonRecordingSpan(parent.context)) if parent else None
        )
        nanos = int(at.timestamp() * 1e9)
        span = (
            self.provider(service)
            .get_tracer("tests")
            .start_span(
                name,
                context=context,
                kind=kind,
                attributes=attrs,
                links=links,
                start_time=nanos - int(lasted * 1e9),
            )
        )
        for event_name, event_attributes in events:
            span.add_event(event_name, event_attributes)
        if dead_lettered:
            span.add_event(DEAD_LETTERED_EVENT, {DEAD_LETTER_REASON: error or "poison"})
        if exception is not None:
            span.record_exception(exception)
        if status is not None:
            span.set_status(status)
        span.end(end_time=nanos)
        return self.exporter.get_finished_spans()[-1]

    def happy_move(
        self, step: int, order_id: str, at: datetime, *, by: str | None = None, **details: Any
    ) -> ReadableSpan:
        """The span that makes the happy path's move number `step` (HAPPY_MOVES) of `order_id`.

        `by` another service: its copy of the move (it consumed the event and recorded the
        same status). `details` as for `make`.
        """
        service, name, before, after = HAPPY_MOVES[step]
        return self.make(
            by or service, name, at, order_id=order_id, move=(before, after), **details
        )

    def happy_path(self, order_id: str, ended: Callable[[int], datetime]) -> list[ReadableSpan]:
        """Every move of the happy path of `order_id`, move number i ended at `ended(i)`."""
        return [self.happy_move(step, order_id, ended(step)) for step in range(len(HAPPY_MOVES))]

    def consumed(
        self,
        queue: str,
        at: datetime,
        *,
        attributes: dict[str, Any] | None = None,
        **details: Any,
    ) -> ReadableSpan:
        """The CONSUMER span of a loupe.orders message taken from `queue`, named as the services'
        consumer names it, of the service the queue belongs to (crm.order-status: crm-api).
        `details` as for `make`."""
        return self.make(
            f"{queue.split('.')[0]}-api",
            "process loupe.orders",
            at,
            kind=SpanKind.CONSUMER,
            attributes={SUBSCRIPTION: queue, **(attributes or {})},
            **details,
        )


def otlp(spans: Sequence[ReadableSpan]) -> bytes:
    """An OTLP ExportTraceServiceRequest holding `spans`, as protobuf bytes."""
    return encode_spans(list(spans)).SerializeToString()


# The happy path's moves: (service, operation, from, to).
HAPPY_MOVES: tuple[tuple[str, str, str, str], ...] = (
    ("shop-api", "POST /orders", "NEW", "SUBMITTED"),
    ("mes-api", "process loupe.orders", "SUBMITTED", "PRICE_CALCULATED"),
    ("crm-api", "approve manufacturing", "PRICE_CALCULATED", "MANUFACTURING_APPROVED"),
    ("mes-api", "take order", "MANUFACTURING_APPROVED", "MANUFACTURING_STARTED"),
    ("mes-api", "complete order", "MANUFACTURING_STARTED", "MANUFACTURING_COMPLETED"),
    ("crm-api", "ship order", "MANUFACTURING_COMPLETED", "SHIPPED"),
    ("crm-api", "close order", "SHIPPED", "CLOSED"),
)


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


DEMO_SLO = Slo.load(DEMO_SLO_FILE)
"""deploy/monitor/slo-demo.toml: the steps (30 s each) the monitor tests judge orders by."""


def slo(*steps: str) -> Slo:
    """The demo SLO file's steps (the given ones, or all), with errors broken after 3 s."""
    return Slo(
        steps={s: step for s, step in DEMO_SLO.steps.items() if not steps or s in steps},
        error_grace=timedelta(seconds=3),
    )
