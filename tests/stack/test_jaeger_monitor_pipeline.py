"""Jaeger with deploy/jaeger/monitor-pipeline.yaml: the monitor gets only the spans that name an
order or failed, Jaeger stores every span, and a missing monitor costs Jaeger nothing. What a
Jaeger restart costs the monitor while it is down is measured here too (docs/reliability.md)."""

from __future__ import annotations

import contextlib
import gzip
import json
import secrets
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
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

from loupe.stack.components import (
    JAEGER_BINARY,
    STORAGES,
    JaegerPorts,
    Storage,
    jaeger_process,
)
from loupe.stack.process import free_port
from loupe.stack.supervisor import Stack

# Needs no RabbitMQ or PostgreSQL but starts Jaeger (the binary scripts/build-tools.sh builds),
# as test_jaeger.py does: selected as an integration test and, like that file, as e2e.
pytestmark = [pytest.mark.integration, pytest.mark.e2e]

KEPT = {"with-order", "failed"}
EVERY = {*KEPT, "plain"}
TIMEOUT = 20.0
# The monitor's intake token as `jaeger_process` hands it to Jaeger.
TOKEN = secrets.token_urlsafe(32)


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
            "memory",
            ports,
            logs_dir=tmp_path / "logs",
            monitor_endpoint=monitor.url,
            monitor_token=TOKEN,
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
        # The token from the environment, not from a file in git.
        assert headers["Authorization"] == f"Bearer {TOKEN}"
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
        monitor_token=TOKEN,
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


# ------------------------------------------------ a Jaeger restart while the monitor is down

# Spans queued for the monitor before the restart; one request, one trace.
QUEUED = 1000
MONITOR_EXPORTER = "otlphttp/monitor"
# retry_on_failure.max_interval of otlphttp/monitor, plus a second: a batch a persistent queue
# had kept would be retried, and so arrive, within this after the monitor is back.
RETRY_GRACE = 6.0


def order_spans(service: str, count: int) -> Sequence[ReadableSpan]:
    """`count` finished spans of one trace, each naming an order, so the filter keeps them all."""
    collected = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(collected))
    tracer = provider.get_tracer("loupe.tests")
    with tracer.start_as_current_span("with-order") as root:
        root.set_attribute("order.id", str(uuid.uuid4()))
        for _ in range(count - 1):
            with tracer.start_as_current_span("with-order") as span:
                span.set_attribute("order.id", str(uuid.uuid4()))
    provider.shutdown()
    spans = collected.get_finished_spans()
    assert len(spans) == count
    return spans


def monitor_queue_size(ports: JaegerPorts) -> float:
    """Spans in otlphttp/monitor's sending queue, from Jaeger's own metrics (sizer: items)."""
    response = httpx.get(f"http://127.0.0.1:{ports.metrics}/metrics", timeout=5, trust_env=False)
    response.raise_for_status()
    for line in response.text.splitlines():
        if line.startswith("otelcol_exporter_queue_size{") and MONITOR_EXPORTER in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def stored_count(ports: JaegerPorts, service: str) -> int:
    """Spans of `service` in Jaeger's storage now (all in one trace, so one search finds them)."""
    with httpx.Client(base_url=ports.query_url, timeout=5, trust_env=False) as client:
        response = client.get("/api/traces", params={"service": service, "limit": 20})
        response.raise_for_status()
        return sum(len(trace["spans"]) for trace in response.json()["data"] or [])


def dropped_by_monitor_exporter(log: Path) -> int:
    """`dropped_items` of the exporter's "Dropping data." lines: what it threw away, and why."""
    dropped = 0
    for line in log.read_text(errors="replace").splitlines():
        if "Dropping data." in line and f'"otelcol.component.id": "{MONITOR_EXPORTER}"' in line:
            fields = json.loads(line[line.index("{") :])
            assert "interrupted due to shutdown" in fields["error"]
            dropped += int(fields["dropped_items"])
    return dropped


def test_pinned_jaeger_bundles_no_storage_extension() -> None:
    """Why the monitor's queue is in memory. When a Jaeger bump brings `file_storage`, this fails:
    then give otlphttp/monitor `sending_queue.storage` and turn the test below around."""
    assert JAEGER_BINARY.is_file(), "build Jaeger with `make setup` or scripts/build-tools.sh"
    listing = subprocess.run(
        [str(JAEGER_BINARY), "components"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    extensions = {extension["name"] for extension in yaml.safe_load(listing)["extensions"]}
    assert {"jaeger_storage", "healthcheckv2"} <= extensions, "not the listing expected"
    assert "file_storage" not in extensions


@pytest.mark.parametrize("storage", STORAGES)
def test_jaeger_restart_while_monitor_down_loses_what_was_queued_for_it(
    storage: Storage, tmp_path: Path
) -> None:
    """Measured, not wished for: the queue is in memory, so a graceful stop (SIGTERM) with the
    monitor away drops every span waiting for it, and the restarted Jaeger has none to send.
    Badger still holds them; memory storage loses them too."""
    ports = JaegerPorts.pick_free()
    monitor_port = free_port()  # nothing listens there: the monitor is down
    service = f"probe-{uuid.uuid4().hex[:8]}"
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    jaeger = jaeger_process(
        storage,
        ports,
        data_dir=tmp_path / "jaeger",
        logs_dir=tmp_path / "logs",
        monitor_endpoint=f"http://127.0.0.1:{monitor_port}",
        monitor_token=TOKEN,
    )
    with Stack([jaeger]) as stack:
        send(ports, order_spans(service, QUEUED))
        # All of them wait for the monitor (batch/monitor hands them on within 200 ms)...
        assert until(lambda: monitor_queue_size(ports) == QUEUED)
        # ...and are stored, so what Badger has after the restart is what it kept, not late.
        assert until(lambda: stored_count(ports, service) == QUEUED)

        stack.stop_process("jaeger")
        assert jaeger.returncode == 0, "Jaeger did not stop on SIGTERM"
        stack.start_process("jaeger")

        with receiving(monitor_port) as monitor:
            # Forwarding works again: a span sent after the restart arrives...
            send(ports, order_spans(marker, 1))
            assert received(monitor, marker, {"with-order"}) == ["with-order"]
            # ...and nothing from before it does, even after a retry's worth of waiting.
            time.sleep(RETRY_GRACE)
            arrived = len(monitor.span_names(service))

        stored_after = stored_count(ports, service)

    assert arrived == 0
    # Jaeger says so in its log: the exporter dropped the whole queue at shutdown.
    assert dropped_by_monitor_exporter(jaeger.log_path) == QUEUED
    assert stored_after == (QUEUED if storage == "badger" else 0)
