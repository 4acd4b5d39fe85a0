"""Keeps personal data out of every exported span, by construction.

Spans pass through an allow-list before export: attribute keys that are not known to carry
only technical values are dropped, and free-text values that are allowed (exception messages,
SQL text, notes) are scrubbed of anything shaped like an e-mail address or phone number. It
runs in the exporter, on the batch thread, so the request path pays nothing for it.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Status
from opentelemetry.util.types import Attributes

from loupe.telemetry.attributes import (
    DEAD_LETTER_REASON,
    ORDER_FAILURE_REASON,
    TRACE_CONTEXT_NOTE,
)

ALLOWED_KEYS = frozenset(
    {
        # HTTP, stable conventions. Query strings and client addresses are left out on purpose.
        "http.request.method",
        "http.request.method_original",
        "http.response.status_code",
        "http.route",
        "url.scheme",
        "url.path",
        "server.address",
        "server.port",
        "network.protocol.name",
        "network.protocol.version",
        "network.peer.address",
        "network.peer.port",
        "network.transport",
        "error.type",
        # Database, stable conventions; statements are parameterised, values never inlined.
        "db.system",
        "db.system.name",
        "db.namespace",
        "db.operation.name",
        "db.collection.name",
        "db.query.text",
        "db.query.summary",
        "db.response.status_code",
        # Exceptions: the type is safe; message and stack trace are scrubbed below.
        "exception.type",
        "exception.message",
        "exception.stacktrace",
        "exception.escaped",
        # Resource.
        "service.name",
        "service.namespace",
        "service.version",
        "service.instance.id",
        "deployment.environment",
        "deployment.environment.name",
        "host.name",
        "process.pid",
        "process.runtime.name",
        "process.runtime.version",
        "telemetry.sdk.name",
        "telemetry.sdk.language",
        "telemetry.sdk.version",
        "telemetry.auto.version",
        "otel.status_code",
        "otel.status_description",
    }
)
ALLOWED_PREFIXES = ("order.", "loupe.", "messaging.", "asgi.event.")
SCRUBBED_KEYS = frozenset(
    {
        "exception.message",
        "exception.stacktrace",
        "db.query.text",
        "otel.status_description",
        TRACE_CONTEXT_NOTE,
        DEAD_LETTER_REASON,
        ORDER_FAILURE_REASON,
    }
)
REDACTED = "[redacted]"
DROPPED_COUNT = "loupe.redaction.dropped_attributes"

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
# Phone numbers as people write them: an optional +, then digits with spaces, dots, dashes
# or brackets, at least 7 digits in all. Only applied to free text, never to ids.
_PHONE = re.compile(r"(?<![\w-])\+?\(?\d[\d\s().-]{5,}\d(?:\s?(?:x|ext\.?)\s?\d+)?(?![\w-])")


def scrub_text(text: str) -> str:
    text = _EMAIL.sub(REDACTED, text)
    return _PHONE.sub(
        lambda m: REDACTED if sum(c.isdigit() for c in m.group()) >= 7 else m.group(), text
    )


def is_allowed(key: str) -> bool:
    return key in ALLOWED_KEYS or key.startswith(ALLOWED_PREFIXES)


def redact_attributes(attributes: Attributes | Mapping[str, Any] | None) -> tuple[dict, int]:
    """The allowed attributes, scrubbed, and how many were dropped."""
    kept: dict[str, Any] = {}
    dropped = 0
    for key, value in (attributes or {}).items():
        if not is_allowed(key):
            dropped += 1
            continue
        if key in SCRUBBED_KEYS:
            if isinstance(value, str):
                value = scrub_text(value)
            elif isinstance(value, Sequence):
                value = tuple(scrub_text(v) if isinstance(v, str) else v for v in value)
        kept[key] = value
    return kept, dropped


def operator_resource_keys() -> frozenset[str]:
    """Resource keys an operator named in OTEL_RESOURCE_ATTRIBUTES: configuration, not data."""
    raw = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    return frozenset(item.split("=", 1)[0].strip() for item in raw.split(",") if "=" in item)


@functools.lru_cache(maxsize=16)
def _redact_resource(resource: Resource) -> Resource:
    # A process has one resource: redact it once, and hand the exporter the same object for
    # every span so it groups them under one resource.
    extra = operator_resource_keys()
    kept, _ = redact_attributes({k: v for k, v in resource.attributes.items() if k not in extra})
    kept.update({k: v for k, v in resource.attributes.items() if k in extra})
    return Resource(kept, resource.schema_url)


def redact_span(span: ReadableSpan) -> ReadableSpan:
    attributes, dropped = redact_attributes(span.attributes)
    if dropped:
        attributes[DROPPED_COUNT] = dropped
    events = [
        Event(scrub_text(event.name), redact_attributes(event.attributes)[0], event.timestamp)
        for event in span.events
    ]
    links = [Link(link.context, redact_attributes(link.attributes)[0]) for link in span.links]
    resource = _redact_resource(span.resource)
    return ReadableSpan(
        name=scrub_text(span.name),
        context=span.context,
        parent=span.parent,
        resource=resource,
        attributes=attributes,
        events=events,
        links=links,
        kind=span.kind,
        status=Status(span.status.status_code, scrub_text(span.status.description or "") or None),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingSpanExporter(SpanExporter):
    """Wraps the real exporter; nothing reaches it that the allow-list did not pass."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([redact_span(span) for span in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)
