"""The simulated workshop's people (loupe.actors.workshop) against services answering from
memory: what each person asks for, of which service, and what they make of the answers."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from loupe.actors.workshop import OPERATORS, PARTNER, SELLERS, Customer, Workshop
from loupe.config import Settings

SETTINGS = Settings()
SERVICE_AT = {url: name for name, url in SETTINGS.service_urls.items()}


@dataclass
class FakeServices:
    """CRM's work lists by status and MES's operator queue; `refused` paths answer 409 (someone
    else got there first), `failing` services 500. Every request is kept as (service, method,
    path, request)."""

    crm: dict[str, list[str]] = field(default_factory=dict)
    queue: list[dict[str, str]] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)
    seen: list[tuple[str, str, str, httpx.Request]] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        service = SERVICE_AT[f"{request.url.scheme}://{request.url.host}:{request.url.port}"]
        path = request.url.path
        self.seen.append((service, request.method, path, request))
        if service in self.failing:
            return httpx.Response(500, text="down")
        if request.method == "GET" and path == "/orders":
            listed = self.crm.get(request.url.params["status"], [])
            return httpx.Response(200, json=[{"id": i} for i in listed])
        if path == "/operator/queue":
            return httpx.Response(200, json=self.queue)
        if path in self.refused:
            return httpx.Response(409, json={"detail": "already done"})
        return httpx.Response(201 if path.endswith("orders") else 200, json={"id": "new-1"})

    def posts(self) -> list[tuple[str, str]]:
        return [(s, p) for s, method, p, _ in self.seen if method == "POST"]


@pytest.fixture
def services() -> FakeServices:
    return FakeServices()


@pytest.fixture
async def workshop(services: FakeServices) -> AsyncIterator[Workshop]:
    made = Workshop(SETTINGS, seed=7)
    await made.close()  # its own client would reach for the network
    made.client = httpx.AsyncClient(transport=httpx.MockTransport(services.handler))
    yield made
    await made.close()


async def test_a_customer_orders_in_the_shop_with_their_details_and_a_ring(
    workshop: Workshop, services: FakeServices
) -> None:
    assert await workshop.place_order() == "new-1"
    ((service, _, path, request),) = services.seen
    assert (service, path) == ("shop", "/orders")
    (customer,) = workshop.customers
    # Kept so tests can look for exactly this person's data in the spans.
    for detail in (customer.name, customer.email, customer.phone, customer.address):
        assert detail.encode() in request.content
    assert b'filename="ring.stl"' in request.content and b"model/stl" in request.content


@pytest.mark.parametrize(
    ("share", "where"), [(0.0, ("shop", "/orders")), (1.0, ("mes", "/b2b/orders"))]
)
async def test_the_b2b_share_decides_who_orders(
    workshop: Workshop, services: FakeServices, share: float, where: tuple[str, str]
) -> None:
    workshop.b2b_share = share
    for _ in range(5):
        await workshop.new_order()
    assert services.posts() == [where] * 5
    if where[0] == "mes":
        assert f'name="partner_id"\r\n\r\n{PARTNER}'.encode() in services.seen[0][3].content


async def test_a_seller_approves_ships_and_closes_and_counts_only_real_closes(
    workshop: Workshop, services: FakeServices
) -> None:
    services.crm = {
        "PRICE_CALCULATED": ["p"],
        "MANUFACTURING_COMPLETED": ["m"],
        "SHIPPED": ["s", "t"],
    }
    services.refused = {"/orders/t/close"}
    assert await workshop.seller_round() == 1, "the 409 was someone else's close"
    assert services.posts() == [
        ("crm", "/orders/p/approve"),
        ("crm", "/orders/m/ship"),
        ("crm", "/orders/s/close"),
        ("crm", "/orders/t/close"),
    ]
    bodies = [json.loads(r.content) for *_, r in services.seen if r.method == "POST"]
    assert len({b["seller"] for b in bodies}) == 1 and bodies[0]["seller"] in SELLERS
    assert re.fullmatch(r"TRK\d{9}", bodies[1]["tracking_number"])


async def test_an_operator_takes_approved_orders_and_completes_started_ones(
    workshop: Workshop, services: FakeServices
) -> None:
    services.queue = [
        {"id": "a", "status": "MANUFACTURING_APPROVED"},
        {"id": "b", "status": "MANUFACTURING_STARTED"},
    ]
    await workshop.operator_round()
    assert services.posts() == [
        ("mes", "/operator/orders/a/take"),
        ("mes", "/operator/orders/b/complete"),
    ]
    assert json.loads(services.seen[1][3].content)["operator"] in OPERATORS


@pytest.mark.parametrize(("down", "step"), [("shop", "place_order"), ("mes", "operator_round")])
async def test_a_service_that_fails_fails_the_step(
    workshop: Workshop, services: FakeServices, down: str, step: str
) -> None:
    # The loop around each step logs an HTTP error and tries again next time.
    services.failing = {down}
    with pytest.raises(httpx.HTTPStatusError):
        await getattr(workshop, step)()


async def test_one_seed_makes_the_same_people() -> None:
    first, second = Workshop(SETTINGS, seed=3), Workshop(SETTINGS, seed=3)
    try:
        assert Customer.fake(first.faker) == Customer.fake(second.faker)
        assert first.rng.random() == second.rng.random()
    finally:
        await first.close()
        await second.close()
