"""crm-api's routes alone: each seller's decision is the step it names, refusals are 409/404."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from loupe.crm.app import create_app
from loupe.orders import OrderStatus
from tests.support.service_fakes import NOW, FakeOrders, offline_client

S = OrderStatus


@pytest.fixture
async def client(tmp_path: Path, orders: FakeOrders) -> AsyncIterator[httpx.AsyncClient]:
    async with offline_client(create_app, tmp_path, orders) as client:
        yield client


@pytest.mark.parametrize(
    ("action", "status", "body", "step"),
    [
        ("approve", S.PRICE_CALCULATED, {}, {"to": S.MANUFACTURING_APPROVED}),
        (
            "reject",
            S.PRICE_CALCULATED,
            {"reason": "too thin"},
            {"to": S.REJECTED, "rejection_reason": "too thin", "reason": "too thin"},
        ),
        (
            "ship",
            S.MANUFACTURING_COMPLETED,
            {"tracking_number": "TRK-1"},
            {"to": S.SHIPPED, "tracking_number": "TRK-1"},
        ),
        ("close", S.SHIPPED, {}, {"to": S.CLOSED}),
    ],
)
async def test_a_decision_is_a_named_step_by_its_seller(
    client: httpx.AsyncClient,
    orders: FakeOrders,
    action: str,
    status: OrderStatus,
    body: dict[str, str],
    step: dict[str, Any],
) -> None:
    orders.add("o1", status, price=Decimal("120.00"))
    response = await client.post(f"/orders/o1/{action}", json={"seller": "sam", **body})
    assert response.status_code == 200
    ((name, asked),) = orders.calls
    operation = {"approve": "approve manufacturing"}.get(action, f"{action} order")
    assert (name, asked) == ("resume", {"operation": operation, "seller": "sam", **step})
    view = response.json()
    assert (view["status"], view["seller"], view["price"]) == (step["to"].value, "sam", 120.0)
    assert view["updated_at"] == NOW.isoformat()


async def test_refused_decisions(client: httpx.AsyncClient, orders: FakeOrders) -> None:
    orders.add("o1", S.SUBMITTED)
    early = await client.post("/orders/o1/ship", json={"seller": "sam", "tracking_number": "T"})
    assert early.status_code == 409
    assert (early.json()["status"], early.json()["requested"]) == ("SUBMITTED", "SHIPPED")
    missing = await client.post("/orders/nope/approve", json={"seller": "sam"})
    assert (missing.status_code, missing.json()) == (404, {"detail": "order nope does not exist"})
    nameless = await client.post("/orders/o1/approve", json={"seller": ""})
    assert nameless.status_code == 422
    assert orders.rows["o1"]["status"] == "SUBMITTED"


async def test_an_order_reads_as_sellers_see_it(
    client: httpx.AsyncClient, orders: FakeOrders
) -> None:
    orders.add("o1", S.REJECTED, seller="sam", rejection_reason="too thin", last_step_context="x")
    assert (await client.get("/orders/o1")).json() == {
        "id": "o1",
        "source": "shop",
        "status": "REJECTED",
        "price": None,
        "currency": None,
        "seller": "sam",
        "rejection_reason": "too thin",
        "failure_reason": None,
        "tracking_number": None,
        "updated_at": NOW.isoformat(),
    }
