"""What the broker's view calls for (broker.conditions), and how a message is read from a look
at its queue (Peeked): pure, no broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from loupe.messaging.consumer import ORDER_HEADER
from loupe.messaging.management import Peeked
from loupe.monitor.broker import (
    DEAD_LETTERED,
    UNCONSUMED,
    UNKNOWN_APP,
    UNROUTABLE,
    BrokerView,
    QueueLevel,
    conditions,
)
from loupe.monitor.models import FindingKind

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _item(
    key: str, app: str | None, body: object, stamp: int | None = None, **headers: object
) -> dict[str, object]:
    properties: dict[str, object] = {"headers": headers, "message_id": "m"}
    if app:
        properties["app_id"] = app
    if stamp is not None:
        properties["timestamp"] = stamp
    return {
        "exchange": "loupe.orders",
        "routing_key": key,
        "properties": properties,
        "payload": json.dumps(body) if not isinstance(body, str) else body,
        "payload_encoding": "string",
    }


def test_a_peeked_message_names_its_publisher_time_and_order() -> None:
    stamp = int(T0.timestamp())
    peeked = Peeked.of(_item("order.shiped", "partner-gw", {"order_id": "o-1"}, stamp))
    assert (peeked.exchange, peeked.routing_key, peeked.app_id) == (
        "loupe.orders",
        "order.shiped",
        "partner-gw",
    )
    assert peeked.published_at == T0 and peeked.order_id == "o-1"
    # loupe's header names the order of a copy it re-sent; a body that is not JSON names none.
    assert Peeked.of(_item("k", None, "not json", **{ORDER_HEADER: "o-2"})).order_id == "o-2"
    unnamed = Peeked.of(_item("k", None, "not json"))
    assert unnamed.order_id is None and unnamed.app_id is None and unnamed.published_at is None
    # A binary payload (base64 in the look) is not read for an order.
    binary = {**_item("k", None, {"order_id": "o-3"}), "payload_encoding": "base64"}
    assert Peeked.of(binary).order_id is None


def test_unroutable_messages_are_one_finding_per_app_key_and_order() -> None:
    stamp = int(T0.timestamp())
    peeked = tuple(
        Peeked.of(item)
        for item in (
            _item("order.shiped", "partner-gw", {"order_id": "o-1"}, stamp + 5),
            _item("order.shiped", "partner-gw", {"order_id": "o-1"}, stamp),
            _item("order.shiped", "partner-gw", {"order_id": "o-2"}),
            _item("order.typo", None, "garbage"),
        )
    )
    found = {c.subject: c for c in conditions(BrokerView((), 4, peeked))}
    assert len(found) == 3
    first = found[f"{UNROUTABLE}loupe.orders|order.shiped|partner-gw|o-1"]
    assert first.state == FindingKind.UNROUTABLE
    assert (first.service, first.place, first.order_id) == (
        "partner-gw",
        "exchange loupe.orders, routing key order.shiped",
        "o-1",
    )
    assert first.evidence.startswith(
        "2 messages published by partner-gw to exchange loupe.orders with routing key"
        " order.shiped, about order o-1: no queue is bound to it"
    )
    # The oldest message's publishing time.
    assert first.since == T0
    assert found[f"{UNROUTABLE}loupe.orders|order.shiped|partner-gw|o-2"].since is None
    anonymous = found[f"{UNROUTABLE}loupe.orders|order.typo|{UNKNOWN_APP}|"]
    assert anonymous.service == UNKNOWN_APP and anonymous.order_id is None
    assert anonymous.evidence.startswith(f"1 message published by {UNKNOWN_APP}")


def test_unroutable_messages_not_read_are_counted_under_the_queue() -> None:
    peeked = (Peeked.of(_item("order.x", "a", {})),)
    (read, unread) = conditions(BrokerView((), 3, peeked))
    assert read.subject.startswith(UNROUTABLE) and read.order_id is None
    assert unread.place == "queue loupe.unroutable"
    assert unread.evidence.startswith("2 more messages no queue is bound for")
    assert conditions(BrokerView((), 0, ())) == []


def test_a_work_queue_with_messages_and_no_consumer_is_stuck_at_its_place() -> None:
    view = BrokerView(
        (
            QueueLevel("crm.order-status", 4, 0),
            QueueLevel("mes.order-submitted", 9, 1),  # consumed: a backlog, not a finding
            QueueLevel("shop.order-status", 0, 0),  # nobody there, but nothing waits
            QueueLevel("someone.elses-queue", 5, 0),  # not loupe's
        ),
        0,
        (),
    )
    (found,) = conditions(view)
    assert found.subject == f"{UNCONSUMED}crm.order-status"
    assert found.state == FindingKind.STUCK
    # The place stuck orders of the step wait at (slo.Step.where), so they share an incident.
    assert (found.service, found.place) == ("crm-api", "queue crm.order-status")
    assert found.order_id is None and found.since is None
    assert found.evidence.startswith("queue crm.order-status: 4 ready, 0 consumers")


def test_messages_rabbitmq_dead_lettered_itself_are_broken_at_their_queue() -> None:
    died = int(T0.timestamp())
    broker_made = {
        "x-first-death-queue": "mes.order-submitted",
        "x-first-death-reason": "delivery_limit",
        "x-death": [{"queue": "mes.order-submitted", "reason": "delivery_limit", "time": died}],
    }
    letter = _item("order.submitted", "shop-api", {"order_id": "o-1"}, **broker_made)
    # loupe's consumer dead-letters with its own headers and no x-death: its span says so.
    ours = _item("order.submitted", "shop-api", {"order_id": "o-2"}, **{ORDER_HEADER: "o-2"})
    view = BrokerView((), 0, (), dead_letters=(Peeked.of(letter), Peeked.of(ours)))
    (found,) = conditions(view)
    assert found.subject == f"{DEAD_LETTERED}mes.order-submitted|delivery_limit|o-1"
    assert found.state == FindingKind.BROKEN
    assert (found.service, found.place, found.order_id) == (
        "mes-api",
        "queue mes.order-submitted",
        "o-1",
    )
    assert found.since == T0
    assert found.evidence.startswith(
        "1 message dead-lettered by RabbitMQ from mes.order-submitted, about order o-1"
        " (delivered past the queue's delivery limit without an ack: mes-api fails on it"
    )
