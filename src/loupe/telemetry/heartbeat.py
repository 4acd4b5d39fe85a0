"""A span from each service every few seconds, whatever it does: with it the monitor tells
"nothing happened at mes-api" from "nothing from mes-api reached me" (Jaeger frozen, an exporter
failing), and knows up to when it has heard from each service.

Jaeger forwards these spans to the monitor and keeps them out of its own storage
(deploy/jaeger). Under a sampler other than the default `parentbased_always_on` they are
sampled like any root span, and the monitor's view of a service's silence is as coarse.
"""

from __future__ import annotations

import asyncio

from opentelemetry import trace

from loupe.telemetry.attributes import HEARTBEAT

# With the batch processor's 5 s delay, the monitor hears from an idle service within ~10 s.
HEARTBEAT_SECONDS = 5.0


async def beat(interval: float = HEARTBEAT_SECONDS) -> None:
    """One heartbeat span every `interval` seconds until cancelled."""
    tracer = trace.get_tracer(__name__)
    while True:
        tracer.start_span(HEARTBEAT).end()
        await asyncio.sleep(interval)
