"""Getting a process's spans to the collector through its outages, and counting how that went.

The SDK's OTLP exporter retries a batch for at most OTEL_EXPORTER_OTLP_TIMEOUT (10 s) and six
attempts, then the batch is gone: a Jaeger frozen or restarting for a minute cost the services
thousands of spans, and the monitor, which learns only from spans, then reported orders stuck
that had moved on. `RetryingSpanExporter` holds each batch that failed and sends it again,
oldest first, before the next one, as the Collector's own sending queue does; it gives a batch
up only past a bound in count or age (a batch the collector will never take must not hold up
the rest for ever), and counts each span as sent or dropped.

Each attempt at an unreachable or frozen collector blocks the batch processor's worker for the
exporter's timeout, and while it is blocked the processor's queue fills; full, it drops spans
silently (a log line, no counter). So after a failed attempt the next waits RETRY_SECONDS, and
the batches that come meanwhile are held at once: the worker keeps emptying the queue into the
held batches, which are bounded and counted. The drops a full queue still makes are counted
too (`count_queue_drops`), as dropped of kind `unknown`.

Served at each service's /metrics; with the monitor's `loupe_monitor_spans_received_total
{service}`, these counters are the evidence that every span a service sent reached the monitor.
Counted once per batch on the batch processor's thread, so requests pay nothing for them. The
SDK's own self-metrics (OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED) would count exports too, but
they also count every span started, which measured here about 20 µs more per span: more than
the span itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode
from prometheus_client import Counter, Gauge

from loupe.telemetry.attributes import HEARTBEAT, ORDER_ID

log = logging.getLogger(__name__)

SPANS_EXPORTED_METRIC = "loupe_spans_exported_total"
SPANS_HELD_METRIC = "loupe_spans_held"

# More than the 5 minutes below of one service's spans at the demo's rate (about 30 a second),
# some tens of MB at most.
HELD_SPANS_MAX = 20_000
# Longer than any outage a restart or a pause causes; a batch still refused after this long
# is one the collector will not take.
HELD_SECONDS_MAX = 300.0
# Short against the exporter's own 10 s timeout per attempt, long enough for the worker to
# empty the queue between attempts.
RETRY_SECONDS = 2.0


class Exported(StrEnum):
    SENT = "sent"
    """The collector took it."""
    DROPPED = "dropped"
    """Given up: held past HELD_SPANS_MAX or HELD_SECONDS_MAX, or still held at shutdown."""


class Kind(StrEnum):
    MONITORED = "monitored"
    """Names an order, failed, or is a heartbeat: what Jaeger forwards to the monitor (its
    filter/monitor)."""
    OTHER = "other"
    UNKNOWN = "unknown"
    """Dropped by the batch processor's full queue, which does not say which span it was."""


def kind(span: ReadableSpan) -> Kind:
    attributes = span.attributes or {}
    if (
        ORDER_ID in attributes
        or span.status.status_code is StatusCode.ERROR
        or span.name == HEARTBEAT
    ):
        return Kind.MONITORED
    return Kind.OTHER


# The process-wide default registry: one exporter per process, served by the service's app.
SPANS_EXPORTED = Counter(
    SPANS_EXPORTED_METRIC.removesuffix("_total"),
    "Spans this process's exporter sent to the collector, or dropped (they are lost), by"
    " result and kind (monitored: names an order, failed or is a heartbeat, what the monitor"
    " receives).",
    ["result", "kind"],
)
SPANS_HELD = Gauge(
    SPANS_HELD_METRIC,
    "Spans the exporter holds to send again: the collector did not take them yet.",
)


def _count(result: Exported, spans: Sequence[ReadableSpan]) -> None:
    orders = sum(1 for span in spans if kind(span) is Kind.MONITORED)
    SPANS_EXPORTED.labels(result=result, kind=Kind.MONITORED).inc(orders)
    SPANS_EXPORTED.labels(result=result, kind=Kind.OTHER).inc(len(spans) - orders)


