"""shop-api's routes alone: checks on an order placed, its view, models served by SHA-256."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from loupe.orders import OrderSource, OrderStatus
from loupe.shop.app import create_app
from tests.support.service_fakes import NOW, FakeOrders, offline_client

FORM = {
    "customer_name": "Ada",
    "customer_email": "ada@example.com",
    "customer_phone": "+44 20 7946 0000",
    "shipping_address": "1 Ring Road",
}
STL = b"solid ring\nendsolid ring\n"


@pytest.fixture
async def client(tmp_path: Path, orders: FakeOrders) -> AsyncIterator[httpx.AsyncClient]:
    async with offline_client(create_app, tmp_path, orders) as client:
        yield client


async def _place(client: httpx.AsyncClient, model: bytes = STL, **form: str) -> httpx.Response:
    return await client.post(
        "/orders", data=FORM | form, files={"model": ("ring.stl", model, "model/stl")}
    )


@pytest.mark.parametrize(
    ("form", "model", "field"),
    [
        ({"customer_email": "ada at example"}, STL, "customer_email"),
        ({"customer_phone": "call me"}, STL, "customer_phone"),
        ({}, b"", "model"),
    ],
)
async def test_a_refused_order_names_its_field_and_submits_nothing(
    client: httpx.AsyncClient, orders: FakeOrders, form: dict[str, str], model: bytes, field: str
) -> None:
    response = await _place(client, model, **form)
    assert response.status_code == 422
    assert response.json()["detail"]["field"] == field
    assert orders.calls == []


async def test_an_order_is_submitted_with_its_model_stored_and_linked(
    client: httpx.AsyncClient, orders: FakeOrders, tmp_path: Path
) -> None:
    response = await _place(client)
    assert response.status_code == 201
    sha256 = hashlib.sha256(STL).hexdigest()
    ((name, submitted),) = orders.calls
    assert name == "submit" and submitted["source"] is OrderSource.SHOP
    assert submitted["customer_email"] == "ada@example.com"
    assert (submitted["model_sha256"], submitted["model_filename"]) == (sha256, "ring.stl")
    assert submitted["model_url"] == f"http://127.0.0.1:8081/models/{sha256}"
    assert response.json() == {
        "id": "order-1",
        "status": "SUBMITTED",
        "price": None,
        "currency": None,
        "failure_reason": None,
        "created_at": NOW.isoformat(),
        "updated_at": NOW.isoformat(),
    }
    served = await client.get(f"/models/{sha256}")
    assert (served.status_code, served.content) == (200, STL)
    assert served.headers["content-type"] == "model/stl"


async def test_an_order_view_shows_no_personal_data(
    client: httpx.AsyncClient, orders: FakeOrders
) -> None:
    orders.add("o1", OrderStatus.PRICE_CALCULATED, price=Decimal("310.50"), currency="EUR")
    orders.rows["o1"]["customer_email"] = "ada@example.com"
    view = (await client.get("/orders/o1")).json()
    assert (view["status"], view["price"], view["currency"]) == ("PRICE_CALCULATED", 310.5, "EUR")
    assert "customer_email" not in view


async def test_unknown_orders_and_models_are_404(client: httpx.AsyncClient) -> None:
    missing = await client.get("/orders/nope")
    assert (missing.status_code, missing.json()) == (404, {"detail": "order nope does not exist"})
    assert (await client.get(f"/models/{'0' * 64}")).status_code == 404
    assert (await client.get("/models/not-a-digest")).status_code == 404


async def test_a_model_past_the_limit_is_413_and_neither_stored_nor_ordered(
    tmp_path: Path, orders: FakeOrders
) -> None:
    async with offline_client(create_app, tmp_path, orders, max_model_bytes=1000) as client:
        response = await _place(client, b"s" * 200_000)
    assert response.status_code == 413
    assert response.json()["detail"] == {"field": "model", "message": "is larger than 1000 bytes"}
    assert orders.calls == []
    assert _stored(tmp_path) == []


def _stored(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]
