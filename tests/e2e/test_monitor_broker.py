"""End to end: the faults that leave no span, found by the monitor from RabbitMQ itself, on the
real stack with the simulated workshop running. An unroutable publish is reported within 5 s
with its routing key and publisher, and resolves when the message is handled; CRM's consumer
gone (the process frozen and its connection closed, as the broker does when its heartbeats
stop) is a no-consumer finding at `crm.order-status` within 5 s, long before any SLO; the
orders stuck there when their SLOs run out join its incident."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx
import pytest

from loupe.messaging.management import Management
from loupe.messaging.topology import ORDERS_EXCHANGE, UNROUTABLE_QUEUE
from tests.support.integration import admin_amqp_url

from .pipeline_support import wait_for
from .stack_support import SLO_FILE, Monitored, monitored_stack, run_async

pytestmark = pytest.mark.e2e

DETECTION_BOUND = 5.0
# The e2e SLO file's longest deadline: a no-consumer finding must come long before it.
SLO_SECONDS = 20.0
assert f'within = "{SLO_SECONDS:.0f}s"' in SLO_FILE


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    with monitored_stack(tmp_path_factory.mktemp("monitor-broker")) as running:
        yield running


def _open(monitored: Monitored, subject_prefix: str) -> dict[str, Any] | None:
    rows = monitored.query(
        "SELECT * FROM findings WHERE starts_with(subject, $1) AND cleared_at IS NULL",
        subject_prefix,
    )
    return rows[0] if rows else None


def _incident(monitored: Monitored, incident_id: int) -> dict[str, Any]:
    (row,) = monitored.query("SELECT * FROM incidents WHERE id = $1", incident_id)
    return row


def test_an_unroutable_publish_is_reported_at_once_and_resolves_when_handled(
    monitored: Monitored,
) -> None:
    order_id = str(uuid.uuid4())
    body = json.dumps({"order_id": order_id, "status": "SHIPPED"}).encode()

    async def publish() -> None:
        connection = await aio_pika.connect(admin_amqp_url(monitored.settings))
        try:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(ORDERS_EXCHANGE)
            # A partner's typo: a key no queue is bound to (the views take `order.*`).
            message = aio_pika.Message(body, app_id="partner-gateway", timestamp=datetime.now(UTC))
            await exchange.publish(message, routing_key="ordr.shipped")
        finally:
            await connection.close()

    run_async(publish)
    published = time.monotonic()
    finding = wait_for(
        lambda: _open(monitored, "unroutable:"),
        DETECTION_BOUND + 5,
        "the unroutable finding",
        every=0.1,
    )
    took = time.monotonic() - published
    print(f"\nunroutable publish reported after {took:.2f} s")
    assert took <= DETECTION_BOUND
    assert finding["state"] == "unroutable"
    assert (finding["service"], finding["place"], finding["order_id"]) == (
        "partner-gateway",
        "exchange loupe.orders, routing key ordr.shipped",
        order_id,
    )
    assert "routing key ordr.shipped" in finding["evidence"]
    assert "1 message published by partner-gateway" in finding["evidence"]
    # Shown where findings show: the CLI (and so the API it shares models with).
    listed = monitored.cli("stuck", "--state", "unroutable")["findings"]
    assert [(f["service"], f["order_id"]) for f in listed] == [("partner-gateway", order_id)]
    incident_id = finding["incident_id"]
    assert _incident(monitored, incident_id)["resolved_at"] is None

    async def handle() -> None:
        # What a person does once the message is published again with the right key.
        connection = await aio_pika.connect(admin_amqp_url(monitored.settings))
        try:
            channel = await connection.channel()
            queue = await channel.get_queue(UNROUTABLE_QUEUE, ensure=False)
            message = await queue.get(no_ack=False, fail=True, timeout=10)
            assert message is not None and message.body == body
            await message.ack()
        finally:
            await connection.close()

    run_async(handle)
    handled = time.monotonic()
    wait_for(
        lambda: _incident(monitored, incident_id)["resolved_at"] is not None,
        DETECTION_BOUND + 5,
        "the unroutable incident to resolve",
        every=0.1,
    )
    print(f"unroutable incident resolved {time.monotonic() - handled:.2f} s after handling")
    assert _open(monitored, "unroutable:") is None


def _close_connection(monitored: Monitored, connection_name: str) -> None:
    """Closes the named connection of the sandbox's vhost, as the broker does to a peer whose
    heartbeats stopped."""
    # As the administrator: the monitor's own user may not close connections.
    management = Management(monitored.settings.management_url, admin_amqp_url(monitored.settings))
    with httpx.Client(auth=management.credentials, trust_env=False, timeout=10) as client:
        listed = client.get(f"{management.url}/api/connections").json()
        names = [
            c["name"]
            for c in listed
            if c.get("vhost") == management.vhost
            and (c.get("client_properties") or {}).get("connection_name") == connection_name
        ]
        assert names, f"no connection {connection_name!r} in {management.vhost}"
        for name in names:
            response = client.delete(
                f"{management.url}/api/connections/{name}", headers={"X-Reason": "e2e test"}
            )
            assert response.status_code == 204, response.text


def test_crms_consumer_gone_is_found_at_its_queue_long_before_any_slo(
    monitored: Monitored,
) -> None:
    assert _open(monitored, "queue:") is None
    monitored.stack.signal_process("crm", signal.SIGSTOP)
    try:
        _close_connection(monitored, "crm-api consume")
        gone = time.monotonic()
        # The workshop keeps publishing status events, which wait in crm.order-status.
        finding = wait_for(
            lambda: _open(monitored, "queue:crm.order-status"),
            DETECTION_BOUND + 5,
            "the no-consumer finding",
            every=0.1,
        )
        took = time.monotonic() - gone
        print(f"\nno-consumer finding at crm.order-status after {took:.2f} s")
        assert took <= DETECTION_BOUND < SLO_SECONDS
        assert (finding["state"], finding["service"], finding["place"]) == (
            "stuck",
            "crm-api",
            "queue crm.order-status",
        )
        assert finding["order_id"] is None
        assert "0 consumers" in finding["evidence"]
        (incident,) = [
            i
            for i in monitored.cli("incidents", "--status", "open")["incidents"]
            if i["id"] == finding["incident_id"]
        ]
        assert (incident["state"], incident["service"], incident["where"]) == (
            "stuck",
            "crm-api",
            "queue crm.order-status",
        )
        assert incident["time_to_detect_seconds"] <= DETECTION_BOUND

        # The orders waiting there meanwhile run out of SLO: stuck at the same place, in the
        # same incident, which was detected long before them.
        def stuck_order() -> dict[str, Any] | None:
            rows = monitored.query(
                "SELECT * FROM findings WHERE cleared_at IS NULL AND order_id IS NOT NULL"
                " AND state = 'stuck' AND place = 'queue crm.order-status'"
            )
            return rows[0] if rows else None

        order = wait_for(stuck_order, SLO_SECONDS + 15, "an order stuck at crm.order-status")
        assert order["incident_id"] == finding["incident_id"]
        assert order["detected_at"] > finding["detected_at"]
    finally:
        monitored.stack.signal_process("crm", signal.SIGCONT)
    resumed = time.monotonic()
    # CRM's connection finds itself closed and connects again; its consumer takes the backlog,
    # and the finding clears. The incident resolves once the orders stuck meanwhile move on.
    wait_for(
        lambda: _open(monitored, "queue:crm.order-status") is None,
        60,
        "the no-consumer finding to clear",
        every=0.2,
    )
    print(f"no-consumer finding cleared {time.monotonic() - resumed:.2f} s after SIGCONT")
    wait_for(
        lambda: _incident(monitored, finding["incident_id"])["resolved_at"] is not None,
        120,
        "the no-consumer incident to resolve",
        every=1,
    )
    print(f"its incident resolved {time.monotonic() - resumed:.2f} s after SIGCONT")
