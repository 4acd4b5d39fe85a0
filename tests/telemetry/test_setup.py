"""configure_telemetry honours the standard OTEL_* variables: spans go, redacted, to the OTLP
endpoint and headers the environment names (or nowhere, or to the console), OTEL_SDK_DISABLED
turns tracing off, and the service's own name is kept whatever the environment says (as
docs/tracing.md promises). A local HTTP collector stands in for Jaeger."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider

from loupe.monitor.spans import decode
from loupe.telemetry import setup
from loupe.telemetry.delivery import Exported
from loupe.telemetry.encoding import LoupeOTLPSpanExporter
from tests.telemetry.test_delivery import exported

VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SEMCONV_STABILITY_OPT_IN",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED",
    "LOUPE_OTLP_SDK_ENCODER",
)


# Each OTLP/HTTP request the collector got: (path, headers, body).
Received = list[tuple[str, dict[str, str], bytes]]


class Collector(BaseHTTPRequestHandler):
    received: Received

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.received.append((self.path, dict(self.headers), self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def made(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[TracerProvider]]:
    """Providers configure_telemetry made global, kept here instead: the process's global
    provider is the test session's. Logging is left alone too (configure_logging would replace
    pytest's handlers), and every variable read here starts unset."""
    for name in VARIABLES:
        monkeypatch.setenv(name, "")  # so that the value before the test comes back after it
        monkeypatch.delenv(name)
    providers: list[TracerProvider] = []
    monkeypatch.setattr(setup.trace, "set_tracer_provider", providers.append)
    monkeypatch.setattr(setup, "configure_logging", lambda _: None)
    yield providers
    setup.shutdown_telemetry()


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Received]:
    received: Received = []
    handler = type("Handler", (Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    yield received
    server.shutdown()
    server.server_close()


def _configure(monkeypatch: pytest.MonkeyPatch, **variables: str) -> TracerProvider | None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return setup.configure_telemetry("mes-api")


def _trace_one_span(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    provider = _configure(monkeypatch, **variables)
    assert provider is not None
    attributes = {"order.id": "o-1", "customer.email": "ada@example.com"}
    provider.get_tracer(__name__).start_span("price order", attributes=attributes).end()
    # The batch processor waits seconds before sending; shutting down must send at once.
    setup.shutdown_telemetry()


def test_spans_are_sent_to_the_otlp_endpoint_with_its_headers_by_shutdown(
    made: list[TracerProvider], collector: Received, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = exported(Exported.SENT)
    _trace_one_span(monkeypatch, OTEL_EXPORTER_OTLP_HEADERS="x-tenant=workshop")
    assert len(made) == 1, "the provider is made the global one"
    ((path, headers, body),) = collector
    assert (path, headers["x-tenant"]) == ("/v1/traces", "workshop")
    (span,), received = decode(body)
    assert (received.total(), span.name, span.order_id) == (1, "price order", "o-1")
    assert b"ada@example.com" not in body, "spans are redacted on the way out"
    assert exported(Exported.SENT) - sent == 1, "counted as sent for the drills' audit"


def test_spans_the_collector_never_took_are_counted_as_dropped_at_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dropped = exported(Exported.DROPPED)
    # Nothing listens on port 9 (discard) here: the connection is refused at once.
    _trace_one_span(
        monkeypatch,
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
    )
    assert exported(Exported.DROPPED) - dropped == 1


def test_the_services_name_wins_over_the_environments(
    collector: Received, monkeypatch: pytest.MonkeyPatch
) -> None:
    _trace_one_span(
        monkeypatch,
        OTEL_SERVICE_NAME="elsewhere",
        OTEL_RESOURCE_ATTRIBUTES="service.name=other,k8s.namespace.name=shop",
    )
    request = ExportTraceServiceRequest.FromString(collector[0][2])
    resource = {a.key: a.value.string_value for a in request.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "mes-api", "the monitor finds services by these names"
    assert resource["service.namespace"] == "loupe"
    assert resource["k8s.namespace.name"] == "shop"


@pytest.mark.parametrize("value", ["true", "TRUE", " 1 "])
def test_otel_sdk_disabled_turns_tracing_off(
    made: list[TracerProvider], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    assert _configure(monkeypatch, OTEL_SDK_DISABLED=value) is None
    assert made == []


def test_otel_traces_exporter_none_sends_nothing(
    collector: Received, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only a true value disables the SDK.
    _trace_one_span(monkeypatch, OTEL_SDK_DISABLED="false", OTEL_TRACES_EXPORTER="none")
    assert collector == []


def test_otel_traces_exporter_console_prints_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    # The console exporter writes to the stdout of when it was imported; give it another.
    out = io.StringIO()
    monkeypatch.setattr(setup, "ConsoleSpanExporter", partial(setup.ConsoleSpanExporter, out=out))
    _trace_one_span(monkeypatch, OTEL_TRACES_EXPORTER="console")
    assert '"name": "price order"' in out.getvalue()
    assert "ada@example.com" not in out.getvalue()


@pytest.mark.parametrize(
    ("variables", "refused"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "'zipkin'"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "'http/json'"),
        # The traces-only variable is read first.
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "x"},
            "'x'",
        ),
    ],
)
def test_an_unsupported_exporter_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], refused: str
) -> None:
    with pytest.raises(ValueError, match=refused):
        _configure(monkeypatch, **variables)


@pytest.mark.parametrize("sampler", ["always_on", "always_off"])
def test_otel_traces_sampler_decides_what_is_recorded(
    monkeypatch: pytest.MonkeyPatch, sampler: str
) -> None:
    provider = _configure(monkeypatch, OTEL_TRACES_EXPORTER="none", OTEL_TRACES_SAMPLER=sampler)
    assert provider is not None
    recording = provider.get_tracer(__name__).start_span("step").is_recording()
    assert recording is (sampler == "always_on")


@pytest.mark.parametrize("given", [None, "http"])
def test_stable_semantic_conventions_are_asked_for_unless_the_operator_chose(
    monkeypatch: pytest.MonkeyPatch, given: str | None
) -> None:
    chosen = {"OTEL_SEMCONV_STABILITY_OPT_IN": given} if given else {}
    _configure(monkeypatch, OTEL_SDK_DISABLED="true", **chosen)
    assert setup.os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] == (given or "http,database")


def test_otlp_over_http_is_encoded_by_loupe_unless_asked_for_the_sdks(
    made: list[TracerProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = setup._exporter()
    assert isinstance(ours, LoupeOTLPSpanExporter)
    ours.shutdown()
    monkeypatch.setenv("LOUPE_OTLP_SDK_ENCODER", "true")
    sdks = setup._exporter()
    assert type(sdks) is OTLPSpanExporter
    sdks.shutdown()


def test_spans_encoded_by_the_sdk_reach_the_collector_as_well(
    made: list[TracerProvider], collector: Received, monkeypatch: pytest.MonkeyPatch
) -> None:
    _trace_one_span(monkeypatch, LOUPE_OTLP_SDK_ENCODER="true")
    ((_path, _headers, body),) = collector
    (span,), _received = decode(body)
    assert (span.name, span.order_id) == ("price order", "o-1")
