"""RetryingSpanExporter: a batch the collector did not take is held and sent again, oldest
first, before the next; it is given up only past its bounds or at shutdown; every span is
counted as sent or dropped."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode
from prometheus_client import REGISTRY

from loupe.telemetry.attributes import HEARTBEAT
from loupe.telemetry.delivery import (
    RETRY_SECONDS,
    SPANS_EXPORTED_METRIC,
    SPANS_HELD_METRIC,
    Exported,
    Kind,
    RetryingSpanExporter,
    count_queue_drops,
    kind,
)

OK, FAIL = SpanExportResult.SUCCESS, SpanExportResult.FAILURE


def exported(result: Exported, *kinds: Kind) -> float:
    """Spans counted as `result`, of `kinds` (all when none are named)."""
    return sum(
        REGISTRY.get_sample_value(SPANS_EXPORTED_METRIC, {"result": result, "kind": kind}) or 0.0
        for kind in kinds or tuple(Kind)
    )


def held() -> float | None:
    return REGISTRY.get_sample_value(SPANS_HELD_METRIC)


class Collector(SpanExporter):
    """Takes or refuses each export as `up` says (or raises `error`); keeps what it took."""

    def __init__(self) -> None:
        self.up = True
        self.error: Exception | None = None
        self.took: list[list[str]] = []
        self.shut = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.error is not None:
            raise self.error
        if not self.up:
            return FAIL
        self.took.append([span.name for span in spans])
        return OK

    def shutdown(self) -> None:
        self.shut = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def batch(*names: str) -> list[ReadableSpan]:
    return [ReadableSpan(name=name) for name in names]


def test_monitored_spans_are_those_jaegers_filter_forwards_to_the_monitor(
    collector: Collector,
) -> None:
    # deploy/jaeger/monitor-pipeline.yaml: dropped when order.id is nil, not an error and not a
    # heartbeat.
    spans = [
        ReadableSpan(name="step", attributes={"order.id": "o-1"}),
        ReadableSpan(name="empty id", attributes={"order.id": ""}),
        ReadableSpan(name="failed", status=Status(StatusCode.ERROR, "broker gone")),
        ReadableSpan(name=HEARTBEAT),
        ReadableSpan(name="SELECT", attributes={"db.system.name": "postgresql"}),
        ReadableSpan(name="fine", status=Status(StatusCode.OK)),
    ]
    assert [kind(span) for span in spans] == [Kind.MONITORED] * 4 + [Kind.OTHER] * 2
    orders, others = exported(Exported.SENT, Kind.MONITORED), exported(Exported.SENT, Kind.OTHER)
    RetryingSpanExporter(collector).export(spans)
    assert exported(Exported.SENT, Kind.MONITORED) - orders == 4
    assert exported(Exported.SENT, Kind.OTHER) - others == 2


@pytest.fixture
def collector() -> Collector:
    return Collector()


def test_what_the_collector_refused_is_sent_first_once_it_is_back(collector: Collector) -> None:
    sent, dropped = exported(Exported.SENT), exported(Exported.DROPPED)
    clock = Clock()
    exporter = RetryingSpanExporter(collector, clock=clock)
    assert exporter.export(batch("a1", "a2")) is OK
    collector.up = False
    assert exporter.export(batch("b1")) is FAIL
    clock.now += RETRY_SECONDS
    assert exporter.export(batch("c1", "c2")) is FAIL
    assert (exporter.held, held()) == (3, 3)

    collector.up = True
    clock.now += RETRY_SECONDS
    assert exporter.export(batch("d1")) is OK
    assert collector.took == [["a1", "a2"], ["b1"], ["c1", "c2"], ["d1"]]
    assert (exporter.held, held()) == (0, 0)
    assert (exported(Exported.SENT) - sent, exported(Exported.DROPPED) - dropped) == (6, 0)


def test_an_exporter_that_raises_is_a_refusal_not_a_crash(collector: Collector) -> None:
    exporter = RetryingSpanExporter(collector, retry_seconds=0)
    collector.error = ConnectionError("collector gone")
    assert exporter.export(batch("a")) is FAIL
    collector.error = None
    assert exporter.export(batch("b")) is OK
    assert collector.took == [["a"], ["b"]]


def test_past_its_bounds_the_oldest_is_given_up_and_counted(collector: Collector) -> None:
    clock = Clock()
    dropped = exported(Exported.DROPPED)
    exporter = RetryingSpanExporter(
        collector, max_spans=4, max_seconds=60, retry_seconds=0, clock=clock
    )
    collector.up = False
    exporter.export(batch("a1", "a2"))
    exporter.export(batch("b1", "b2"))
    exporter.export(batch("c1"))  # five held: over four, the oldest batch goes
    assert exporter.held == 3
    assert exported(Exported.DROPPED) - dropped == 2

    clock.now += 61  # b and c are now held longer than a minute
    exporter.export(batch("d1"))
    assert exporter.held == 1
    collector.up = True
    exporter.export(())
    assert collector.took == [["d1"]]
    assert exported(Exported.DROPPED) - dropped == 5


def test_flush_tries_again_and_shutdown_gives_up_what_is_still_held(
    collector: Collector,
) -> None:
    exporter = RetryingSpanExporter(collector)
    collector.up = False
    exporter.export(batch("a"))
    collector.up = True
    assert exporter.force_flush(100)
    assert collector.took == [["a"]]

    collector.up = False
    exporter.export(batch("b", "c"))
    assert not exporter.force_flush(100)
    dropped = exported(Exported.DROPPED)
    exporter.shutdown()
    assert (exporter.held, held(), collector.shut) == (0, 0, True)
    assert exported(Exported.DROPPED) - dropped == 2


class Blocked(Collector):
    """A collector frozen mid-request: each export waits until it is let go."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        self.release.wait(10)
        return FAIL


