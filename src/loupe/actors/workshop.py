"""The people of the workshop, as HTTP clients of shop-api, crm-api and mes-api.

Customers carry realistic personal data (Faker), so the tests can prove none of it reaches a
span. Sellers and operators poll their work lists the way the CRM and MES front ends do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from dataclasses import dataclass, field
from typing import Any

import httpx
from faker import Faker

from loupe.actors.models import random_ring
from loupe.config import Settings

log = logging.getLogger("loupe.actors")

SELLERS = ("anna.seller", "boris.seller")
OPERATORS = ("olga.operator", "pavel.operator", "ivan.operator")
PARTNER = "goldsmiths-b2b"


@dataclass
class Customer:
    name: str
    email: str
    phone: str
    address: str

    @classmethod
    def fake(cls, faker: Faker) -> Customer:
        return cls(
            name=faker.name(),
            email=faker.email(),
            phone=faker.phone_number(),
            address=faker.address().replace("\n", ", "),
        )


@dataclass
class Workshop:
    """One instance drives the whole cast; each method is one person's single action."""

    settings: Settings
    seed: int | None = None
    b2b_share: float = 0.2
    client: httpx.AsyncClient = field(init=False)
    customers: list[Customer] = field(default_factory=list)
    rng: random.Random = field(init=False)
    faker: Faker = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.faker = Faker()
        if self.seed is not None:
            self.faker.seed_instance(self.seed)
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(15.0))

    def url(self, service: str, path: str) -> str:
        return self.settings.service_urls[service] + path

    async def close(self) -> None:
        await self.client.aclose()

    async def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = await self.client.request(method, url, **kwargs)
        if response.status_code >= 400 and response.status_code != 409:
            log.warning(
                "%s %s answered %d: %s", method, url, response.status_code, response.text[:300]
            )
        return response

    async def place_order(self) -> str:
        """A customer uploads a ring model and places an order in the shop."""
        customer = Customer.fake(self.faker)
        self.customers.append(customer)
        response = await self._call(
            "POST",
            self.url("shop", "/orders"),
            data={
                "customer_name": customer.name,
                "customer_email": customer.email,
                "customer_phone": customer.phone,
                "shipping_address": customer.address,
            },
            files={"model": ("ring.stl", random_ring(self.rng), "model/stl")},
        )
        response.raise_for_status()
        return str(response.json()["id"])

    async def place_b2b_order(self) -> str:
        """The B2B partner submits an order straight into MES."""
        response = await self._call(
            "POST",
            self.url("mes", "/b2b/orders"),
            data={"partner_id": PARTNER, "partner_reference": f"PO-{self.rng.randrange(10**6)}"},
            files={"model": ("ring.stl", random_ring(self.rng), "model/stl")},
        )
        response.raise_for_status()
        return str(response.json()["id"])

    async def new_order(self) -> str:
        if self.rng.random() < self.b2b_share:
            return await self.place_b2b_order()
        return await self.place_order()

    async def _orders(self, status: str) -> list[dict[str, Any]]:
        response = await self._call("GET", self.url("crm", "/orders"), params={"status": status})
        response.raise_for_status()
        return list(response.json())

    async def seller_round(self) -> int:
        """A seller works through the CRM: approve priced orders, ship made ones, close shipped.

        Returns how many orders were closed in this round.
        """
        seller = self.rng.choice(SELLERS)
        for order in await self._orders("PRICE_CALCULATED"):
            await self._call(
                "POST", self.url("crm", f"/orders/{order['id']}/approve"), json={"seller": seller}
            )
        for order in await self._orders("MANUFACTURING_COMPLETED"):
            await self._call(
                "POST",
                self.url("crm", f"/orders/{order['id']}/ship"),
                json={"seller": seller, "tracking_number": f"TRK{self.rng.randrange(10**9):09d}"},
            )
        closed = 0
        for order in await self._orders("SHIPPED"):
            response = await self._call(
                "POST", self.url("crm", f"/orders/{order['id']}/close"), json={"seller": seller}
            )
            closed += response.status_code == 200
        return closed

    async def operator_round(self) -> None:
        """An operator takes approved orders and completes the ones in progress."""
        response = await self._call("GET", self.url("mes", "/operator/queue"))
        response.raise_for_status()
        operator = self.rng.choice(OPERATORS)
        for order in response.json():
            action = "take" if order["status"] == "MANUFACTURING_APPROVED" else "complete"
            await self._call(
                "POST",
                self.url("mes", f"/operator/orders/{order['id']}/{action}"),
                json={"operator": operator},
            )


async def _every(seconds: float, action: Any, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await action()
        except httpx.HTTPError as exc:
            log.warning("actor step failed: %s: %s", type(exc).__name__, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)


async def simulate(settings: Settings, rate: float, orders: int, poll_seconds: float = 0.5) -> int:
    """Run the cast until stopped (or until `orders` orders are closed); returns orders closed."""
    workshop = Workshop(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    closed = 0

    async def sellers() -> None:
        nonlocal closed
        closed += await workshop.seller_round()
        if orders and closed >= orders:
            stop.set()

    async def customers() -> None:
        order_id = await workshop.new_order()
        log.info("new order %s", order_id, extra={"order_id": order_id})

    tasks = [
        asyncio.create_task(_every(poll_seconds, sellers, stop)),
        asyncio.create_task(_every(poll_seconds, workshop.operator_round, stop)),
    ]
    if rate > 0:
        tasks.append(asyncio.create_task(_every(1.0 / rate, customers, stop)))
    log.info("actors running: %.2f new orders per second", rate)
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await workshop.close()
    log.info("actors stopped; %d orders closed", closed)
    return closed


def run_actors(rate: float, orders: int = 0) -> None:
    from loupe.telemetry.logs import configure_logging

    configure_logging("loupe-actors")
    asyncio.run(simulate(Settings.from_env(), rate, orders))
