"""OTLP spans, decoded and boiled down to what the monitor keeps about an order.

Only spans that touch an order (`order.id`) or failed matter; the rest is skipped here too,
so the monitor works behind a collector that sends it everything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

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


MAX_SPANS = 50_000
"""The most spans (and resources and scopes, which count too) one request may hold: 24 times
the largest batch the collector configurations in deploy/ send (2,048)."""
MAX_SPAN_BYTES = 1024 * 1024
"""The largest span (or resource) read, encoded; a larger span is refused. The services' spans
are a few kilobytes, a long stack trace included."""
MAX_ITEMS = 1024
"""The most attributes, events and links of a span (or attributes of an event or resource)
read; the SDK keeps 128 of each by default."""


class MalformedSpans(ValueError):
    """The request body is not an OTLP ExportTraceServiceRequest."""


class TooLarge(ValueError):
    """The request holds more than the monitor reads at once: MAX_SPANS, MAX_SPAN_BYTES."""


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


def _attributes(items: Sequence[KeyValue]) -> dict[str, str | int | float | bool | None]:
    return {item.key: _value(item.value) for item in items[:MAX_ITEMS]}


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
    attributes = _attributes(span.attributes)
    error = span.status.code == Status.STATUS_CODE_ERROR
    order_id = _text(attributes.get(ORDER_ID))
    if not order_id and not error:
        return None
    message = _text(span.status.message)
    dead_lettered = False
    for event in span.events[:MAX_ITEMS]:
        event_attributes = _attributes(event.attributes)
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
        links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links[:MAX_ITEMS]),
    )


class Refusal(StrEnum):
    """Why a span is refused while the rest of its request is kept. For its time: a sender
    whose clock is far ahead, or a forged span, would otherwise make a move no order made yet,
    or say a service was heard up to a time that has not come; a span older than retention
    would bring back what retention removed. For its size: see MAX_SPAN_BYTES."""

    FUTURE = "in the future"
    PAST_RETENTION = "older than retention"
    TOO_LARGE = "too large"


@dataclass(frozen=True)
class TimeWindow:
    """The times a span may start and end in: from `earliest` to `latest`."""

    earliest: datetime
    latest: datetime

    @classmethod
    def around(cls, now: datetime, retention: timedelta, ahead: timedelta) -> TimeWindow:
        return cls(now - retention, now + ahead)

    def judge(self, span: Span) -> Refusal | None:
        # 0 (unset) is 1970: older than any retention.
        times = (span.start_time_unix_nano, span.end_time_unix_nano or span.start_time_unix_nano)
        if max(times) > _nanos(self.latest):
            return Refusal.FUTURE
        if min(times) < _nanos(self.earliest):
            return Refusal.PAST_RETENTION
        return None


def _nanos(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1) * 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Senders(Counter[str]):
    """The spans of one request by the service that sent them (service.name): the last hop of
    the count that every span sent arrived. `latest` has the end of each service's latest span:
    spans leave a service in the order they end, so the monitor has heard everything that
    service did up to then; `beating`, the services whose heartbeat is among them. `refused`:
    the spans refused for their time, by why; they are counted as sent, and say nothing of
    how far a service was heard."""

    def __init__(self) -> None:
        super().__init__()
        self.latest: dict[str, datetime] = {}
        self.beating: set[str] = set()
        self.refused: Counter[Refusal] = Counter()

    def saw(self, service: str, name: str, ended_at: datetime) -> None:
        self[service] += 1
        self.latest[service] = max(self.latest.get(service, ended_at), ended_at)
        if name == HEARTBEAT:
            self.beating.add(service)

    def refuse(self, service: str, why: Refusal) -> None:
        self[service] += 1
        self.refused[why] += 1


def decode(body: bytes, window: TimeWindow | None = None) -> tuple[list[SpanFacts], Senders]:
    """The spans worth keeping from one OTLP/protobuf request, and who sent how many. With a
    `window`, spans that start or end outside it are refused (`Senders.refused`), the others
    of the request kept.

    The request is taken apart span by span (`_spans`) rather than parsed whole: protobuf
    spends memory and time, with the GIL held, on every message in what it parses, and a few
    megabytes of empty messages are millions of them. So no more than MAX_SPANS are read, and
    each span is parsed on its own, at most MAX_SPAN_BYTES of it."""
    kept: list[SpanFacts] = []
    received = Senders()
    try:
        for service, raw in _spans(body):
            if len(raw) > MAX_SPAN_BYTES:
                received.refuse(service, Refusal.TOO_LARGE)
                continue
            span = Span.FromString(raw)
            if window is not None and (why := window.judge(span)):
                received.refuse(service, why)
                continue
            received.saw(
                service, span.name, _time(span.end_time_unix_nano or span.start_time_unix_nano)
            )
            facts = _facts(span, service)
            if facts is not None:
                kept.append(facts)
    # protobuf raises DecodeError, a bare Exception subclass; a cut body runs off the end.
    except (DecodeError, IndexError) as exc:
        raise MalformedSpans(f"not an OTLP ExportTraceServiceRequest: {exc}") from None
    return kept, received


# The fields of ExportTraceServiceRequest, ResourceSpans and ScopeSpans that `_spans` reads.
_RESOURCE_SPANS = ExportTraceServiceRequest.RESOURCE_SPANS_FIELD_NUMBER
_RESOURCE = ResourceSpans.RESOURCE_FIELD_NUMBER
_SCOPE_SPANS = ResourceSpans.SCOPE_SPANS_FIELD_NUMBER
_SPANS = ScopeSpans.SPANS_FIELD_NUMBER


def _spans(body: bytes) -> Iterator[tuple[str, bytes]]:
    """Each span of the request, still encoded, with the service that sent it."""
    walk = _Walk(body)
    for start, end in walk.fields(0, len(body), _RESOURCE_SPANS):
        # Several `resource` fields merge into one, as protobuf would parse them.
        resource = b"".join(body[s:e] for s, e in walk.fields(start, end, _RESOURCE))
        if len(resource) > MAX_SPAN_BYTES:
            raise TooLarge(f"a resource is over {MAX_SPAN_BYTES} bytes")
        attributes = _attributes(Resource.FromString(resource).attributes)
        service = _text(attributes.get("service.name")) or "unknown_service"
        for scope_start, scope_end in walk.fields(start, end, _SCOPE_SPANS):
            for span_start, span_end in walk.fields(scope_start, scope_end, _SPANS):
                yield service, body[span_start:span_end]


_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5  # protobuf's wire types (groups are not used in OTLP)


class _Walk:
    """Reads the fields of the messages in `body`, MAX_SPANS fields in all: fields of any kind
    (empty resources, unknown fields) count, as each is a round of work."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.left = MAX_SPANS

    def fields(self, start: int, end: int, number: int) -> Iterator[tuple[int, int]]:
        """The content (start, end) of each field `number` (length-delimited) of the message
        in body[start:end]; its other fields are skipped."""
        body, at = self.body, start
        while at < end:
            self.left -= 1
            if self.left < 0:
                raise TooLarge(f"the request holds over {MAX_SPANS} spans or other entries")
            tag, at = _varint(body, at)
            wire = tag & 7
            if tag >> 3 == 0:
                raise DecodeError("field number 0")
            if wire == _VARINT:
                _, at = _varint(body, at)
            elif wire == _I64:
                at += 8
            elif wire == _I32:
                at += 4
            elif wire == _LEN:
                length, at = _varint(body, at)
                if at + length > end:
                    raise DecodeError("a field runs past the end of its message")
                if tag >> 3 == number:
                    yield at, at + length
                at += length
            else:
                raise DecodeError(f"wire type {wire}")
        if at != end:
            raise DecodeError("a field runs past the end of its message")


def _varint(body: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = body[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise DecodeError("a varint over 10 bytes")
