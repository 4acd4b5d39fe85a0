"""OTLP/protobuf for a batch of spans, written straight to bytes, and the exporter that sends it.

The SDK's encoder builds a protobuf message object for every span, attribute and value and
then serialises them: measured in one process on the services' spans, 40 to 60 µs a span, the
largest part of what a span cost the service (docs/benchmarks.md, section `spans`); this takes
about a third of that. Most of what the services send repeats: the same attribute keys and
values (SQL text, exchange names, routes, statuses) thousands of times. This writes the same
wire format directly, remembers the encoding of each repeated attribute, and writes exactly
the SDK's bytes (tests/telemetry/test_encoding.py checks them against its encoder).

The SDK's exporter stays the fallback: `LoupeOTLPSpanExporter` sends with the SDK's own HTTP
client (retries, compression, headers, timeout as OTEL_EXPORTER_OTLP_* say), and it hands a
batch to the SDK's encoder whenever this one cannot encode it; setup.py uses the SDK's exporter
as it is when the SDK's internals this relies on are not there, when the SDK's own exporter
metrics are asked for, or when LOUPE_OTLP_SDK_ENCODER=true.
"""

from __future__ import annotations

import functools
import logging
import os
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind
from opentelemetry.util.types import Attributes

from loupe.environment import Variable, flag

SDK_ENCODER = Variable(
    "LOUPE_OTLP_SDK_ENCODER",
    False,
    "`true` encodes exported spans with the OpenTelemetry SDK's OTLP encoder instead of"
    " loupe's (the same bytes, about three times the CPU; see"
    " [OpenTelemetry](#opentelemetry))",
    flag,
    shown="`false`",
)

log = logging.getLogger(__name__)

# Span.SpanKind in the OTLP protocol, from the API's SpanKind.
_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
# SpanFlags: the span's (or link's) context says whether its parent is remote.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack
_double = struct.Struct("<d").pack


class Unencodable(ValueError):
    """A value OTLP has no encoding for; the SDK's encoder leaves such an attribute out."""


_ONE_BYTE = tuple(bytes((n,)) for n in range(0x80))


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _ONE_BYTE[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + _varint(len(payload)) + payload


def _message(tag: bytes, *fields: bytes) -> bytes:
    """A field holding a message made of `fields`."""
    return _field(tag, b"".join(fields))


def _any_value(value: Any) -> bytes:
    """An AnyValue's content, as the SDK's encoder chooses the variant (bool before int)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise Unencodable(f"integer {value} does not fit int64")
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(
            b"\x32", b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items())
        )
    raise Unencodable(f"invalid type {type(value)} of value {value!r}")


def _key_value(key: str, value: Any) -> bytes:
    return _string(b"\x0a", key) + _field(b"\x12", _any_value(value))


# Keyed by the value's type too: True, 1 and 1.0 are equal as keys but not on the wire. The
# bounds keep memory small (some MB at most); values that never repeat (order ids) only pass
# through, and long texts (stack traces) are encoded each time rather than held.
REMEMBERED_ATTRIBUTES = 4096
REMEMBERED_MAX_CHARS = 2048


@functools.lru_cache(maxsize=REMEMBERED_ATTRIBUTES)
def _remembered(tag: bytes, key: str, kind: type, value: Any) -> bytes:
    return _field(tag, _key_value(key, value))


def _attributes(tag: bytes, attributes: Attributes | Mapping[str, Any] | None) -> list[bytes]:
    """Each attribute as a KeyValue field; one OTLP cannot carry is left out and logged, as
    the SDK's encoder does."""
    fields = []
    for key, value in (attributes or {}).items():
        try:
            if isinstance(value, bool | int | float) or (
                isinstance(value, str) and len(value) <= REMEMBERED_MAX_CHARS
            ):
                fields.append(_remembered(tag, key, type(value), value))
            else:
                fields.append(_field(tag, _key_value(key, value)))
        except (Unencodable, UnicodeEncodeError) as error:
            log.error("attribute %s left out of the export: %s", key, error)
    return fields


def _flags(context: SpanContext | None) -> bytes:
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if context is not None and context.is_remote else 0)
    return _fixed32(flags)


def _string(tag: bytes, text: str | None) -> bytes:
    return _field(tag, text.encode()) if text else b""


def _count(tag: bytes, n: int) -> bytes:
    return tag + _varint(n) if n else b""


def _time(tag: bytes, nanos: int | None) -> bytes:
    return tag + _fixed64(nanos) if nanos else b""


