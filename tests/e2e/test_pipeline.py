"""End to end: orders flow through the real services and RabbitMQ, and Jaeger tells the story.

The tests share one running pipeline and build on each other in file order: the first drives
orders through the whole lifecycle, the rest read what that left in Jaeger.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx
import pytest

from loupe.actors import Workshop
from loupe.actors.models import random_ring
from loupe.orders import OrderStatus
from loupe.orders.lifecycle import HAPPY_PATH
from tests.support.integration import admin_amqp_url

from .pipeline_support import Pipeline, wait_for, wait_for_async

pytestmark = pytest.mark.e2e

RESUMED_STEPS = (
    "approve manufacturing",
    "take order",
    "complete order",
    "ship order",
    "close order",
)
SHOP_ORDERS = 3
B2B_ORDERS = 1


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span["tags"]}


def service_of(trace: dict[str, Any], span: dict[str, Any]) -> str:
    return str(trace["processes"][span["processID"]]["serviceName"])


def parent_id(span: dict[str, Any]) -> str | None:
    for reference in span["references"]:
        if reference["refType"] == "CHILD_OF":
            return str(reference["spanID"])
    return None


async def crm_status(workshop: Workshop, order_id: str) -> str | None:
    response = await workshop.client.get(workshop.url("crm", f"/orders/{order_id}"))
    return str(response.json()["status"]) if response.status_code == 200 else None


async def drive_until_closed(workshop: Workshop, order_ids: list[str], seconds: float) -> None:
    async def all_closed() -> bool:
        await workshop.seller_round()
        await workshop.operator_round()
        statuses = [await crm_status(workshop, order_id) for order_id in order_ids]
        return all(status == OrderStatus.CLOSED for status in statuses)

    await wait_for_async(all_closed, seconds, f"orders {order_ids} to be CLOSED")


async def test_orders_go_through_the_whole_lifecycle(pipeline: Pipeline) -> None:
    workshop = Workshop(pipeline.settings, seed=7)
    try:
        shop = [await workshop.place_order() for _ in range(SHOP_ORDERS)]
        b2b = [await workshop.place_b2b_order() for _ in range(B2B_ORDERS)]
        await drive_until_closed(workshop, shop + b2b, seconds=90)
        for order_id in shop:
            response = await workshop.client.get(workshop.url("shop", f"/orders/{order_id}"))
            assert response.json()["status"] == "CLOSED", "the shop's view must follow CRM"
    finally:
        await workshop.close()
    pipeline.orders["shop"] = shop
    pipeline.orders["b2b"] = b2b
    pipeline.customers.extend(workshop.customers)


def test_all_three_services_report_spans(pipeline: Pipeline) -> None:
    services = wait_for(
        lambda: {"shop-api", "crm-api", "mes-api"} <= set(pipeline.jaeger_get("/api/services")),
        30,
        "the three services in Jaeger",
    )
    assert services


# The spans of the steps people take later, each the root of a trace of its own.
PEOPLE_STEPS = (
    "approve manufacturing",
    "take order",
    "complete order",
    "ship order",
    "close order",
)


def _journey(pipeline: Pipeline, order_id: str) -> dict[str, dict[str, Any]]:
    """The order's traces once Jaeger has them all: every status reached, and every person's
    step (a service's copy of a move can be stored before the step that made it, since each
    service exports on its own)."""

    def complete() -> dict[str, dict[str, Any]] | None:
        traces = pipeline.traces_for_order(order_id)
        spans = [span for trace in traces.values() for span in trace["spans"]]
        reached = {
            tags(span).get("order.status.to")
            for span in spans
            if tags(span).get("order.id") == order_id
        }
        steps = {span["operationName"] for span in spans} & set(PEOPLE_STEPS)
        done = {s.value for s in HAPPY_PATH} <= reached and len(steps) == len(PEOPLE_STEPS)
        return traces if done else None

    return wait_for(complete, 30, f"the whole journey of {order_id} in Jaeger")  # type: ignore[no-any-return]


def test_search_by_order_id_finds_the_whole_journey(pipeline: Pipeline) -> None:
    for order_id in pipeline.orders["shop"] + pipeline.orders["b2b"]:
        traces = _journey(pipeline, order_id)
        transitions = [
            tags(span)
            for trace in traces.values()
            for span in trace["spans"]
            if tags(span).get("order.id") == order_id and "order.status.to" in tags(span)
        ]
        assert {t["order.status.to"] for t in transitions} >= {s.value for s in HAPPY_PATH}
        for transition in transitions:
            assert transition["order.source"] in ("shop", "b2b")
            assert "order.status.from" in transition
        sources = {t["order.source"] for t in transitions}
        expected = "b2b" if order_id in pipeline.orders["b2b"] else "shop"
        assert sources == {expected}
        # People resume the work later: each such step is a trace of its own, linked back.
        assert len(traces) >= 5, f"expected separate traces for people's steps, got {len(traces)}"
        resumed = [
            span
            for trace in traces.values()
            for span in trace["spans"]
            if span["operationName"] in PEOPLE_STEPS
        ]
        assert len(resumed) == len(PEOPLE_STEPS)
        for span in resumed:
            links = [r for r in span["references"] if r["refType"] == "FOLLOWS_FROM"]
            assert links, f"{span['operationName']} has no link to the step before"
            assert links[0]["traceID"] != span["traceID"]
            assert links[0]["traceID"] in traces, "the link must lead to another trace of the order"


def test_consumer_spans_are_children_of_producer_spans(pipeline: Pipeline) -> None:
    consumers_seen = 0
    fanouts = 0
    for order_id in pipeline.orders["shop"]:
        for trace in _journey(pipeline, order_id).values():
            spans = {span["spanID"]: span for span in trace["spans"]}
            children: dict[str, set[str]] = defaultdict(set)
            for span in trace["spans"]:
                if tags(span).get("span.kind") != "consumer":
                    continue
                consumers_seen += 1
                parent = spans.get(parent_id(span) or "")
                assert parent is not None, f"consumer span {span['operationName']} lost its parent"
                assert tags(parent)["span.kind"] == "producer"
                assert tags(parent)["messaging.system"] == "rabbitmq"
                assert tags(span)["messaging.message.id"] == tags(parent)["messaging.message.id"]
                children[parent["spanID"]].add(service_of(trace, span))
            for producer_id, services in children.items():
                key = tags(spans[producer_id]).get("messaging.rabbitmq.destination.routing_key")
                if key == "order.price_calculated":
                    # The topic fans out: CRM and the shop both consume the same event.
                    assert {"crm-api", "shop-api"} <= services
                    fanouts += 1
    assert consumers_seen > 0
    assert fanouts == SHOP_ORDERS


async def test_an_untrusted_traceparent_with_sampling_off_is_still_traced(
    pipeline: Pipeline,
) -> None:
    """A customer's request carries a traceparent saying "not sampled", naming a trace of
    someone else's: the shop starts a new trace anyway, linked to it, and the order is traced
    from there on, MES's pricing included."""
    caller_trace, caller_span = f"{random.getrandbits(128):032x}", f"{random.getrandbits(64):016x}"
    async with httpx.AsyncClient(timeout=15) as client:
        response = await client.post(
            f"{pipeline.settings.service_urls['shop']}/orders",
            headers={"traceparent": f"00-{caller_trace}-{caller_span}-00"},
            data={
                "customer_name": "Edge Case",
                "customer_email": "edge@example.com",
                "customer_phone": "+1 555 0100 200",
                "shipping_address": "1 Boundary Road",
            },
            files={"model": ("ring.stl", random_ring(random.Random(11)), "model/stl")},
        )
    assert response.status_code == 201, response.text
    order_id = response.json()["id"]

    def submission() -> dict[str, Any] | None:
        for trace in pipeline.traces_for_order(order_id).values():
            names = {(service_of(trace, s), s["operationName"]) for s in trace["spans"]}
            if {("shop-api", "POST /orders"), ("mes-api", "price order")} <= names:
                return trace
        return None

    trace = wait_for(submission, 30, f"the submission of {order_id}, priced, in one trace")
    assert trace["traceID"] != caller_trace
    [server] = [s for s in trace["spans"] if s["operationName"] == "POST /orders"]
    assert parent_id(server) is None
    links = [r for r in server["references"] if r["refType"] == "FOLLOWS_FROM"]
    assert [(r["traceID"], r["spanID"]) for r in links] == [(caller_trace, caller_span)]
    assert tags(server)["loupe.trace_context.note"].startswith("the caller is not a trusted")


