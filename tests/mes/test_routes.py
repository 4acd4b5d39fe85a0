"""mes-api's routes alone: a B2B order taken in with its model, operators' steps, refusals."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from loupe.mes.app import create_app
from loupe.orders import OrderSource, OrderStatus
from tests.support.service_fakes import FakeOrders, offline_client

STL = b"solid ring\nendsolid ring\n"


@pytest.fixture
async def client(tmp_path: Path, orders: FakeOrders) -> AsyncIterator[httpx.AsyncClient]:
    async with offline_client(create_app, tmp_path, orders) as client:
        yield client


async def test_a_b2b_order_is_submitted_with_its_model_served_by_mes(
    client: httpx.AsyncClient, orders: FakeOrders
) -> None:
    response = await client.post(
        "/b2b/orders",
        data={"partner_id": "acme", "partner_reference": "PO-7"},
        files={"model": ("ring.stl", STL, "model/stl")},
    )
    assert response.status_code == 201
    sha256 = hashlib.sha256(STL).hexdigest()
    url = f"http://127.0.0.1:8083/models/{sha256}"
    assert orders.calls == [
        (
            "submit",
            {
                "source": OrderSource.B2B,
                "partner_id": "acme",
                "partner_reference": "PO-7",
                "model_sha256": sha256,
                "model_url": url,
            },
        )
    ]
    view = response.json()
    assert (view["status"], view["source"], view["partner_id"]) == ("SUBMITTED", "b2b", "acme")
    assert (await client.get(f"/models/{sha256}")).content == STL


async def test_an_empty_model_is_refused(client: httpx.AsyncClient, orders: FakeOrders) -> None:
    response = await client.post(
        "/b2b/orders",
        data={"partner_id": "acme", "partner_reference": "PO-7"},
        files={"model": ("ring.stl", b"", "model/stl")},
    )
    assert (response.status_code, response.json()["detail"]["field"]) == (422, "model")
    assert orders.calls == []


async def test_operators_take_then_complete_an_order(
    client: httpx.AsyncClient, orders: FakeOrders
) -> None:
    orders.add("o1", OrderStatus.MANUFACTURING_APPROVED, volume_mm3=812.5)
    taken = await client.post("/operator/orders/o1/take", json={"operator": "olga"})
    assert (taken.json()["status"], taken.json()["operator"]) == ("MANUFACTURING_STARTED", "olga")
    early = await client.post("/operator/orders/o1/take", json={"operator": "olga"})
    assert early.status_code == 409
    done = await client.post("/operator/orders/o1/complete", json={"operator": "olga"})
    assert (done.json()["status"], done.json()["volume_mm3"]) == ("MANUFACTURING_COMPLETED", 812.5)
    steps = [(asked["operation"], asked["to"]) for name, asked in orders.calls]
    assert steps == [
        ("take order", OrderStatus.MANUFACTURING_STARTED),
        ("take order", OrderStatus.MANUFACTURING_STARTED),
        ("complete order", OrderStatus.MANUFACTURING_COMPLETED),
    ]
    missing = await client.get("/orders/nope")
    assert missing.status_code == 404
