"""Idempotent consumption: a delivery is applied at most once per consuming service.

Each service keeps a `processed_messages` table (queue, message_id) in its own database
(service/migrations/); claiming a message id inside the same transaction as the change it
causes makes a redelivered message, or an event the outbox relay published twice, a no-op.
"""

from __future__ import annotations

import asyncpg
from opentelemetry import trace

from loupe.messaging.consumer import Delivery
from loupe.telemetry.attributes import DUPLICATE_DELIVERY


async def claim_delivery(connection: asyncpg.Connection, delivery: Delivery) -> bool:
    """True when this delivery is new; False (and a span note) when it was applied before.

    Call it inside the transaction that applies the message's effect.
    """
    status = await connection.execute(
        "INSERT INTO processed_messages (queue, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        delivery.queue,
        delivery.message_id,
    )
    if status.endswith(" 1"):
        return True
    span = trace.get_current_span()
    span.set_attribute(DUPLICATE_DELIVERY, True)
    span.add_event("duplicate delivery ignored")
    return False