def test_no_personal_data_reaches_jaeger(pipeline: Pipeline) -> None:
    assert pipeline.customers, "the lifecycle test must have run first"
    stored = json.dumps(pipeline.all_traces())
    assert '"order.id"' in stored
    for customer in pipeline.customers:
        for value in (customer.name, customer.email, customer.phone, customer.address):
            assert value not in stored, "personal data found in a stored span"
        local_part = customer.email.split("@")[0]
        assert f"{local_part}@" not in stored


async def _publish(pipeline: Pipeline, body: bytes, key: str, message_id: str) -> None:
    connection = await aio_pika.connect(admin_amqp_url(pipeline.settings))
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("loupe.orders")
        await exchange.publish(
            aio_pika.Message(body, message_id=message_id, content_type="application/json"),
            routing_key=key,
            mandatory=True,
        )


async def _dead_letters(pipeline: Pipeline) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(admin_amqp_url(pipeline.settings))
    messages = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue("loupe.dead-letter")
        # Held unacked, so each letter is handed over once (a letter put back goes to the head
        # of a queue with a delivery limit); closing the connection puts them all back.
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            messages.append(message)
            if len(messages) > 100:
                break
    return messages


async def test_poison_message_is_dead_lettered_and_its_order_fails(pipeline: Pipeline) -> None:
    order_id = str(uuid.uuid4())
    body = json.dumps(
        {
            "order_id": order_id,
            "status": "SUBMITTED",
            "source": "fax",  # not a source the workshop has
            "occurred_at": datetime.now(UTC).isoformat(),
        }
    ).encode()
    await _publish(pipeline, body, "order.submitted", str(uuid.uuid4()))

    # Every queue bound to order.submitted got its own copy; each consumer dead-letters its own.
    async def dead_lettered() -> dict[str, dict[str, Any]] | None:
        by_queue = {}
        for message in await _dead_letters(pipeline):
            headers = dict(message.headers or {})
            if headers.get("x-loupe-order-id") == order_id:
                by_queue[str(headers["x-loupe-queue"])] = headers
        return by_queue if "mes.order-submitted" in by_queue else None

    by_queue = await wait_for_async(dead_lettered, 30, "the poison message in loupe.dead-letter")
    headers = by_queue["mes.order-submitted"]
    assert "field source" in str(headers["x-loupe-reason"])
    assert headers["x-loupe-service"] == "mes-api"
    assert headers["x-loupe-attempt"] == 1, "a poison message is not retried"

    async with httpx.AsyncClient() as client:

        async def failed() -> dict[str, Any] | None:
            response = await client.get(
                f"{pipeline.settings.service_urls['crm']}/orders/{order_id}"
            )
            if response.status_code == 200 and response.json()["status"] == "FAILED":
                return dict(response.json())
            return None

        order = await wait_for_async(failed, 30, "CRM to see the poisoned order FAILED")
    assert "poison message" in order["failure_reason"]


