"""RabbitMQ's real management API (127.0.0.1:15672) for the test session's vhost: whether it
answers, a queue's figures as they change, and messages looked at without being consumed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import pytest

from loupe.messaging.consumer import Delivery
from loupe.messaging.management import Management, QueueStats
from loupe.orders import OrderEvent, OrderStatus
from loupe.stack.process import free_port
from tests.support.integration import TIMEOUT, Broker, amqp_url
from tests.support.monitor import management
from tests.support.service_fakes import status_event

pytestmark = pytest.mark.integration

QUEUE = "mes.order-submitted"


def _admin() -> Management:
    """The API as the broker's administrator, who may look into every queue."""
    return Management(management().url, amqp_url())


def _amqp(**changes: str) -> str:
    """The session's AMQP URL, as the monitor, with another user, password or vhost."""
    parts = urlsplit(management().amqp_url)
    user = changes.get("user", parts.username or "")
    password = changes.get("password", parts.password or "")
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, path=changes.get("path", parts.path)))


async def _publish(broker: Broker, count: int) -> list[OrderEvent]:
    events = [status_event(f"o-{n}", OrderStatus.SUBMITTED) for n in range(count)]
    for event in events:
        await broker.publisher.publish_event(broker.exchanges.orders, event)
    return events


async def _stats_until(expected: str) -> QueueStats:
    # The management API's figures trail the queue by up to its statistics interval (5 s).
    stats = None
    for _ in range(int(TIMEOUT / 0.2)):
        stats = await _admin().queue_stats(QUEUE)
        if stats is not None and stats.describe() == expected:
            return stats
        await asyncio.sleep(0.2)
    raise AssertionError(f"the management API never said {expected!r}; last: {stats}")


@pytest.mark.parametrize(
    ("api", "problem"),
    [
        (management, None),
        (lambda: Management(management().url, _amqp(path="/no-such-vhost")), "answered 404"),
        (lambda: Management(management().url, _amqp(password="wrong")), "answered 401"),
        (lambda: Management(f"http://127.0.0.1:{free_port()}", amqp_url()), "cannot be reached"),
    ],
    ids=["ours", "unknown vhost", "wrong password", "nothing listening"],
)
async def test_problem_says_why_the_api_cannot_be_used(
    broker: Broker, api: Callable[[], Management], problem: str | None
) -> None:
    asked = api()
    found = await asked.problem()
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found and asked.url in found


async def test_queue_figures_count_ready_unacknowledged_and_consumers(broker: Broker) -> None:
    release = asyncio.Event()

    async def stuck(_: OrderEvent, __: Delivery) -> None:
        await release.wait()

    await _publish(broker, 3)
    # A consumer stuck on its first message (prefetch 1): one taken, two waiting.
    await broker.consume(QUEUE, stuck)
    try:
        stats = await _stats_until(f"queue {QUEUE}: 2 ready, 1 unacknowledged, 1 consumer(s)")
        assert (stats.name, stats.ready, stats.unacknowledged, stats.consumers) == (QUEUE, 2, 1, 1)
    finally:
        release.set()


async def test_a_queue_that_does_not_exist_has_no_figures(broker: Broker) -> None:
    assert await _admin().queue_stats("no.such.queue") is None
    assert await _admin().peek("no.such.queue", 5) == []


async def test_peek_shows_messages_in_order_and_leaves_them_queued(broker: Broker) -> None:
    events = await _publish(broker, 3)
    first_two = await _admin().peek(QUEUE, 2)
    assert [m["payload"] for m in first_two] == [e.to_json().decode() for e in events[:2]]
    assert first_two[0]["properties"]["message_id"]
    # Looked at twice, still all there: the portal reads dead letters this way.
    assert len(await _admin().peek(QUEUE, 10)) == 3
    assert await broker.depth_when(QUEUE, 3) == 3


@pytest.mark.parametrize(
    ("amqp_url", "vhost", "credentials"),
    [
        ("amqp://127.0.0.1", "/", ("guest", "guest")),
        ("amqp://a%40b:p%3Aw@rabbit:5673/%2F", "/", ("a@b", "p:w")),
        ("amqp://u:p@rabbit/shop%2Fblue", "shop/blue", ("u", "p")),
    ],
)
def test_vhost_and_credentials_come_decoded_from_the_amqp_url(
    amqp_url: str, vhost: str, credentials: tuple[str, str]
) -> None:
    management = Management("http://rabbit:15672", amqp_url)
    assert (management.vhost, management.credentials) == (vhost, credentials)
