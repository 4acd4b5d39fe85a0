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
from enum import Enum
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


# The services repeat the same few span names, SQL statements and messages thousands of times
# an hour: each text's scrubbed form is remembered, so the expressions run once per text. The
# bound keeps the memory small whatever a process sees; longer texts (stack traces, which are
# rare and seldom repeat) are scrubbed each time rather than held.
SCRUB_CACHE_SIZE = 4096
SCRUB_CACHE_MAX_CHARS = 2048


@functools.lru_cache(maxsize=SCRUB_CACHE_SIZE)
def _scrub_remembered(text: str) -> str:
    return scrub_text(text)


def _scrub(text: str) -> str:
    return _scrub_remembered(text) if len(text) <= SCRUB_CACHE_MAX_CHARS else scrub_text(text)


def is_allowed(key: str) -> bool:
    return key in ALLOWED_KEYS or key.startswith(ALLOWED_PREFIXES)


class _Decision(Enum):
    DROP = 0
    KEEP = 1
    SCRUB = 2


@functools.lru_cache(maxsize=1024)
def _decision(key: str) -> _Decision:
    if not is_allowed(key):
        return _Decision.DROP
    return _Decision.SCRUB if key in SCRUBBED_KEYS else _Decision.KEEP


def _scrubbed_value(value: Any) -> Any:
    if isinstance(value, str):
        return _scrub(value)
    if isinstance(value, Sequence):
        return tuple(_scrub(v) if isinstance(v, str) else v for v in value)
    return value


def _redacted(
    attributes: Attributes | Mapping[str, Any] | None,
) -> tuple[Mapping[str, Any], int, bool]:
    """The allowed attributes, scrubbed; how many were dropped; whether anything changed
    (if not, `attributes` itself is returned, not a copy)."""
    if not attributes:
        return {}, 0, False
    for key, value in attributes.items():
        decision = _decision(key)
        if decision is _Decision.DROP:
            break
        if decision is _Decision.SCRUB and _scrubbed_value(value) != value:
            break
    else:
        return attributes, 0, False
    kept, dropped = redact_attributes(attributes)
    return kept, dropped, True


def redact_attributes(attributes: Attributes | Mapping[str, Any] | None) -> tuple[dict, int]:
    """The allowed attributes, scrubbed, and how many were dropped."""
    kept: dict[str, Any] = {}
    dropped = 0
    for key, value in (attributes or {}).items():
        decision = _decision(key)
        if decision is _Decision.DROP:
            dropped += 1
            continue
        kept[key] = _scrubbed_value(value) if decision is _Decision.SCRUB else value
    return kept, dropped


def operator_resource_keys() -> frozenset[str]:
    """Resource keys an operator named in OTEL_RESOURCE_ATTRIBUTES: configuration, not data."""
    raw = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    return frozenset(item.split("=", 1)[0].strip() for item in raw.split(",") if "=" in item)


# By identity, not by value: a Resource hashes by serialising its attributes to JSON, which
# cost more than the rest of a span's redaction.
_redacted_resources: dict[int, tuple[Resource, Resource]] = {}


def _redact_resource(resource: Resource) -> Resource:
    # A process has one resource: redact it once, and hand the exporter the same object for
    # every span so it groups them under one resource. One that needs no change is handed on
    # as it is, so that spans under it need not be copied either.
    found = _redacted_resources.get(id(resource))
    if found is not None and found[0] is resource:
        return found[1]
    extra = operator_resource_keys()
    kept, _ = redact_attributes({k: v for k, v in resource.attributes.items() if k not in extra})
    kept.update({k: v for k, v in resource.attributes.items() if k in extra})
    unchanged = kept == dict(resource.attributes)
    redacted = resource if unchanged else Resource(kept, resource.schema_url)
    if len(_redacted_resources) >= 16:
        _redacted_resources.clear()
    # The original is held with its id, so the id cannot be reused while it is here.
    _redacted_resources[id(resource)] = (resource, redacted)
    return redacted


def _redacted_events(events: Sequence[Event]) -> tuple[Sequence[Event], bool]:
    redacted: list[Event] = []
    changed = False
    for event in events:
        name = _scrub(event.name)
        attributes, _, attributes_changed = _redacted(event.attributes)
        if name != event.name or attributes_changed:
            changed = True
            event = Event(name, attributes, event.timestamp)
        redacted.append(event)
    return (redacted if changed else events), changed


def _redacted_links(links: Sequence[Link]) -> tuple[Sequence[Link], bool]:
    redacted: list[Link] = []
    changed = False
    for link in links:
        attributes, _, attributes_changed = _redacted(link.attributes)
        if attributes_changed:
            changed = True
            link = Link(link.context, attributes)
        redacted.append(link)
    return (redacted if changed else links), changed


def redact_span(span: ReadableSpan) -> ReadableSpan:
    """`span` with only what the allow-list passes, scrubbed: the span itself when that is
    all of it (most spans: copying them cost more than the checks), otherwise a copy."""
    attributes, dropped, changed = _redacted(span.attributes)
    if dropped:
        attributes = {**attributes, DROPPED_COUNT: dropped}
    events, events_changed = _redacted_events(span.events)
    links, links_changed = _redacted_links(span.links)
    name = _scrub(span.name)
    description = span.status.description
    scrubbed_description = _scrub(description) if description else description
    resource = _redact_resource(span.resource)
    if not (
        changed
        or events_changed
        or links_changed
        or name != span.name
        or scrubbed_description != description
        or resource is not span.resource
    ):
        return span
    return ReadableSpan(
        name=name,
        context=span.context,
        parent=span.parent,
        resource=resource,
        attributes=attributes,
        events=events,
        links=links,
        kind=span.kind,
        status=Status(span.status.status_code, scrubbed_description or None),
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
