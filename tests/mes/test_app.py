"""mes-api served for real (uvicorn, its kernel on the sandbox's RabbitMQ and PostgreSQL) against
hostile input: a model that is not in the object store, too large or too slow to price ends as
a FAILED order with the reason while `/healthz` keeps answering; an upload past the limit is
refused while it streams and leaves nothing; a model no order refers to is swept."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from loupe.actors.models import binary_stl, ring_triangles
from loupe.config import Settings
from loupe.mes.app import create_app
from loupe.objectstore import ObjectStore
from loupe.orders import OrderEvent, OrderSource, OrderStatus
from loupe.stack.process import free_port
from tests.support.integration import SANDBOX, TIMEOUT, Broker, eventually, serving

pytestmark = pytest.mark.integration

RING = binary_stl(ring_triangles(9.0, 1.5))
# About 320 000 triangles: some 2.5 s of pricing on this machine, far past the 0.5 s allowed.
SLOW = binary_stl(ring_triangles(9.0, 1.5, 400, 400))
# Room for the slow model (16 MB).
MAX_MODEL_BYTES = 20 * 1024 * 1024


@dataclass
class Mes:
    url: str
    app: FastAPI
    settings: Settings

    @property
    def pool(self) -> asyncpg.Pool:
        pool: asyncpg.Pool = self.app.state.orders.pool
        return pool

    @property
    def store(self) -> ObjectStore:
        store: ObjectStore = self.app.state.store
        return store

    def model_url(self, sha256: str) -> str:
        return f"{self.url}/models/{sha256}"

    async def order(self, order_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            "SELECT status, failure_reason FROM orders WHERE id = $1", order_id
        )
        return dict(row) if row else None

    async def reaches(self, order_id: str, status: OrderStatus) -> dict[str, Any]:
        """The order's row once it is at `status`; fails after TIMEOUT."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            row = await self.order(order_id)
            if row and row["status"] == status.value:
                return row
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"order {order_id} never reached {status}: {await self.order(order_id)}"
        )


@pytest.fixture
async def mes(broker: Broker, tmp_path: Path) -> AsyncIterator[Mes]:
    port = free_port()
    settings = dataclasses.replace(
        SANDBOX.settings,
        data_dir=tmp_path,
        service_urls={**SANDBOX.settings.service_urls, "mes": f"http://127.0.0.1:{port}"},
        pricing_seconds=0,
        pricing_timeout_seconds=0.5,
        pricing_max_triangles=1_000_000,
        max_model_bytes=MAX_MODEL_BYTES,
        max_delivery_attempts=2,
        retry_delay_ms=50,
        orphan_model_minutes=0.01,
    )
    app = create_app(settings)
    async with serving(app, port) as url:
        yield Mes(url, app, settings)


async def _submit(broker: Broker, model_url: str, sha256: str) -> str:
    event = OrderEvent.now(
        order_id=str(uuid.uuid4()),
        status=OrderStatus.SUBMITTED,
        previous_status=None,
        source=OrderSource.SHOP,
        model_sha256=sha256,
        model_url=model_url,
    )
    await broker.publisher.publish_event(broker.exchanges.orders, event)
    return event.order_id


async def test_a_model_in_the_object_store_is_priced(mes: Mes, broker: Broker) -> None:
    sha256 = mes.store.put(RING)
    order_id = await _submit(broker, mes.model_url(sha256), sha256)
    await mes.reaches(order_id, OrderStatus.PRICE_CALCULATED)


@pytest.mark.parametrize(
    "where",
    [
        "file:///etc/passwd",
        "http://169.254.169.254/latest/meta-data/",
        "{mes}/models/../../etc/passwd",
        "{mes}/models/{other}",
        "http://attacker.example/models/{sha}",
    ],
)
async def test_a_model_outside_the_object_store_fails_the_order_with_the_reason(
    mes: Mes, broker: Broker, where: str
) -> None:
    sha256 = mes.store.put(RING)
    other = mes.store.put(RING + b" ")
    url = where.format(mes=mes.url, sha=sha256, other=other)
    order_id = await _submit(broker, url, sha256)
    order = await mes.reaches(order_id, OrderStatus.FAILED)
    assert order["failure_reason"] == (
        "model cannot be priced: model_url is not the object store's URL of model_sha256"
    )


