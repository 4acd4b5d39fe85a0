"""One call per process sets up tracing: resource, sampler, exporter, propagators.

Everything honours the standard OTEL_* variables (OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER,
OTEL_TRACES_SAMPLER[_ARG], OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT/PROTOCOL/HEADERS/TIMEOUT,
OTEL_BSP_*, OTEL_RESOURCE_ATTRIBUTES, OTEL_PROPAGATORS). Export happens on the batch
processor's thread with a bounded queue, so a stopped or slow Jaeger never blocks or fails an
order; what it did not take is held and sent when it is back (telemetry/delivery.py).
"""

from __future__ import annotations

import logging
import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

from loupe.telemetry.delivery import RetryingSpanExporter, count_queue_drops
from loupe.telemetry.logs import configure_logging
from loupe.telemetry.redaction import RedactingSpanExporter

log = logging.getLogger(__name__)

_provider: TracerProvider | None = None


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _exporter() -> SpanExporter | None:
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if kind == "none":
        return None
    if kind == "console":
        return ConsoleSpanExporter()
    if kind != "otlp":
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={kind!r} is not supported; use otlp, console or none"
        )
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HTTPSpanExporter,
        )

        try:
            from loupe.telemetry.encoding import LoupeOTLPSpanExporter
        except ImportError:
            log.exception("loupe's OTLP encoder is not available; the SDK's encodes")
            return HTTPSpanExporter()
        exporter = LoupeOTLPSpanExporter()
        if exporter.usable():
            return exporter
        exporter.shutdown()
        return HTTPSpanExporter()
    raise ValueError(f"OTLP protocol {protocol!r} is not supported; use grpc or http/protobuf")


def configure_telemetry(service_name: str, service_version: str = "0.1.0") -> TracerProvider | None:
    """Set up tracing and logging for one process. Returns None when tracing is disabled."""
    global _provider
    configure_logging(service_name)
    # The instrumentations emit the stable HTTP and database conventions only when asked.
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")
    if _truthy("OTEL_SDK_DISABLED"):
        log.info("tracing disabled by OTEL_SDK_DISABLED")
        return None
    resource = Resource.create(
        {
            "service.name": service_name,
            "service.namespace": "loupe",
            "service.version": service_version,
        }
    )
    # The SDK reads OTEL_TRACES_SAMPLER[_ARG] itself.
    provider = TracerProvider(resource=resource)
    exporter = _exporter()
    if exporter is not None:
        count_queue_drops()
        provider.add_span_processor(
            BatchSpanProcessor(RedactingSpanExporter(RetryingSpanExporter(exporter)))
        )
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def shutdown_telemetry() -> None:
    """Flush what is queued, briefly: a missing collector must not hold up shutdown."""
    global _provider
    if _provider is not None:
        _provider.force_flush(timeout_millis=3000)
        _provider.shutdown()
        _provider = None


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
