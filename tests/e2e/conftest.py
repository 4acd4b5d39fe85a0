"""The real thing: Jaeger (memory storage) and the three services as processes, on their own
ports, RabbitMQ vhost and databases, so a developer's `make run` can keep running beside it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest

from loupe.config import SERVICES, Settings
from loupe.database import dsn_for
from loupe.stack import Stack
from loupe.stack.components import JaegerPorts, jaeger_process, service_process
from loupe.stack.process import free_port

MANAGEMENT = "http://127.0.0.1:15672/api"
AUTH = ("guest", "guest")


@dataclass
class Pipeline:
    stack: Stack
    settings: Settings
    env: dict[str, str]
    jaeger: JaegerPorts
    vhost: str
    orders: dict[str, list[str]] = field(default_factory=dict)
    customers: list[Any] = field(default_factory=list)

    def jaeger_get(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.jaeger.query_url}{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def traces_for_order(self, order_id: str) -> dict[str, dict[str, Any]]:
        """Every trace Jaeger finds by the order.id tag, whichever service recorded it."""
        found: dict[str, dict[str, Any]] = {}
        tags = json.dumps({"order.id": order_id})
        for service in ("shop-api", "crm-api", "mes-api"):
            for item in self.jaeger_get("/api/traces", service=service, tags=tags, limit="100")[
                "data"
            ]:
                found[item["traceID"]] = item
        return found

    def all_traces(self) -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for service in ("shop-api", "crm-api", "mes-api"):
            for item in self.jaeger_get("/api/traces", service=service, limit="2000")["data"]:
                found[item["traceID"]] = item
        return list(found.values())


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


async def wait_for_async(check: Callable[[], Awaitable[Any]], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what} (last: {last!r})")


def _drop_databases(settings: Settings) -> None:
    async def drop() -> None:
        connection = await asyncpg.connect(dsn_for(settings.postgres_dsn, "postgres"))
        try:
            for service in SERVICES:
                await connection.execute(
                    f'DROP DATABASE IF EXISTS "{settings.database_name(service)}" WITH (FORCE)'
                )
        finally:
            await connection.close()

    asyncio.run(drop())


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    run = uuid.uuid4().hex[:8]
    vhost = f"loupe-e2e-{run}"
    httpx.put(f"{MANAGEMENT}/vhosts/{vhost}", auth=AUTH, timeout=10).raise_for_status()
    httpx.put(
        f"{MANAGEMENT}/permissions/{vhost}/guest",
        json={"configure": ".*", "write": ".*", "read": ".*"},
        auth=AUTH,
        timeout=10,
    ).raise_for_status()
    root: Path = tmp_path_factory.mktemp("pipeline")
    ports = {service: free_port() for service in SERVICES}
    env = {
        "LOUPE_AMQP_URL": f"amqp://guest:guest@127.0.0.1:5672/{quote(vhost, safe='')}",
        "LOUPE_DATABASE_PREFIX": f"loupe_e2e_{run}",
        "LOUPE_DATA_DIR": str(root / "data"),
        "LOUPE_PRICING_SECONDS": "0.3",
        "LOUPE_RETRY_DELAY_MS": "200",
        "LOUPE_MAX_DELIVERY_ATTEMPTS": "3",
        # Export quickly so the test reads spans soon after the work is done.
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        **{f"LOUPE_{s.upper()}_URL": f"http://127.0.0.1:{p}" for s, p in ports.items()},
    }
    jaeger = JaegerPorts.pick_free()
    logs = root / "logs"
    stack = Stack(
        [jaeger_process("memory", jaeger, logs_dir=logs)]
        + [
            service_process(s, env, otlp_endpoint=jaeger.otlp_http_url, logs_dir=logs)
            for s in SERVICES
        ]
    )
    settings = Settings(
        amqp_url=env["LOUPE_AMQP_URL"],
        database_prefix=env["LOUPE_DATABASE_PREFIX"],
        service_urls={s: f"http://127.0.0.1:{p}" for s, p in ports.items()},
    )
    try:
        stack.start()
        yield Pipeline(stack, settings, env, jaeger, vhost)
    finally:
        stack.stop()
        _drop_databases(settings)
        httpx.delete(f"{MANAGEMENT}/vhosts/{vhost}", auth=AUTH, timeout=10)
