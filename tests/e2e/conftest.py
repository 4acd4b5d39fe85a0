"""The real thing: Jaeger (memory storage) and the three services as processes, on their own
ports, RabbitMQ vhost and databases, so a developer's `make run` can keep running beside it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from loupe.config import SERVICES, Settings
from loupe.stack import Stack
from loupe.stack.components import JaegerPorts, jaeger_process, service_process
from loupe.stack.sandbox import Sandbox


@dataclass
class Pipeline:
    stack: Stack
    settings: Settings
    env: dict[str, str]
    jaeger: JaegerPorts
    orders: dict[str, list[str]] = field(default_factory=dict)
    customers: list[Any] = field(default_factory=list)

    def jaeger_get(self, path: str, **params: str) -> list[Any]:
        """The `data` of a Jaeger API answer (which is null, not [], when nothing matched)."""
        response = httpx.get(f"{self.jaeger.query_url}{path}", params=params, timeout=10)
        response.raise_for_status()
        return list(response.json()["data"] or [])

    def traces_for_order(self, order_id: str) -> dict[str, dict[str, Any]]:
        """Every trace Jaeger finds by the order.id tag, whichever service recorded it."""
        found: dict[str, dict[str, Any]] = {}
        tags = json.dumps({"order.id": order_id})
        for service in ("shop-api", "crm-api", "mes-api"):
            for item in self.jaeger_get("/api/traces", service=service, tags=tags, limit="100"):
                found[item["traceID"]] = item
        return found

    def all_traces(self) -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for service in ("shop-api", "crm-api", "mes-api"):
            for item in self.jaeger_get("/api/traces", service=service, limit="2000"):
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


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with Sandbox(tmp_path_factory.mktemp("pipeline")) as sandbox:
        env = {
            **sandbox.env,
            "LOUPE_PRICING_SECONDS": "0.3",
            "LOUPE_RETRY_DELAY_MS": "200",
            "LOUPE_MAX_DELIVERY_ATTEMPTS": "3",
            # Export quickly so the test reads spans soon after the work is done.
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
        jaeger = JaegerPorts.pick_free()
        stack = Stack(
            [jaeger_process("memory", jaeger, logs_dir=sandbox.logs)]
            + [
                service_process(s, env, otlp_endpoint=jaeger.otlp_http_url, logs_dir=sandbox.logs)
                for s in SERVICES
            ]
        )
        with stack:
            yield Pipeline(stack, sandbox.settings, env, jaeger)