async def test_redelivered_message_is_not_applied_twice(pipeline: Pipeline) -> None:
    # A SUBMITTED event for a fresh order, sent twice with one message id: a redelivery. It
    # reuses a model the shop already stores.
    order_id = str(uuid.uuid4())
    shop_url = pipeline.settings.service_urls["shop"]
    sha = _model_sha(pipeline, pipeline.orders["shop"][0])
    body = json.dumps(
        {
            "order_id": order_id,
            "status": "SUBMITTED",
            "source": "shop",
            "occurred_at": datetime.now(UTC).isoformat(),
            "model_sha256": sha,
            "model_url": f"{shop_url}/models/{sha}",
        }
    ).encode()
    message_id = str(uuid.uuid4())
    await _publish(pipeline, body, "order.submitted", message_id)
    await _publish(pipeline, body, "order.submitted", message_id)

    def both_processed() -> list[dict[str, Any]] | None:
        spans = [
            span
            for trace in pipeline.traces_for_order(order_id).values()
            for span in trace["spans"]
            if tags(span).get("messaging.destination.subscription.name") == "mes.order-submitted"
            and tags(span).get("messaging.message.id") == message_id
        ]
        return spans if len(spans) == 2 else None

    consumed = wait_for(both_processed, 30, "both deliveries in Jaeger")
    applied = [s for s in consumed if tags(s).get("order.status.to") == "PRICE_CALCULATED"]
    assert len(applied) == 1, "the transition must be applied exactly once"
    skipped = [s for s in consumed if s is not applied[0]]
    assert tags(skipped[0]).get("loupe.messaging.duplicate") is True or any(
        event["fields"][0]["value"] == "order already priced; nothing to do"
        for event in skipped[0]["logs"]
    ), "the second delivery must say why it did nothing"
    published = [
        span
        for trace in pipeline.traces_for_order(order_id).values()
        for span in trace["spans"]
        if tags(span).get("messaging.rabbitmq.destination.routing_key") == "order.price_calculated"
        and tags(span).get("span.kind") == "producer"
    ]
    assert len(published) == 1, "the price must be announced once"


