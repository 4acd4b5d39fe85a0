"""What the monitor's integration tests share: the SLO they judge by, RabbitMQ's management
API, and spans sent into the store as OTLP protobuf."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from opentelemetry.sdk.trace import ReadableSpan

from loupe.accounts import Account
from loupe.messaging.management import Management
from loupe.monitor import store
from loupe.monitor.spans import decode
from tests.support.integration import SANDBOX
from tests.support.otlp_spans import HAPPY_MOVES, otlp, slo

SLO = slo()
HAPPY = list(HAPPY_MOVES)


def management() -> Management:
    """RabbitMQ's management API as the monitor's own user (once the session's vhost exists)."""
    return SANDBOX.settings.management(Account.MONITOR)


async def send(pool: asyncpg.Pool, spans: Sequence[ReadableSpan]) -> store.IngestResult:
    """`spans` through OTLP encoding and the monitor's decoder into the store, as its intake
    does."""
    kept, received = decode(otlp(spans))
    result = await store.ingest(pool, kept, SLO, received.total())
    await store.heard_from(pool, received)
    return result