def encode_span(span: ReadableSpan) -> bytes:
    """One Span message's content."""
    context = span.context
    assert context is not None, "a finished span has a context"
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        parts.append(_string(b"\x1a", ",".join(f"{k}={v}" for k, v in context.trace_state.items())))
    parent = span.parent
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    parts.append(_string(b"\x2a", span.name))
    parts.append(b"\x30" + _varint(_KIND[span.kind]))
    parts.append(_time(b"\x39", span.start_time))
    parts.append(_time(b"\x41", span.end_time))
    parts += _attributes(b"\x4a", span.attributes)
    parts.append(_count(b"\x50", span.dropped_attributes))
    for event in span.events:
        parts.append(
            _message(
                b"\x5a",
                _time(b"\x09", event.timestamp),
                _string(b"\x12", event.name),
                *_attributes(b"\x1a", event.attributes),
                _count(b"\x20", event.dropped_attributes),
            )
        )
    parts.append(_count(b"\x60", span.dropped_events))
    for link in span.links:
        parts.append(
            _message(
                b"\x6a",
                b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big"),
                b"\x12\x08" + link.context.span_id.to_bytes(8, "big"),
                *_attributes(b"\x22", link.attributes),
                _count(b"\x28", link.dropped_attributes),
                b"\x35" + _flags(link.context),
            )
        )
    parts.append(_count(b"\x70", span.dropped_links))
    status = span.status
    parts.append(
        _field(
            b"\x7a",
            _string(b"\x12", status.description) + _count(b"\x18", status.status_code.value),
        )
    )
    parts.append(b"\x85\x01" + _flags(parent))
    return b"".join(parts)


@functools.lru_cache(maxsize=64)
def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return b""
    return b"".join(
        [
            _string(b"\x0a", scope.name),
            _string(b"\x12", scope.version),
            *_attributes(b"\x1a", scope.attributes),
        ]
    )


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest with `spans`, grouped by resource and then by scope, in the
    order each first appears, as the SDK's encoder groups them."""
    # Resources and scopes compare by value, as the SDK groups them, but a Resource hashes by
    # serialising its attributes: each object is looked up by value once, then by identity.
    equal: dict[Any, Any] = {}
    same: dict[int, Any] = {}

    def canonical(thing: Any) -> Any:
        found = same.get(id(thing))
        if found is None:
            found = same[id(thing)] = equal.setdefault(thing, thing)
        return found

    groups: dict[int, tuple[Resource, dict[int, tuple[InstrumentationScope | None, list]]]] = {}
    for span in spans:
        resource = canonical(span.resource)
        scope = span.instrumentation_scope or None
        if scope is not None:
            scope = canonical(scope)
        scopes = groups.setdefault(id(resource), (resource, {}))[1]
        scopes.setdefault(id(scope), (scope, []))[1].append(_field(b"\x12", encode_span(span)))
    request = []
    for resource, scopes in groups.values():
        content = [_field(b"\x0a", b"".join(_attributes(b"\x0a", resource.attributes)))]
        for scope, encoded in scopes.values():
            schema_url = scope.schema_url if scope is not None else None
            content.append(
                _message(
                    b"\x12", _field(b"\x0a", _scope(scope)), *encoded, _string(b"\x1a", schema_url)
                )
            )
        content.append(_string(b"\x1a", resource.schema_url))
        request.append(_field(b"\x0a", b"".join(content)))
    return b"".join(request)


class LoupeOTLPSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP exporter, with the batch encoded by `encode_spans`."""

    def usable(self) -> bool:
        """Whether the SDK's exporter has the parts this relies on (if not, use it as it is).
        With the SDK's own exporter metrics asked for, its own path is the one that counts."""
        internal_metrics = os.environ.get("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "")
        client = getattr(self, "_client", None)
        return (
            callable(getattr(client, "export", None))
            and internal_metrics.strip().lower() != "true"
            and not SDK_ENCODER.read()
        )

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        client = getattr(self, "_client", None)
        if getattr(self, "_shutdown", True) or client is None:
            return super().export(spans)
        try:
            body = encode_spans(spans)
        except Exception:
            log.exception("loupe's OTLP encoder failed; the SDK's encodes this batch")
            return super().export(spans)
        limit = getattr(self, "_max_request_size", None)
        if limit and len(body) > limit:
            log.warning("dropping a span batch of %d bytes, over the limit of %d", len(body), limit)
            return SpanExportResult.FAILURE
        # The SDK's client logs what went wrong; RetryingSpanExporter holds the batch.
        result = client.export(body)
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE
