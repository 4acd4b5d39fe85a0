"""The order.* attributes and loupe's messaging names, followed from the span a service marks,
through the redacting export, to what the monitor (OTLP) and the console (Jaeger's JSON) read
back: a name one side spells differently, or the allow-list drops, breaks an order's story."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from loupe.monitor.spans import SpanFacts, decode
from loupe.orders import OrderSource, OrderStatus
from loupe.portal import jaeger_api
from loupe.telemetry import attributes
from loupe.telemetry.attributes import OrderAttributes, set_order_attributes
from loupe.telemetry.redaction import RedactingSpanExporter, is_allowed
from tests.support.console_fakes import NOW, Span, jaeger_trace
from tests.support.otlp_spans import otlp

S = OrderStatus


def _read_back(mark: Callable[[trace.Span], None]) -> tuple[SpanFacts, jaeger_api.Span]:
    """A consumer span `mark`ed while current, exported as the services export it (redacted),
    as the monitor decodes it and as the console parses it from Jaeger."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "mes-api"}))
    provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(exporter)))
    with provider.get_tracer(__name__).start_as_current_span("process loupe.orders") as span:
        mark(span)
    (exported,) = exporter.get_finished_spans()
    (facts,), _ = decode(otlp([exported]))
    events = [(event.name, dict(event.attributes or {})) for event in exported.events]
    tags = dict(exported.attributes or {})
    jaeger = Span("mes-api", exported.name, NOW, 1, "1" * 16, tags=tags, events=events)
    (seen,) = jaeger_api.parse_trace(jaeger_trace("2" * 32, [jaeger])).spans
    return facts, seen


@pytest.mark.parametrize(
    ("marked", "source", "move"),
    [
        # Touching an order is not moving it.
        (OrderAttributes("o-1", OrderSource.SHOP), "shop", None),
        # An order's first step comes from NEW, said explicitly.
        (OrderAttributes("o-1", OrderSource.SHOP, None, S.SUBMITTED), "shop", ("NEW", "SUBMITTED")),
        (OrderAttributes("o-1", None, S.SHIPPED, S.CLOSED), None, ("SHIPPED", "CLOSED")),
        # A status before without one after is no move at all, so it is not written.
        (OrderAttributes("o-1", OrderSource.B2B, S.SUBMITTED, None), "b2b", None),
    ],
)
def test_the_monitor_and_the_console_read_the_order_a_span_was_marked_with(
    marked: OrderAttributes, source: str | None, move: tuple[str, str] | None
) -> None:
    facts, seen = _read_back(lambda _: set_order_attributes(marked))
    assert (facts.order_id, seen.order_id) == ("o-1", "o-1")
    assert facts.source == source
    assert (facts.status_from, facts.status_to) == (move or (None, None))
    assert facts.transition is (move is not None)
    assert seen.move == move


def test_a_given_span_is_marked_instead_of_the_current_one() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(__name__)
    with tracer.start_as_current_span("current"):
        other = tracer.start_span("other")
        set_order_attributes(OrderAttributes("o-2", status_to=S.SUBMITTED), other)
        other.end()
    marked = {span.name: dict(span.attributes or {}) for span in exporter.get_finished_spans()}
    assert marked["current"] == {}
    assert marked["other"][attributes.ORDER_STATUS_TO] == "SUBMITTED"


def test_a_dead_lettered_consumer_span_reads_as_one_with_its_reason_scrubbed() -> None:
    def dead_letter(span: trace.Span) -> None:
        # What the consumer records when it gives a message up.
        set_order_attributes(OrderAttributes("o-3"))
        span.add_event(
            attributes.DEAD_LETTERED_EVENT,
            {attributes.DEAD_LETTER_REASON: "poison message: ask ada@example.com"},
        )
        span.set_status(Status(StatusCode.ERROR, "OrderEventError"))

    facts, seen = _read_back(dead_letter)
    assert facts.dead_lettered
    assert facts.error_message == seen.dead_letter_reason == "poison message: ask [redacted]"


# Every attribute key the module names (dotted), whatever is added to it later.
KEYS = sorted(
    value
    for name, value in vars(attributes).items()
    if name.isupper() and isinstance(value, str) and "." in value
)


@pytest.mark.parametrize("key", KEYS)
def test_every_attribute_named_here_passes_the_export_allow_list(key: str) -> None:
    assert is_allowed(key), f"{key} would be dropped on export; Jaeger would never show it"


def test_the_allow_list_check_covers_every_attribute() -> None:
    assert {attributes.ORDER_ID, attributes.DELIVERY_ATTEMPT, attributes.LINK_REASON} <= set(KEYS)
    assert not is_allowed("customer.email"), "the check above would pass anything"
