"""Jaeger started through the supervisor accepts an OTLP/HTTP span and serves it back."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from loupe.stack.components import JaegerPorts, Storage, jaeger_process
from loupe.stack.supervisor import Stack

pytestmark = pytest.mark.e2e


def export_one_span(ports: JaegerPorts, service: str) -> str:
    """Sends one span as `service` and returns its trace id in Jaeger's hex form."""
    exporter = OTLPSpanExporter(endpoint=f"{ports.otlp_http_url}/v1/traces", timeout=10)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        with provider.get_tracer("loupe.tests").start_as_current_span("probe") as span:
            span.set_attribute("loupe.probe", True)
            trace_id = format(span.get_span_context().trace_id, "032x")
    finally:
        provider.shutdown()
    return trace_id


def find_trace(ports: JaegerPorts, service: str, timeout: float = 15.0) -> list[dict]:
    """Polls the query API until the service has traces; the collector batches before storing."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=ports.query_url, timeout=5, trust_env=False) as client:
        while True:
            response = client.get("/api/traces", params={"service": service, "limit": 20})
            response.raise_for_status()
            traces = response.json()["data"] or []
            if traces or time.monotonic() > deadline:
                return traces
            time.sleep(0.2)


def assert_single_probe(traces: list[dict], trace_id: str, service: str) -> None:
    assert [t["traceID"] for t in traces] == [trace_id]
    (span,) = traces[0]["spans"]
    assert span["operationName"] == "probe"
    assert traces[0]["processes"][span["processID"]]["serviceName"] == service
    assert {"key": "loupe.probe", "type": "bool", "value": True} in span["tags"]


@pytest.mark.parametrize("storage", ["memory", "badger"])
def test_span_round_trip(storage: Storage, tmp_path: Path) -> None:
    ports = JaegerPorts.pick_free()
    jaeger = jaeger_process(storage, ports, tmp_path / "jaeger", tmp_path / "logs")
    service = f"probe-{uuid.uuid4().hex[:8]}"
    with Stack([jaeger]) as stack:
        services = httpx.get(f"{ports.query_url}/api/services", trust_env=False)
        assert services.status_code == 200
        assert service not in (services.json()["data"] or [])

        trace_id = export_one_span(ports, service)
        assert_single_probe(find_trace(ports, service), trace_id, service)

        if storage == "badger":
            # Badger is the persistent option: the trace must survive a restart.
            stack.stop_process("jaeger")
            stack.start_process("jaeger")
            assert_single_probe(find_trace(ports, service, timeout=0), trace_id, service)
