"""Transaction-control spans are left out unless asked for; everything else follows the
configured sampler."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loupe.telemetry.sampling import SkipTransactionControl, configured_sampler


def _recorded(names: list[str], provider: TracerProvider) -> list[str]:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(__name__)
    with tracer.start_as_current_span("process loupe.orders"):
        for name in names:
            with tracer.start_as_current_span(name):
                pass
    provider.shutdown()
    return [span.name for span in exporter.get_finished_spans()]


def test_begin_and_commit_are_left_out_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOUPE_TRACE_TRANSACTION_CONTROL", raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    names = _recorded(
        ["BEGIN;", "INSERT", "COMMIT;", "ROLLBACK;"], TracerProvider(sampler=configured_sampler())
    )
    assert names == ["INSERT", "process loupe.orders"]


def test_they_can_be_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOUPE_TRACE_TRANSACTION_CONTROL", "true")
    names = _recorded(["BEGIN;", "COMMIT;"], TracerProvider(sampler=configured_sampler()))
    assert names == ["BEGIN;", "COMMIT;", "process loupe.orders"]


def test_the_configured_sampler_still_decides_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    sampler = configured_sampler()
    assert isinstance(sampler, SkipTransactionControl)
    assert "AlwaysOff" in sampler.get_description()
    assert _recorded(["INSERT"], TracerProvider(sampler=sampler)) == []