def _model_sha(pipeline: Pipeline, order_id: str) -> str:
    """The model's SHA-256, as MES's download of it shows in the order's trace."""
    traces = pipeline.traces_for_order(order_id)
    for trace in traces.values():
        for span in trace["spans"]:
            path = tags(span).get("url.path", "")
            if path.startswith("/models/"):
                return str(path.removeprefix("/models/"))
    raise AssertionError("no model download seen for the order")


async def test_orders_keep_flowing_with_jaeger_stopped(pipeline: Pipeline) -> None:
    pipeline.stack.stop_process("jaeger")
    workshop = Workshop(pipeline.settings, seed=13)
    try:
        order_id = await workshop.place_order()
        await drive_until_closed(workshop, [order_id], seconds=90)
        response = await workshop.client.get(workshop.url("shop", f"/orders/{order_id}"))
        assert response.json()["status"] == "CLOSED"
    finally:
        await workshop.close()
        pipeline.stack.start_process("jaeger")


async def test_bad_requests_get_clear_errors_and_refusals_are_not_transitions(
    pipeline: Pipeline,
) -> None:
    closed = pipeline.orders["shop"][0]
    urls = pipeline.settings.service_urls
    async with httpx.AsyncClient() as client:
        refused = await client.post(
            f"{urls['crm']}/orders/{closed}/approve", json={"seller": "anna.seller"}
        )
        assert refused.status_code == 409
        assert "CLOSED" in refused.json()["detail"]
        assert "MANUFACTURING_APPROVED" in refused.json()["detail"]

        missing_field = await client.post(f"{urls['crm']}/orders/{closed}/approve", json={})
        assert missing_field.status_code == 422
        assert "seller" in missing_field.text

        bad_email = await client.post(
            f"{urls['shop']}/orders",
            data={
                "customer_name": "A",
                "customer_email": "not-an-address",
                "customer_phone": "+1 555 0100 200",
                "shipping_address": "1 Main St",
            },
            files={"model": ("ring.stl", b"solid x\nendsolid x\n", "model/stl")},
        )
        assert bad_email.status_code == 422
        assert bad_email.json()["detail"]["field"] == "customer_email"

        unknown = await client.get(f"{urls['mes']}/orders/{uuid.uuid4()}")
        assert unknown.status_code == 404

    def refusal_span() -> dict[str, Any] | None:
        for trace in pipeline.traces_for_order(closed).values():
            for span in trace["spans"]:
                if span["operationName"] == "approve manufacturing" and tags(span).get(
                    "error.type"
                ):
                    return span
        return None

    span = wait_for(refusal_span, 30, "the refused approval in Jaeger")
    assert tags(span)["error.type"] == "IllegalTransition"
    assert "order.status.to" not in tags(span), "a refused step must not look like a move"


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8000", "127.0.0.2"])
def test_the_real_services_refuse_a_host_they_do_not_know(pipeline: Pipeline, host: str) -> None:
    # DNS rebinding: a page whose name now points at 127.0.0.1 calls the services as itself.
    for service, url in pipeline.settings.service_urls.items():
        refused = httpx.get(f"{url}/healthz", headers={"Host": host}, timeout=10)
        assert refused.status_code == 400, (service, refused.text)
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200, service
