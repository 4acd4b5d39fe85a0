"""W3C `traceparent`, `tracestate` and `baggage` in AMQP message headers, and the
`traceparent` text of one span context, which the services store beside an order's last step.

These header names are the ones the OpenTelemetry Java agent, the .NET RabbitMQ client and
Node's amqplib instrumentation read and write, so the company's Java and C# services join the
same traces. Other clients may hand header values over as bytes; both are accepted.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import SpanContext, TraceFlags

TRACE_HEADERS = ("traceparent", "tracestate", "baggage")


class _HeadersGetter(Getter[MutableMapping[str, Any]]):
    def get(self, carrier: MutableMapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        if isinstance(value, bytes | bytearray):
            try:
                value = bytes(value).decode("ascii")
            except UnicodeDecodeError:
                return None
        if not isinstance(value, str):
            return None
        return [value]

    def keys(self, carrier: MutableMapping[str, Any]) -> list[str]:
        return list(carrier.keys())


class _HeadersSetter(Setter[MutableMapping[str, Any]]):
    def set(self, carrier: MutableMapping[str, Any], key: str, value: str) -> None:
        carrier[key] = value


_getter = _HeadersGetter()
_setter = _HeadersSetter()


def inject_context(headers: MutableMapping[str, Any], context: Context | None = None) -> None:
    """Write the current (or given) trace context into message headers."""
    for key in TRACE_HEADERS:
        headers.pop(key, None)
    propagate.inject(headers, context=context, setter=_setter)


def extract_context(headers: MutableMapping[str, Any] | None) -> tuple[Context, str | None]:
    """The producer's context from message headers, and a note when there is none to use.

    A missing or malformed `traceparent` yields an empty context, so the consumer starts a
    new trace; the note says why, for the consumer span.
    """
    carrier: MutableMapping[str, Any] = dict(headers or {})
    context = propagate.extract(carrier, context=Context(), getter=_getter)
    if trace.get_current_span(context).get_span_context().is_valid:
        return context, None
    raw = carrier.get("traceparent")
    if raw is None:
        return context, "message had no traceparent header; started a new trace"
    shown = repr(raw)[:80]
    return context, f"message had a malformed traceparent {shown}; started a new trace"


def span_context_to_text(context: SpanContext) -> str:
    """The context in `traceparent` form (version 00), to keep in a database column."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def span_context_from_text(text: str | None) -> SpanContext | None:
    """The stored step context, or None when it is absent or unreadable."""
    try:
        _, trace_id, span_id, flags = (text or "").split("-")
        context = SpanContext(
            int(trace_id, 16),
            int(span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(int(flags, 16)),
        )
    except ValueError:
        return None
    return context if context.is_valid else None
