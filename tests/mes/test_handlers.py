"""mes-api's queue handlers alone: what the intake refuses before touching its database, how
it downloads a model, and which queue may fail an order."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.trace import INVALID_SPAN_CONTEXT

from loupe.mes import handlers
from loupe.mes.pricing import ModelError, PricingLimits
from loupe.messaging import Delivery, PoisonMessage
from loupe.orders import OrderEvent, OrderStatus
from tests.support.service_fakes import FakeKernel, FakeOrders, status_event

MODEL = b"solid ring\nendsolid ring\n"
SHA256 = hashlib.sha256(MODEL).hexdigest()
SHOP = "http://127.0.0.1:8081"
URL = f"{SHOP}/models/{SHA256}"
SOURCES = handlers.model_sources({"shop": SHOP, "mes": "http://127.0.0.1:8083"})


def _intake(
    answer: httpx.Response, requested: list[httpx.Request] | None = None, max_bytes: int = 10_000
) -> handlers.Intake:
    def answering(request: httpx.Request) -> httpx.Response:
        (requested if requested is not None else []).append(request)
        return answer

    http = httpx.AsyncClient(transport=httpx.MockTransport(answering))
    limits = PricingLimits(max_triangles=1000, seconds=5)
    return handlers.Intake(FakeOrders(), http, 0, limits, max_bytes, SOURCES)  # type: ignore[arg-type]


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
    good = status_event("o1", OrderStatus.SUBMITTED, model_url=URL, model_sha256=SHA256)
    assert await _intake(httpx.Response(200, content=MODEL)).fetch_model(good) == MODEL
    b2b = status_event(
        "o2", OrderStatus.SUBMITTED, model_url=f"{SOURCES[1]}{SHA256}", model_sha256=SHA256
    )
    assert await _intake(httpx.Response(200, content=MODEL)).fetch_model(b2b) == MODEL
    tampered = _intake(httpx.Response(200, content=MODEL + b" "))
    with pytest.raises(ModelError, match="does not match its SHA-256"):
        await tampered.fetch_model(good)


async def test_a_failed_download_raises_so_the_consumer_retries() -> None:
    event = status_event("o1", OrderStatus.SUBMITTED, model_url=URL, model_sha256=SHA256)
    with pytest.raises(httpx.HTTPStatusError):
        await _intake(httpx.Response(503)).fetch_model(event)
    # A redirect is not followed anywhere: it fails like any other answer that is not the model.
    moved = httpx.Response(302, headers={"location": "http://169.254.169.254/"})
    with pytest.raises(httpx.HTTPStatusError):
        await _intake(moved).fetch_model(event)


OTHER_SHA256 = hashlib.sha256(b"another model").hexdigest()


@pytest.mark.parametrize(
    ("url", "sha256", "why"),
    [
        ("file:///etc/passwd", SHA256, "not the object store's URL"),
        (f"http://attacker.example/models/{SHA256}", SHA256, "not the object store's URL"),
        (f"http://169.254.169.254/models/{SHA256}", SHA256, "not the object store's URL"),
        (f"{SHOP}/models/../../etc/passwd", SHA256, "not the object store's URL"),
        (f"{SHOP}/models/{SHA256}/../../admin", SHA256, "not the object store's URL"),
        (f"{SHOP}/models/%2e%2e/{SHA256}", SHA256, "not the object store's URL"),
        (f"{SHOP}/models/{OTHER_SHA256}", SHA256, "not the object store's URL"),
        (f"{SHOP}/models/{SHA256}?x=1", SHA256, "not the object store's URL"),
        (f"http://user:pw@127.0.0.1:8081/models/{SHA256}", SHA256, "not the object store's URL"),
        (f"{SHOP}:8081@attacker.example/models/{SHA256}", SHA256, "not the object store's URL"),
        (f"{SHOP}/models/{SHA256}", None, "model_sha256 is missing"),
        (f"{SHOP}/models/../x", "../x", "model_sha256 is missing"),
    ],
)
async def test_a_model_is_fetched_only_from_the_object_store(
    url: str, sha256: str | None, why: str
) -> None:
    event = status_event("o1", OrderStatus.SUBMITTED, model_url=url, model_sha256=sha256)
    requested: list[httpx.Request] = []
    with pytest.raises(ModelError, match=why) as refused:
        await _intake(httpx.Response(200, content=MODEL), requested).fetch_model(event)
    assert requested == []
    # The reason, which reaches spans and the order's row, never repeats the URL.
    assert "attacker" not in str(refused.value) and "pw" not in str(refused.value)


class Chunks:
    """A response body of `count` chunks of `size` bytes, counting how many were read."""

    def __init__(self, count: int, size: int) -> None:
        self.count, self.size, self.read = count, size, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            self.read += 1
            yield b"s" * self.size


async def test_a_model_past_the_size_cap_is_refused_while_it_is_read() -> None:
    event = status_event("o1", OrderStatus.SUBMITTED, model_url=URL, model_sha256=SHA256)
    body = Chunks(count=1000, size=1000)  # 1 MB, sent without a Content-Length
    intake = _intake(httpx.Response(200, content=body), max_bytes=10_000)
    with pytest.raises(ModelError, match="larger than 10000 bytes"):
        await intake.fetch_model(event)
    assert body.read == 11


async def test_a_model_declared_past_the_size_cap_is_refused_before_it_is_read() -> None:
    event = status_event("o1", OrderStatus.SUBMITTED, model_url=URL, model_sha256=SHA256)
    body = Chunks(count=1000, size=1000)
    declared = httpx.Response(200, content=body, headers={"content-length": "1000000"})
    with pytest.raises(ModelError, match="larger than 10000 bytes"):
        await _intake(declared, max_bytes=10_000).fetch_model(event)
    assert body.read == 0


@given(url=st.text(max_size=120) | st.builds(lambda tail: f"{SHOP}/models/{tail}", st.text()))
def test_no_other_text_is_taken_for_the_object_store_s_url(url: str) -> None:
    event = status_event("o1", OrderStatus.SUBMITTED, model_url=url, model_sha256=SHA256)
    intake = _intake(httpx.Response(200))
    if url in (f"{SOURCES[0]}{SHA256}", f"{SOURCES[1]}{SHA256}"):
        assert intake.model_location(event) == url
    else:
        with pytest.raises(ModelError, match="not the object store's URL"):
            intake.model_location(event)
