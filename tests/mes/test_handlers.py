"""mes-api's queue handlers alone: what the intake refuses before touching its database, how
it downloads a model, and which queue may fail an order."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from opentelemetry.trace import INVALID_SPAN_CONTEXT

from loupe.mes import handlers
from loupe.mes.pricing import ModelError
from loupe.messaging import Delivery, PoisonMessage
from loupe.orders import OrderEvent, OrderStatus
from tests.support.service_fakes import FakeKernel, FakeOrders, status_event

MODEL = b"solid ring\nendsolid ring\n"
URL = "http://mes.test/models/abc"


def _intake(answer: httpx.Response) -> handlers.Intake:
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: answer))
    return handlers.Intake(FakeOrders(), http, pricing_seconds=0)  # type: ignore[arg-type]


async def test_only_the_intake_fails_orders_it_cannot_take_in() -> None:
    kernel, orders = FakeKernel(), FakeOrders()
    intake = _intake(httpx.Response(200))
    handlers.subscribe(kernel, orders, intake)  # type: ignore[arg-type]
    assert kernel.dead_letter_hooks() == {
        "mes.order-submitted": orders.fail_order,
        "mes.order-decisions": None,
    }
    event = status_event("o1", OrderStatus.MANUFACTURING_APPROVED)
    await kernel.deliver("mes.order-decisions", event)
    assert orders.calls == [("mirror", {"event": event, "insert_missing": True})]


@pytest.mark.parametrize(
    ("event", "why"),
    [
        (status_event("o1", OrderStatus.PRICE_CALCULATED, model_url=URL), "expected a SUBMITTED"),
        (status_event("o1", OrderStatus.SUBMITTED), "model_url is missing"),
    ],
)
async def test_an_event_the_intake_can_never_price_is_poison(event: OrderEvent, why: str) -> None:
    delivery = Delivery("m1", "mes.order-submitted", "order.submitted", 1, INVALID_SPAN_CONTEXT)
    with pytest.raises(PoisonMessage, match=why):
        await _intake(httpx.Response(200)).price_order(event, delivery)


async def test_a_model_is_checked_against_its_sha256() -> None:
    good = status_event(
        "o1", OrderStatus.SUBMITTED, model_url=URL, model_sha256=hashlib.sha256(MODEL).hexdigest()
    )
    assert await _intake(httpx.Response(200, content=MODEL)).fetch_model(good) == MODEL
    tampered = _intake(httpx.Response(200, content=MODEL + b" "))
    with pytest.raises(ModelError, match="does not match its SHA-256"):
        await tampered.fetch_model(good)


async def test_a_failed_download_raises_so_the_consumer_retries() -> None:
    event = status_event("o1", OrderStatus.SUBMITTED, model_url=URL)
    with pytest.raises(httpx.HTTPStatusError):
        await _intake(httpx.Response(503)).fetch_model(event)
