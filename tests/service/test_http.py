"""A service's HTTP side alone: /healthz reports the kernel's health, refused steps answer
409/404, the kernel lives as long as the app, and order rows become the API's views."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import APIRouter, FastAPI
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from loupe.config import Settings
from loupe.database import RETRY_AFTER_SECONDS
from loupe.orders import OrderStatus
from loupe.service.http import (
    Orders,
    ServiceSettings,
    create_app,
    field_error,
    order_view,
)
from loupe.service.kernel import ServiceKernel
from loupe.stack.process import Process, free_port
from loupe.telemetry.delivery import SPANS_EXPORTED, SPANS_EXPORTED_METRIC, Exported, Kind
from tests.support.service_fakes import FakeOrders


class View(BaseModel):
    id: str
    status: str
    price: float | None = None
    created_at: str | None = None


router = APIRouter()


@router.get("/orders/{order_id}")
async def show(order_id: str, orders: Orders) -> View:
    return order_view(View, await orders.row(order_id))


@router.post("/orders/{order_id}/close")
async def close(order_id: str, orders: Orders) -> View:
    return order_view(View, await orders.resume(order_id, OrderStatus.CLOSED, "close", updates={}))


@router.get("/data-dir")
async def data_dir(settings: ServiceSettings) -> str:
    if not settings.data_dir.is_absolute():
        raise field_error("data_dir", "is relative")
    return str(settings.data_dir)


@pytest.fixture
def kernel(tmp_path: Path) -> ServiceKernel:
    # A real kernel, never started: building the app must open nothing.
    return ServiceKernel("mes", Settings(data_dir=tmp_path), tmp_path)


@pytest.fixture
def app(kernel: ServiceKernel, orders: FakeOrders) -> FastAPI:
    return create_app(kernel, orders, "a test service", [router])  # type: ignore[arg-type]


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


async def test_healthz_names_what_a_kernel_that_never_started_lacks(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "problems": {
            "database": "database unavailable (RuntimeError)",
            "broker": "not connected to RabbitMQ",
        },
    }


class _RefusingPool:
    """A pool whose driver explains, at length, why it cannot connect."""

    def acquire(self, timeout: float) -> None:
        raise asyncpg.InvalidAuthorizationSpecificationError(
            'role "loupe_mes" is not permitted to log in to "db.internal:5432/loupe_mes"'
        )


async def test_healthz_names_the_databases_error_class_never_the_drivers_text(
    client: httpx.AsyncClient, kernel: ServiceKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernel, "_pool", _RefusingPool())
    response = await client.get("/healthz")
    assert response.status_code == 503
    problem = response.json()["problems"]["database"]
    assert problem == "database unavailable (InvalidAuthorizationSpecificationError)"
    assert "loupe_mes" not in response.text and "db.internal" not in response.text


async def test_healthz_is_ok_under_the_services_name_when_nothing_is_wrong(
    app: FastAPI, client: httpx.AsyncClient, kernel: ServiceKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def healthy() -> dict[str, str]:
        return {}

    monkeypatch.setattr(kernel, "health", healthy)
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok", "service": "mes-api"})
    assert app.openapi()["info"]["title"] == "mes-api"


async def test_ready_while_the_database_answers_even_without_rabbitmq(
    client: httpx.AsyncClient, kernel: ServiceKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker_down = {"broker": "not connected to RabbitMQ"}

    async def health() -> dict[str, str]:
        return dict(problems)

    monkeypatch.setattr(kernel, "health", health)
    problems = broker_down
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "service": "mes-api"})
    assert (await client.get("/healthz")).status_code == 503, "not healthy, though ready"
    problems = {"database": "ConnectionRefusedError: …"} | broker_down
    assert (await client.get("/readyz")).status_code == 503


async def test_refused_steps_are_409_and_unknown_orders_404(
    client: httpx.AsyncClient, orders: FakeOrders
) -> None:
    orders.add("o-1", OrderStatus.SUBMITTED)
    early = await client.post("/orders/o-1/close")
    assert early.status_code == 409
    assert early.json()["status"] == "SUBMITTED" and early.json()["requested"] == "CLOSED"
    assert "cannot become CLOSED" in early.json()["detail"]
    missing = await client.post("/orders/nope/close")
    assert (missing.status_code, missing.json()) == (404, {"detail": "order nope does not exist"})


async def test_routes_reach_the_services_settings(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    assert (await client.get("/data-dir")).json() == str(tmp_path)


async def test_a_field_error_is_a_422_that_names_the_field(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    app.state.settings = Settings(data_dir=Path("relative"))
    response = await client.get("/data-dir")
    assert response.status_code == 422
    assert response.json() == {"detail": {"field": "data_dir", "message": "is relative"}}


async def test_the_kernel_starts_with_the_app_and_stops_even_when_serving_fails(
    app: FastAPI, kernel: ServiceKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    async def start() -> None:
        calls.append("start")

    async def stop() -> None:
        calls.append("stop")

    monkeypatch.setattr(kernel, "start", start)
    monkeypatch.setattr(kernel, "stop", stop)
    with pytest.raises(RuntimeError, match="crashed"):
        async with app.router.lifespan_context(app):
            calls.append("serving")
            raise RuntimeError("crashed")
    assert calls == ["start", "serving", "stop"]


async def test_an_order_view_shows_its_own_columns_as_json_types(
    client: httpx.AsyncClient, orders: FakeOrders
) -> None:
    created = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    # A column the view does not declare (customer_email) never leaves the service.
    orders.add(
        "o-2", OrderStatus.CLOSED, price=Decimal("12.50"), created_at=created, customer_email="a@b"
    )
    shown = (await client.get("/orders/o-2")).json()
    assert shown == {
        "id": "o-2",
        "status": "CLOSED",
        "price": 12.5,
        "created_at": created.isoformat(),
    }


@pytest.mark.parametrize(
    "outage",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        ),
    ],
    ids=type,
)
async def test_a_database_outage_is_a_503_with_retry_after_never_a_500(
    client: httpx.AsyncClient,
    orders: FakeOrders,
    monkeypatch: pytest.MonkeyPatch,
    outage: Exception,
) -> None:
    async def unreachable(order_id: str) -> None:
        raise outage

    monkeypatch.setattr(orders, "row", unreachable)
    response = await client.get("/orders/o-1")
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert response.json() == {"detail": "mes-api's database is unavailable; retry shortly"}


async def test_a_bug_is_still_a_500(
    app: FastAPI, orders: FakeOrders, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(order_id: str) -> None:
        raise asyncpg.UndefinedColumnError('column "x" does not exist')

    monkeypatch.setattr(orders, "row", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        assert (await client.get("/orders/o-1")).status_code == 500


def test_on_sigterm_serve_flushes_telemetry_before_the_process_ends(tmp_path: Path) -> None:
    # uvicorn raises SIGTERM again once it has shut down; the spans must be sent before that.
    flushed, port = tmp_path / "flushed", free_port()
    code = textwrap.dedent(
        f"""
        import pathlib, loupe.telemetry
        loupe.telemetry.shutdown_telemetry = (
            lambda: pathlib.Path({str(flushed)!r}).write_text("yes")
        )
        from fastapi import FastAPI
        from loupe.service.http import serve
        serve(FastAPI(), "127.0.0.1", {port})
        """
    )
    child = Process("serve", [sys.executable, "-c", code], ready_port=port, logs_dir=tmp_path)
    child.start()
    try:
        os.kill(child.pid or 0, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while child.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.returncode == 0, child.log_tail()
        assert flushed.read_text() == "yes"
    finally:
        child.stop()


async def test_metrics_show_how_the_processs_spans_fared_on_their_way_to_jaeger(
    client: httpx.AsyncClient,
) -> None:
    SPANS_EXPORTED.labels(result=Exported.SENT, kind=Kind.MONITORED).inc(0)  # the sample exists
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    labels = {"result": "sent", "kind": "monitored"}
    assert samples[
        (SPANS_EXPORTED_METRIC, tuple(sorted(labels.items())))
    ] == REGISTRY.get_sample_value(SPANS_EXPORTED_METRIC, labels)


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:8082", 200),
        ("localhost:8082", 200),
        ("loupe.workshop.example", 200),  # LOUPE_CONSOLE_URL's host
        ("ops.workshop.example", 200),  # in LOUPE_ALLOWED_HOSTS, as *.workshop.example
        ("rebound.attacker.example", 400),  # a name pointed at 127.0.0.1 by someone else
        ("127.0.0.1.attacker.example", 400),
    ],
)
async def test_only_known_host_names_are_answered(
    orders: FakeOrders, tmp_path: Path, host: str, status: int
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        console_url="https://loupe.workshop.example",
        allowed_hosts=("*.workshop.example",),
    )
    app = create_app(ServiceKernel("mes", settings, tmp_path), orders, "a test", [router])  # type: ignore[arg-type]
    orders.add("o-1", OrderStatus.SUBMITTED)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.get("/orders/o-1", headers={"Host": host})
    assert response.status_code == status, response.text