async def test_a_model_past_the_size_cap_fails_the_order_with_the_reason(
    mes: Mes, broker: Broker
) -> None:
    sha256 = mes.store.put(b"s" * (MAX_MODEL_BYTES + 1))
    order_id = await _submit(broker, mes.model_url(sha256), sha256)
    order = await mes.reaches(order_id, OrderStatus.FAILED)
    assert order["failure_reason"] == (
        f"model cannot be priced: the model is larger than {MAX_MODEL_BYTES} bytes"
    )


class HealthProbe:
    """Asks `/healthz` every 50 ms from a thread of its own, so what it measures is how soon the
    service answers, even while this test's event loop (which serves it) is busy."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self.answers: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.wait(0.05):
                started = time.monotonic()
                self.answers.append(client.get("/healthz").status_code)
                self.latencies.append(time.monotonic() - started)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


async def test_a_model_too_slow_to_price_fails_while_healthz_keeps_answering(
    mes: Mes, broker: Broker
) -> None:
    sha256 = mes.store.put(SLOW)
    with HealthProbe(mes.url) as probe:
        order_id = await _submit(broker, mes.model_url(sha256), sha256)
        order = await mes.reaches(order_id, OrderStatus.FAILED)
    assert order["failure_reason"] == (
        "model cannot be priced: pricing the model took longer than 0.5 s"
    )
    assert len(probe.latencies) >= 5
    assert set(probe.answers) == {200}
    assert max(probe.latencies) < 1.0, f"/healthz took {max(probe.latencies):.2f} s"


async def _upload(port: int, size: int, *, declared: bool) -> tuple[bytes, int]:
    """POST a B2B order whose model is `size` bytes over a raw connection, sending the body
    until the server answers; returns the answer's status line and headers, and what was
    sent by then (a client library would send the whole body before reading)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        b'--b\r\nContent-Disposition: form-data; name="partner_id"\r\n\r\nacme\r\n'
        b'--b\r\nContent-Disposition: form-data; name="partner_reference"\r\n\r\nPO-1\r\n'
        b'--b\r\nContent-Disposition: form-data; name="model"; filename="ring.stl"\r\n\r\n'
    )
    length = f"Content-Length: {len(head) + size + 9}" if declared else "Transfer-Encoding: chunked"
    writer.write(
        f"POST /b2b/orders HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\n{length}\r\n\r\n".encode()
    )
    answer = asyncio.create_task(reader.readuntil(b"\r\n\r\n"))
    sent, chunk = 0, b"s" * 65536
    parts = [head, *[chunk] * (size // len(chunk))]
    try:
        for part in parts:
            if answer.done():
                break
            writer.write(part if declared else b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            sent += len(part)
    except ConnectionError:
        pass  # the server answered and closed the connection while the body was coming
    try:
        return await asyncio.wait_for(answer, TIMEOUT), sent
    finally:
        writer.close()


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_an_upload_past_the_limit_is_413_while_it_streams_and_leaves_nothing(
    mes: Mes, tmp_path: Path, declared: bool
) -> None:
    orders = await mes.pool.fetchval("SELECT count(*) FROM orders")
    total = 10 * MAX_MODEL_BYTES
    answer, sent = await _upload(int(mes.url.rsplit(":", 1)[1]), total, declared=declared)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    # Refused long before the end; what was sent past the limit sat in socket buffers.
    assert sent < total / 2
    assert await mes.pool.fetchval("SELECT count(*) FROM orders") == orders
    assert [p for p in (tmp_path / "objects").rglob("*") if p.is_file()] == []


async def test_a_model_no_order_refers_to_is_swept_once_old(mes: Mes, tmp_path: Path) -> None:
    # The fixture's age is 0.6 s, swept every 0.06 s.
    used = mes.store.put(RING)
    await mes.pool.execute(
        "INSERT INTO orders (id, source, status, model_sha256) VALUES ($1, 'b2b', 'SUBMITTED', $2)",
        str(uuid.uuid4()),
        used,
    )
    orphan = mes.store.put(RING + b" orphan")
    store = tmp_path / "objects" / "mes"
    for name in (used, orphan):
        then = time.time() - 3600
        os.utime(store / name[:2] / name, (then, then))
    orphan_path = store / orphan[:2] / orphan
    await eventually(lambda: not orphan_path.exists(), "the unused model to be swept")
    assert mes.store.get(used) == RING
