"""What the end-to-end tests share besides fixtures: the pipeline the `pipeline` fixture
starts (Jaeger in memory and the three services as processes) and waiting for a condition."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from loupe.config import Settings
from loupe.stack.components import JaegerPorts
from loupe.stack.supervisor import Stack


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