@dataclass
class _Batch:
    spans: Sequence[ReadableSpan]
    held_since: float


class RetryingSpanExporter(SpanExporter):
    """Wraps the exporter that sends: a batch it fails to send is held and sent again, oldest
    first, at the next export; what is given up is counted as dropped."""

    def __init__(
        self,
        inner: SpanExporter,
        max_spans: int = HELD_SPANS_MAX,
        max_seconds: float = HELD_SECONDS_MAX,
        retry_seconds: float = RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._max_spans = max_spans
        self._max_seconds = max_seconds
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._held: deque[_Batch] = deque()
        self._count = 0
        self._retry_at = float("-inf")
        # The batch processor exports from its worker and from force_flush's caller.
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        return self._count

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._export(spans, wait=True)

    def _export(self, spans: Sequence[ReadableSpan], wait: bool) -> SpanExportResult:
        with self._lock:
            if spans:
                self._held.append(_Batch(spans, self._clock()))
                self._count += len(spans)
            self._give_up_beyond_bounds()
            try:
                if wait and self._held and self._clock() < self._retry_at:
                    return SpanExportResult.FAILURE
                return self._send_held()
            finally:
                SPANS_HELD.set(self._count)

    def _send_held(self) -> SpanExportResult:
        while self._held:
            batch = self._held[0]
            try:
                result = self._inner.export(batch.spans)
            except Exception:
                log.exception("the span exporter failed; the batch is held to send again")
                result = SpanExportResult.FAILURE
            if result is not SpanExportResult.SUCCESS:
                self._retry_at = self._clock() + self._retry_seconds
                log.warning(
                    "the collector did not take %d spans; %d held to send again",
                    len(batch.spans),
                    self._count,
                )
                return result
            self._held.popleft()
            self._count -= len(batch.spans)
            _count(Exported.SENT, batch.spans)
        return SpanExportResult.SUCCESS

    def _give_up_beyond_bounds(self) -> None:
        now = self._clock()
        while self._held and (
            self._count > self._max_spans or now - self._held[0].held_since > self._max_seconds
        ):
            self._drop(self._held.popleft(), "held too long or too many")

    def _drop(self, batch: _Batch, why: str) -> None:
        self._count -= len(batch.spans)
        _count(Exported.DROPPED, batch.spans)
        log.error("dropped %d spans the collector did not take (%s)", len(batch.spans), why)

    def shutdown(self) -> None:
        with self._lock:
            while self._held:
                self._drop(self._held.popleft(), "still held at shutdown")
            SPANS_HELD.set(0)
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        # One more attempt at what is held, whenever the last one was: the batch processor's
        # flush exports only what it has queued, and shutting down gives up what is still
        # held after this.
        sent = self._export((), wait=False) is SpanExportResult.SUCCESS
        return self._inner.force_flush(timeout_millis) and sent


# The SDK's batch processor (opentelemetry.sdk._shared_internal.BatchProcessor) logs this, with
# the word "Span", for each span it drops because its queue is full (its log shows only the
# first in 20 s); nothing else counts them.
# tests/telemetry/test_delivery.py drives a real processor into it, so a changed message fails
# there rather than going uncounted.
_QUEUE_FULL = "Queue full, dropping %s."
_BATCH_PROCESSOR_LOGGER = "opentelemetry.sdk._shared_internal"


class _QueueDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _QUEUE_FULL:
            SPANS_EXPORTED.labels(result=Exported.DROPPED, kind=Kind.UNKNOWN).inc()
        return True


_queue_drops = _QueueDrops()


def count_queue_drops() -> None:
    """Count, as dropped of kind `unknown`, each span the batch processor drops from its full
    queue. Idempotent."""
    logger = logging.getLogger(_BATCH_PROCESSOR_LOGGER)
    if _queue_drops not in logger.filters:
        # First: the SDK's own filter there drops repeats of a line for 20 s, and a record a
        # filter drops reaches no later one.
        logger.filters.insert(0, _queue_drops)
