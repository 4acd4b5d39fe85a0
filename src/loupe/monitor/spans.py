"""OTLP spans, decoded and boiled down to what the monitor keeps about an order.

Only spans that touch an order (`order.id`) or failed matter; the rest is skipped here too,
so the monitor works behind a collector that sends it everything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from loupe.orders import IllegalTransition, OrderStatus
from loupe.service.orders_table import OrderNotFound
from loupe.telemetry.attributes import (
    DEAD_LETTER_REASON,
    DEAD_LETTERED_EVENT,
    HEARTBEAT,
    NEW,
    ORDER_FAILURE_REASON,
    ORDER_ID,
    ORDER_SOURCE,
    ORDER_STATUS_FROM,
    ORDER_STATUS_TO,
)

SUBSCRIPTION = "messaging.destination.subscription.name"
# error.type of refused steps: a span records the refusal's class name.
REFUSALS = frozenset({IllegalTransition.__name__, OrderNotFound.__name__})
FAILED = OrderStatus.FAILED.value
MAX_NAME_BYTES = 1024
"""The longest order id, service, operation, place, status, source or error type stored, in
UTF-8 bytes. Each can be part of an index entry, which PostgreSQL limits to about 2.7 kB
(service and place share one: an incident's, a place's flow key)."""
# A span's names and ids (cut to MAX_NAME_BYTES), and its free text (any length).
_NAMES = (
    "order_id",
    "service",
    "name",
    "place",
    "status_from",
    "status_to",
    "source",
    "error_type",
)
_TEXTS = ("error_message", "failure_reason")


class MalformedSpans(ValueError):
    """The request body is not an OTLP ExportTraceServiceRequest."""


@dataclass(frozen=True)
class SpanFacts:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    service: str
    name: str
    kind: str  # SERVER, CLIENT, CONSUMER, PRODUCER, INTERNAL
    started_at: datetime
    ended_at: datetime
    order_id: str | None
    status_from: str | None
    status_to: str | None
    source: str | None
    failure_reason: str | None
    error: bool
    error_message: str | None
    error_type: str | None
    dead_lettered: bool
    place: str
    links: tuple[tuple[str, str], ...]

    @property
    def transition(self) -> bool:
        """A move the service committed. A failed span that names a move was rolled back,
        except a move to FAILED: that is made on the failure path itself (the consumer's span
        fails, and its dead-letter hook fails the order)."""
        if not (self.order_id and self.status_to):
            return False
        return not self.error or self.status_to == FAILED

    @property
    def refusal(self) -> bool:
        """A step refused because the order was not where the caller thought (HTTP 409/404):
        the caller's mistake, not the order's path breaking."""
        return self.error_type in REFUSALS


class Unstorable(StrEnum):
    """Why PostgreSQL cannot take a value of a span as it was sent."""

    NUL_BYTE = "nul byte"  # its text type cannot hold \x00
    TOO_LONG = "too long"  # see MAX_NAME_BYTES
    REFUSED = "refused by PostgreSQL"  # anything else it refuses (store.ingest finds out)


@dataclass(frozen=True)
class UnstorableSpan:
    """A span with values PostgreSQL cannot take as sent: `fields` had them, the first for
    `reason` (PostgreSQL's own words in `detail`, when it refused). `dropped`: the span is not
    stored (e.g. its order id cannot be, and another id would name another order); else it is
    stored with those values cleaned (see `screen`)."""

    span: SpanFacts
    reason: Unstorable
    fields: tuple[str, ...]
    dropped: bool
    detail: str = ""


def _problem(value: str, name: bool) -> Unstorable | None:
    if "\x00" in value:
        return Unstorable.NUL_BYTE
    if name and len(value.encode()) > MAX_NAME_BYTES:
        return Unstorable.TOO_LONG
    return None


def _cleaned(value: str, name: bool) -> str:
    """`value` as PostgreSQL can store it: each NUL byte a replacement character, a name cut to
    MAX_NAME_BYTES, ending in "…". Always the same for the same value, so a place keeps its
    one key."""
    value = value.replace("\x00", "\ufffd")
    if name and len(value.encode()) > MAX_NAME_BYTES:
        cut = value.encode()[: MAX_NAME_BYTES - len("…".encode())]
        value = cut.decode(errors="ignore") + "…"
    return value


def screen(spans: Iterable[SpanFacts]) -> tuple[list[SpanFacts], list[UnstorableSpan]]:
    """The spans PostgreSQL can store, and those it could not as sent: one bad span must not
    cost the batch it came in. A span whose order id has a NUL byte or is too long is dropped;
    any other such value is cleaned (`_cleaned`) and the span kept, so an error whose message
    holds binary data still breaks its order."""
    kept: list[SpanFacts] = []
    unstorable: list[UnstorableSpan] = []
    for span in spans:
        problems: dict[str, Unstorable] = {}
        for field in _NAMES + _TEXTS:
            value = getattr(span, field)
            if value is not None and (problem := _problem(value, field in _NAMES)):
                problems[field] = problem
        if not problems:
            kept.append(span)
            continue
        dropped = "order_id" in problems
        first = next(iter(problems.values()))
        unstorable.append(UnstorableSpan(span, first, tuple(problems), dropped))
        if not dropped:
            cleaned = {f: _cleaned(getattr(span, f), f in _NAMES) for f in problems}
            kept.append(replace(span, **cleaned))
    return kept, unstorable


def _value(value: AnyValue) -> str | int | float | bool | None:
    kind = value.WhichOneof("value")
    if kind in ("string_value", "int_value", "double_value", "bool_value"):
        return getattr(value, kind)
    return None


def _attributes(items: list[KeyValue]) -> dict[str, str | int | float | bool | None]:
    return {item.key: _value(item.value) for item in items}


def _text(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def _time(unix_nano: int) -> datetime:
    return datetime.fromtimestamp(unix_nano / 1e9, tz=UTC)


_KINDS = {
    Span.SPAN_KIND_SERVER: "SERVER",
    Span.SPAN_KIND_CLIENT: "CLIENT",
    Span.SPAN_KIND_CONSUMER: "CONSUMER",
    Span.SPAN_KIND_PRODUCER: "PRODUCER",
}


def queue_place(queue: str) -> str:
    """A queue as a place: where a consumer reads, where an order's event waits (slo.Step),
    where the broker shows messages nobody takes (broker.py)."""
    return f"queue {queue}"


def _place(kind: str, name: str, attributes: dict[str, object]) -> str:
    """Where in a service the span ran: the queue a consumer reads, else the operation."""
    subscription = attributes.get(SUBSCRIPTION)
    if kind == "CONSUMER" and subscription:
        return queue_place(str(subscription))
    return name


def _facts(span: Span, service: str) -> SpanFacts | None:
    attributes = _attributes(list(span.attributes))
    error = span.status.code == Status.STATUS_CODE_ERROR
    order_id = _text(attributes.get(ORDER_ID))
    if not order_id and not error:
        return None
    message = _text(span.status.message)
    dead_lettered = False
    for event in span.events:
        event_attributes = _attributes(list(event.attributes))
        if event.name == DEAD_LETTERED_EVENT:
            dead_lettered = True
            message = _text(event_attributes.get(DEAD_LETTER_REASON)) or message
        elif event.name == "exception" and error and not message:
            message = _text(event_attributes.get("exception.message"))
    if error and not message:
        message = _text(attributes.get("error.type")) or "error"
    status_from = _text(attributes.get(ORDER_STATUS_FROM))
    status_to = _text(attributes.get(ORDER_STATUS_TO))
    if error and status_from == NEW and status_to != FAILED:
        # A request that failed to create its order (shop-api's POST /orders answering 5xx)
        # names an order that was rolled back with it and exists nowhere: the failure is its
        # place's, not an order's.
        order_id = None
    kind = _KINDS.get(span.kind, "INTERNAL")
    return SpanFacts(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex() or None,
        service=service,
        name=span.name,
        kind=kind,
        started_at=_time(span.start_time_unix_nano),
        ended_at=_time(span.end_time_unix_nano or span.start_time_unix_nano),
        order_id=order_id,
        status_from=status_from,
        status_to=status_to,
        source=_text(attributes.get(ORDER_SOURCE)),
        failure_reason=_text(attributes.get(ORDER_FAILURE_REASON)),
        error=error,
        error_message=message if error else None,
        error_type=_text(attributes.get("error.type")) if error else None,
        dead_lettered=dead_lettered,
        place=_place(kind, span.name, attributes),
        links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
    )


class Senders(Counter[str]):
    """The spans of one request by the service that sent them (service.name): the last hop of
    the count that every span sent arrived. `latest` has the end of each service's latest span:
    spans leave a service in the order they end, so the monitor has heard everything that
    service did up to then; `beating`, the services whose heartbeat is among them."""

    def __init__(self) -> None:
        super().__init__()
        self.latest: dict[str, datetime] = {}
        self.beating: set[str] = set()

    def saw(self, service: str, name: str, ended_at: datetime) -> None:
        self[service] += 1
        self.latest[service] = max(self.latest.get(service, ended_at), ended_at)
        if name == HEARTBEAT:
            self.beating.add(service)


def decode(body: bytes) -> tuple[list[SpanFacts], Senders]:
    """The spans worth keeping from one OTLP/protobuf request, and who sent how many."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception as exc:  # protobuf raises DecodeError, a bare Exception subclass
        raise MalformedSpans(f"not an OTLP ExportTraceServiceRequest: {exc}") from None
    kept: list[SpanFacts] = []
    received = Senders()
    for resource_spans in request.resource_spans:
        resource = _attributes(list(resource_spans.resource.attributes))
        service = _text(resource.get("service.name")) or "unknown_service"
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                received.saw(
                    service, span.name, _time(span.end_time_unix_nano or span.start_time_unix_nano)
                )
                facts = _facts(span, service)
                if facts is not None:
                    kept.append(facts)
    return kept, received
