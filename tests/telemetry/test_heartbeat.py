"""The heartbeat: a span named HEARTBEAT every interval until cancelled."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loupe.telemetry.attributes import HEARTBEAT
from loupe.telemetry.heartbeat import beat


async def test_a_heartbeat_span_every_interval_until_cancelled(
    spans: InMemorySpanExporter,
) -> None:
    task = asyncio.create_task(beat(0.05))
    await asyncio.sleep(0.22)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    beats = [s for s in spans.get_finished_spans() if s.name == HEARTBEAT]
    assert 3 <= len(beats) <= 6
    assert all(s.parent is None for s in beats), "each a root span of its own"
    count = len(beats)
    await asyncio.sleep(0.1)
    assert len([s for s in spans.get_finished_spans() if s.name == HEARTBEAT]) == count