def test_after_a_failed_attempt_batches_are_held_at_once_until_the_retry_is_due(
    collector: Collector,
) -> None:
    # A frozen collector blocks each attempt for the exporter's timeout; trying again at once
    # for every batch would keep the batch processor's worker blocked while its queue fills.
    clock = Clock()
    exporter = RetryingSpanExporter(collector, retry_seconds=2, clock=clock)
    collector.up = False
    collector.took.clear()
    calls = []
    inner_export = collector.export

    def counted(spans: Sequence[ReadableSpan]) -> SpanExportResult:
        calls.append([span.name for span in spans])
        return inner_export(spans)

    collector.export = counted  # type: ignore[method-assign]
    assert exporter.export(batch("a")) is FAIL
    clock.now += 1.9
    assert exporter.export(batch("b")) is FAIL
    assert exporter.export(batch("c")) is FAIL
    assert calls == [["a"]]
    assert exporter.held == 3

    collector.up = True
    clock.now += 0.1
    assert exporter.export(batch("d")) is OK
    assert calls == [["a"], ["a"], ["b"], ["c"], ["d"]]


def test_a_flush_tries_at_once_even_before_the_retry_is_due(collector: Collector) -> None:
    clock = Clock()
    exporter = RetryingSpanExporter(collector, retry_seconds=60, clock=clock)
    collector.up = False
    exporter.export(batch("a"))
    collector.up = True
    assert exporter.force_flush(100)
    assert collector.took == [["a"]]


def test_spans_a_full_batch_queue_drops_are_counted_as_dropped() -> None:
    # The real processor, its worker stuck in an export, and a queue of four: the spans ended
    # past that are dropped by the SDK, and counted here.
    count_queue_drops()
    blocked = Blocked()
    processor = BatchSpanProcessor(
        blocked, max_queue_size=4, max_export_batch_size=1, schedule_delay_millis=1
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    unknown = exported(Exported.DROPPED, Kind.UNKNOWN)
    try:
        with tracer.start_as_current_span("first"):
            pass
        for _ in range(100):  # until the worker has taken the first span and is stuck
            if blocked.calls:
                break
            threading.Event().wait(0.01)
        assert blocked.calls == 1
        for n in range(10):
            with tracer.start_as_current_span(f"span {n}"):
                pass
        assert exported(Exported.DROPPED, Kind.UNKNOWN) - unknown == 6
    finally:
        blocked.release.set()
        provider.shutdown()
