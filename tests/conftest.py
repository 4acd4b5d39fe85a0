"""Fixtures shared by every test folder.

Tests are laid out like src/loupe/; their tier is a marker, not a folder: a file marked
`integration` needs the real RabbitMQ and PostgreSQL (fixtures in
tests/support/integration_fixtures.py), one marked `e2e` starts processes (fixtures in
tests/e2e/conftest.py), and a file with neither is a unit test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.service_fakes import FakeOrders

pytest_plugins = ["tests.support.integration_fixtures"]


@pytest.fixture(scope="session")
def global_span_exporter() -> InMemorySpanExporter:
    """Every span finished through the process-wide tracer provider, kept in memory.

    loupe's modules call `trace.get_tracer` at import time and get a ProxyTracer, which binds
    to the global provider on its first span and keeps it; the global can be set only once
    per process. So this sets an SDK provider once, for the whole session, and tests that
    inspect loupe's own spans clear the exporter first. When some other code already made an
    SDK provider global, the exporter is attached to that one instead.
    """
    exporter = InMemorySpanExporter()
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        current.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        if trace.get_tracer_provider() is not provider:
            raise RuntimeError("could not make the test tracer provider global")
    return exporter


@pytest.fixture
def spans(global_span_exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    """The global exporter, emptied for this test."""
    global_span_exporter.clear()
    yield global_span_exporter
    global_span_exporter.clear()


@pytest.fixture
def orders() -> FakeOrders:
    """An order table in memory for a service's routes (see tests/support/service_fakes.py)."""
    return FakeOrders()
