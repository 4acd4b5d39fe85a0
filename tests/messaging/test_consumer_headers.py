"""Headers a producer controls, against the consumer alone (no broker): whatever they hold, a
delivery is settled exactly once, and a failing message is retried exactly the budget when a
producer published it, never more, whatever it claims."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loupe.messaging import Delivery
from loupe.messaging.consumer import (
    ATTEMPT_HEADER,
    DELIVERY_COUNT_HEADER,
    ORDER_HEADER,
    REASON_HEADER,
    RETURNED_THROUGH,
    Consumer,
    delivery_attempt,
)
from loupe.messaging.topology import BROKER_DELIVERY_LIMIT, QUEUES, Exchanges
from loupe.orders import OrderEvent, OrderSource, OrderStatus

QUEUE = QUEUES["mes.order-submitted"]
MAX_ATTEMPTS = 4
ORDERS = "loupe.orders"

# What an AMQP field table can hold, as aio-pika hands it over.
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.just(Decimal("Infinity")),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.datetimes(timezones=st.just(UTC)),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=8,
)
_loupe_names = st.sampled_from(
    [
        ATTEMPT_HEADER,
        DELIVERY_COUNT_HEADER,
        ORDER_HEADER,
        REASON_HEADER,
        "x-death",
        "x-loupe-exchange",
        "x-loupe-routing-key",
        "traceparent",
        "tracestate",
        "baggage",
    ]
)
# Each example runs the consumer up to the whole budget: slower than hypothesis expects.
thorough = settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
headers_strategy = st.dictionaries(
    st.one_of(_loupe_names, st.text(max_size=20)), _values, max_size=8
)


@dataclass
class FakeMessage:
    body: bytes
    headers: dict[str, Any]
    exchange: str
    routing_key: str
    redelivered: bool = False
    message_id: str | None = "m-1"
    delivery_tag: int | None = 1
    settled: list[str] = field(default_factory=list)

    async def ack(self) -> None:
        self.settled.append("ack")

    async def nack(self, requeue: bool = True) -> None:
        self.settled.append("nack")


@dataclass
class FakeExchange:
    name: str


@dataclass
class FakePublisher:
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def publish(self, exchange: FakeExchange, body: bytes, key: str, **options: Any) -> str:
        self.sent.append((exchange.name, dict(options.get("headers") or {})))
        return str(options.get("message_id"))


class Failing:
    """A handler that always fails as a transient error would."""

    def __init__(self) -> None:
        self.attempts: list[int] = []

    async def __call__(self, event: OrderEvent, delivery: Delivery) -> None:
        self.attempts.append(delivery.attempt)
        raise ConnectionError("database is restarting")


def _consumer(handler: Any, publisher: FakePublisher) -> Consumer:
    exchanges = Exchanges(
        orders=FakeExchange(ORDERS),  # type: ignore[arg-type]
        retry=FakeExchange("loupe.retry"),  # type: ignore[arg-type]
        dead_letter=FakeExchange("loupe.dead-letter"),  # type: ignore[arg-type]
    )
    return Consumer(
        QUEUE,
        handler,
        exchanges=exchanges,
        publisher=publisher,  # type: ignore[arg-type]
        service="test-service",
        max_attempts=MAX_ATTEMPTS,
        retry_delay_ms=100,
    )


def _body(order_id: str = "o-1") -> bytes:
    return OrderEvent.now(
        order_id=order_id,
        status=OrderStatus.SUBMITTED,
        previous_status=None,
        source=OrderSource.SHOP,
        model_url="http://127.0.0.1:8081/models/x",
    ).to_json()


async def _deliver_until_dead(
    headers: dict[str, Any], *, redelivered: bool
) -> tuple[Failing, FakePublisher, list[FakeMessage]]:
    """Publish to loupe.orders, then hand every retry copy back as the delay queue would (through
    the default exchange), until the consumer dead-letters the message or gives up a bound."""
    handler, publisher = Failing(), FakePublisher()
    consumer = _consumer(handler, publisher)
    message = FakeMessage(_body(), headers, ORDERS, "order.submitted", redelivered)
    messages = [message]
    for _ in range(MAX_ATTEMPTS + BROKER_DELIVERY_LIMIT + 1):
        await consumer._on_message(message)  # type: ignore[arg-type]
        exchange, forwarded = publisher.sent[-1]
        if exchange != "loupe.retry":
            break
        message = FakeMessage(_body(), forwarded, RETURNED_THROUGH, QUEUE.name)
        messages.append(message)
    return handler, publisher, messages


@thorough
@given(headers=headers_strategy)
async def test_a_producer_s_headers_neither_add_nor_remove_retries(
    headers: dict[str, Any],
) -> None:
    handler, publisher, messages = await _deliver_until_dead(headers, redelivered=False)
    assert handler.attempts == list(range(1, MAX_ATTEMPTS + 1))
    assert [exchange for exchange, _ in publisher.sent] == [
        *(["loupe.retry"] * (MAX_ATTEMPTS - 1)),
        "loupe.dead-letter",
    ]
    # Every delivery was settled exactly once, by an ack after its copy was confirmed.
    assert [m.settled for m in messages] == [["ack"]] * MAX_ATTEMPTS
    _, dead = publisher.sent[-1]
    assert str(dead[REASON_HEADER]).startswith(f"gave up after {MAX_ATTEMPTS} attempts")
    # The dead letter names the order its body names, not one a producer's header claims.
    assert dead[ORDER_HEADER] == "o-1"


@thorough
@given(headers=headers_strategy)
async def test_a_redelivery_s_count_is_bounded_by_the_broker_s_limit(
    headers: dict[str, Any],
) -> None:
    handler, publisher, _ = await _deliver_until_dead(headers, redelivered=True)
    assert 1 <= len(handler.attempts) <= MAX_ATTEMPTS
    assert all(1 <= a <= MAX_ATTEMPTS + BROKER_DELIVERY_LIMIT for a in handler.attempts)
    assert publisher.sent[-1][0] == "loupe.dead-letter"


@thorough
@given(headers=headers_strategy, body=st.binary(max_size=200))
async def test_a_malformed_message_goes_to_the_dead_letter_queue_with_a_reason(
    headers: dict[str, Any], body: bytes
) -> None:
    handler, publisher = Failing(), FakePublisher()
    message = FakeMessage(body, headers, ORDERS, "order.submitted")
    await _consumer(handler, publisher)._on_message(message)  # type: ignore[arg-type]
    assert handler.attempts == []
    ((exchange, dead),) = publisher.sent
    assert exchange == "loupe.dead-letter"
    assert str(dead[REASON_HEADER]).startswith("poison message: ")
    assert message.settled == ["ack"]


@given(
    headers=headers_strategy,
    exchange=st.sampled_from([ORDERS, RETURNED_THROUGH, "elsewhere"]),
    redelivered=st.booleans(),
)
def test_the_attempt_is_always_within_the_budget_and_the_broker_s_limit(
    headers: dict[str, Any], exchange: str, redelivered: bool
) -> None:
    attempt = delivery_attempt(
        headers, exchange=exchange, redelivered=redelivered, max_attempts=MAX_ATTEMPTS
    )
    assert 1 <= attempt <= MAX_ATTEMPTS + BROKER_DELIVERY_LIMIT
    if not redelivered:
        assert attempt <= MAX_ATTEMPTS
    if exchange != RETURNED_THROUGH and not redelivered:
        assert attempt == 1


@pytest.mark.parametrize(
    ("headers", "exchange", "redelivered", "attempt"),
    [
        ({ATTEMPT_HEADER: 3}, RETURNED_THROUGH, False, 3),
        ({ATTEMPT_HEADER: 3}, ORDERS, False, 1),
        ({ATTEMPT_HEADER: -(10**9)}, RETURNED_THROUGH, False, 1),
        ({ATTEMPT_HEADER: 10**9}, RETURNED_THROUGH, False, MAX_ATTEMPTS),
        ({ATTEMPT_HEADER: float("inf")}, RETURNED_THROUGH, False, 1),
        ({DELIVERY_COUNT_HEADER: 2}, ORDERS, True, 3),
        ({DELIVERY_COUNT_HEADER: 2}, ORDERS, False, 1),
        ({DELIVERY_COUNT_HEADER: 10**9}, ORDERS, True, 1 + BROKER_DELIVERY_LIMIT),
        ({ATTEMPT_HEADER: 2, DELIVERY_COUNT_HEADER: 1}, RETURNED_THROUGH, True, 3),
    ],
)
def test_which_headers_count_and_how_far(
    headers: dict[str, Any], exchange: str, redelivered: bool, attempt: int
) -> None:
    assert (
        delivery_attempt(
            headers, exchange=exchange, redelivered=redelivered, max_attempts=MAX_ATTEMPTS
        )
        == attempt
    )
