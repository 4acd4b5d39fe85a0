"""Jaeger with deploy/jaeger/monitor-pipeline.yaml: the monitor gets only the spans that name an
order or failed, Jaeger stores every span, and a missing monitor costs Jaeger nothing."""

from __future__ import annotations

import contextlib
import gzip
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from loupe.stack.components import JaegerPorts, jaeger_process
from loupe.stack.process import free_port
from loupe.stack.supervisor import Stack

# Needs no RabbitMQ or PostgreSQL but starts Jaeger (the binary scripts/build-tools.sh builds),
# as test_jaeger.py does: selected as an integration test and, like that file, as e2e.
pytestmark = [pytest.mark.integration, pytest.mark.e2e]

KEPT = {"with-order", "failed"}
EVERY = {*KEPT, "plain"}
TIMEOUT = 20.0


class Receiver:
    """A stand-in for the monitor's OTLP/HTTP intake: records each POST Jaeger makes to it."""

    def __init__(self, port: int = 0) -> None:
        self.posts: list[tuple[str, dict[str, str], ExportTraceServiceRequest]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding", "") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                with receiver._lock:
                    receiver.posts.append((self.path, dict(self.headers.items()), request))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def span_names(self, service: str) -> list[str]:
        """Names of the spans of `service` received so far, once per arrival."""
        with self._lock:
            posts = list(self.posts)
        return [
            span.name
            for _, _, request in posts
            for resource_spans in request.resource_spans
            if service_name(resource_spans.resource.attributes) == service
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def headers(self) -> list[tuple[str, dict[str, str]]]:
        with self._lock:
            return [(path, headers) for path, headers, _ in self.posts]


def service_name(attributes: Sequence[KeyValue]) -> str | None:
    for attribute in attributes:
        if attribute.key == "service.name":
            return attribute.value.string_value
    return None


@contextlib.contextmanager
def receiving(port: int = 0) -> Iterator[Receiver]:
    receiver = Receiver(port)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(timeout=5)


def three_spans(service: str) -> Sequence[ReadableSpan]:
    """One span naming an order, one failed span naming none, one plain span; finished, not sent."""
    collected = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(collected))
    tracer = provider.get_tracer("loupe.tests")
    with tracer.start_as_current_span("plain") as span:
        span.set_attribute("loupe.probe", True)
    with tracer.start_as_current_span("with-order") as span:
        span.set_attribute("order.id", str(uuid.uuid4()))
    with tracer.start_as_current_span("failed", record_exception=False) as span:
        span.set_status(Status(StatusCode.ERROR, "poison message"))
    provider.shutdown()
    spans = collected.get_finished_spans()
    assert {s.name for s in spans} == EVERY
    return spans


def send(ports: JaegerPorts, spans: Sequence[ReadableSpan]) -> float:
    """Exports to Jaeger's OTLP/HTTP receiver in one request; returns how long Jaeger took."""
    exporter = OTLPSpanExporter(endpoint=f"{ports.otlp_http_url}/v1/traces", timeout=10)
    try:
        began = time.monotonic()
        result = exporter.export(spans)
        took = time.monotonic() - began
    finally:
        exporter.shutdown()
    assert result is SpanExportResult.SUCCESS
    return took


def stored_span_names(ports: JaegerPorts, service: str, expected: set[str]) -> list[str]:
    """Span names of `service` in Jaeger's storage, polled until `expected` are all there."""
    deadline = time.monotonic() + TIMEOUT
    with httpx.Client(base_url=ports.query_url, timeout=5, trust_env=False) as client:
        while True:
            response = client.get("/api/traces", params={"service": service, "limit": 20})
            response.raise_for_status()
            names = [
                span["operationName"]
                for trace in response.json()["data"] or []
                for span in trace["spans"]
            ]
            if set(names) >= expected or time.monotonic() > deadline:
                return names
            time.sleep(0.2)


def received(receiver: Receiver, service: str, expected: set[str]) -> list[str]:
    deadline = time.monotonic() + TIMEOUT
    while not set(receiver.span_names(service)) >= expected:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return receiver.span_names(service)


def test_monitor_gets_order_and_error_spans_jaeger_stores_all(tmp_path: Path) -> None:
    ports = JaegerPorts.pick_free()
    service = f"probe-{uuid.uuid4().hex[:8]}"
    with receiving() as monitor:
        jaeger = jaeger_process(
            "memory", ports, logs_dir=tmp_path / "logs", monitor_endpoint=monitor.url
        )
        with Stack([jaeger]):
            send(ports, three_spans(service))

            assert sorted(received(monitor, service, KEPT)) == sorted(KEPT)
            # The three went to Jaeger in one request, so the filter saw them together; a
            # moment more is only for a late duplicate.
            time.sleep(1.0)
            assert sorted(monitor.span_names(service)) == sorted(KEPT)
            assert sorted(stored_span_names(ports, service, EVERY)) == sorted(EVERY)

    for path, headers in monitor.headers():
        assert path == "/v1/traces"
        assert headers["Content-Type"] == "application/x-protobuf"
        # compression: none on the loopback hop.
        assert "Content-Encoding" not in headers


def test_monitor_down_loses_nothing_in_jaeger_and_catches_up(tmp_path: Path) -> None:
    ports = JaegerPorts.pick_free()
    monitor_port = free_port()  # nothing listens there: the monitor is down
    service = f"probe-{uuid.uuid4().hex[:8]}"
    jaeger = jaeger_process(
        "memory",
        ports,
        logs_dir=tmp_path / "logs",
        monitor_endpoint=f"http://127.0.0.1:{monitor_port}",
    )
    with Stack([jaeger]) as stack:
        took = send(ports, three_spans(service))
        # Accepted (SUCCESS) without waiting for the monitor's retries.
        assert took < 2.0
        assert sorted(stored_span_names(ports, service, EVERY)) == sorted(EVERY)
        assert stack["jaeger"].running

        # The monitor comes back: the queued spans arrive with a retry.
        with receiving(monitor_port) as monitor:
            assert sorted(received(monitor, service, KEPT)) == sorted(KEPT)
