"""The whole of loupe as processes for the end-to-end tests: Dex, the sign-in gateway, Jaeger
(memory, forwarding to the monitor), the monitor, the portal, the three services and the
simulated workshop, in a sandbox of their own (vhost, databases, ports)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import asyncpg

from loupe.actors import Workshop
from loupe.bench.slo import slo_toml
from loupe.config import SERVICES, Settings
from loupe.messaging.topology import ORDERS_EXCHANGE
from loupe.stack.components import (
    JaegerPorts,
    actors_process,
    dex_process,
    gateway_process,
    jaeger_process,
    monitor_process,
    portal_process,
    service_process,
)
from loupe.stack.gateway import CLIENT_ID, GatewaySettings, Secrets, render
from loupe.stack.process import free_port
from loupe.stack.sandbox import Sandbox
from loupe.stack.supervisor import Stack
from tests.support.integration import admin_amqp_url

from .gateway_support import Gateway

T = TypeVar("T")

SUBMITTED_SLO = 10.0
# How long after its deadline an order waiting on a frozen service is reported stuck at most:
# the monitor waits until it has heard the other services 6 s past the deadline (spans may
# arrive one batch delay, 5 s, apart), or until its probe finds the frozen service down.
FROZEN_DETECTION = 12.0
# The demo SLO file's steps, due sooner: SUBMITTED within 10 s, the rest within 20 s.
SLO_FILE = slo_toml("20s", "5s", {"SUBMITTED": f"{SUBMITTED_SLO:.0f}s"})


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Runs a coroutine to the end from synchronous test code, in a thread of its own: a test
    that drives a browser already has Playwright's event loop running in this one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


@dataclass
class Monitored:
    stack: Stack
    settings: Settings
    env: dict[str, str]
    jaeger: JaegerPorts
    gateway: Gateway
    frozen_order: str | None = None
    # When every process was up: the monitor's probes before it saw services still starting.
    up_since: datetime = field(default_factory=lambda: datetime.now(UTC))

    def uptime(self) -> dict[str, bool]:
        """Per service: did every health probe since everything was up pass?"""
        rows = self.query(
            "SELECT service, bool_and(ok) AS up FROM health_samples WHERE at > $1 GROUP BY service",
            self.up_since,
        )
        return {r["service"]: r["up"] for r in rows}

    @property
    def database(self) -> str:
        return self.settings.database_name("monitor")

    def query(self, sql: str, *args: Any, database: str | None = None) -> list[dict[str, Any]]:
        """Rows from the monitor's database (or another of the sandbox's, by name)."""

        async def run() -> list[dict[str, Any]]:
            dsn = self.settings.postgres_dsn_of(database or self.database)
            connection = await asyncpg.connect(dsn)
            try:
                return [dict(r) for r in await connection.fetch(sql, *args)]
            finally:
                await connection.close()

        return run_async(run)

    def cli(self, *args: str) -> Any:
        """`loupe <args> --json` as a user on the host runs it; its JSON answer."""
        done = subprocess.run(
            [sys.executable, "-m", "loupe", *args, "--json"],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def findings(self) -> list[dict[str, Any]]:
        return list(self.cli("stuck")["findings"])

    def publish_poison(self, order_id: str) -> None:
        """An order.submitted event naming `order_id` that no consumer can parse (an unknown
        status, no occurred_at): MES fails the order, and every consumer dead-letters it."""

        async def publish() -> None:
            connection = await aio_pika.connect(admin_amqp_url(self.settings))
            try:
                channel = await connection.channel(publisher_confirms=True)
                exchange = await channel.get_exchange(ORDERS_EXCHANGE)
                body = json.dumps({"order_id": order_id, "status": "NOT_A_STATUS"}).encode()
                await exchange.publish(
                    aio_pika.Message(body, message_id=str(uuid.uuid4())),
                    routing_key="order.submitted",
                )
            finally:
                await connection.close()

        run_async(publish)

    def place_order(self, seed: int = 11) -> str:
        """One shop order placed as a customer would, with a valid model."""

        async def place() -> str:
            workshop = Workshop(self.settings, seed=seed)
            try:
                return await workshop.place_order()
            finally:
                await workshop.close()

        return run_async(place)


@contextmanager
def monitored_stack(root: Path, *, actors_rate: float = 1.0) -> Iterator[Monitored]:
    """Everything up, the workshop running; stopped and the sandbox dropped on exit."""
    slo = root / "slo.toml"
    slo.write_text(SLO_FILE, encoding="utf-8")
    with Sandbox(root) as sandbox:
        jaeger = JaegerPorts.pick_free()
        gateway = GatewaySettings(
            address=f"127.0.0.1:{free_port()}", dex_port=free_port(), secrets_dir=root / "secrets"
        )
        portal_url = f"http://127.0.0.1:{free_port()}"
        env = {
            **sandbox.env,
            "LOUPE_PRICING_SECONDS": "0.3",
            "LOUPE_RETRY_DELAY_MS": "200",
            "LOUPE_MAX_DELIVERY_ATTEMPTS": "3",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "LOUPE_MONITOR_SLO_FILE": str(slo),
            "LOUPE_MONITOR_PROBE_SECONDS": "1",
            # The monitor's API and the portal trust ID tokens of this gateway's issuer and
            # client only; links point at this gateway.
            "LOUPE_OIDC_ISSUER_URL": gateway.issuer,
            "LOUPE_OIDC_CLIENT_ID": CLIENT_ID,
            "LOUPE_CONSOLE_URL": gateway.url,
            "LOUPE_PORTAL_URL": portal_url,
            "LOUPE_JAEGER_QUERY_URL": jaeger.query_url,
        }
        monitor_url = env["LOUPE_MONITOR_URL"]
        otlp = jaeger.otlp_http_url
        password = secrets.token_urlsafe(12)
        keys = Secrets.ensure(gateway.secrets_dir, {"LOUPE_DEMO_PASSWORD": password})
        files = render(
            gateway,
            jaeger.query_url,
            root / "data",
            sandbox.logs,
            keys,
            portal_url=portal_url,
            monitor_url=monitor_url,
        )
        stack = Stack(
            [
                dex_process(gateway, files, sandbox.logs),
                gateway_process(gateway, files, sandbox.logs),
                jaeger_process(
                    "memory",
                    jaeger,
                    logs_dir=sandbox.logs,
                    monitor_endpoint=monitor_url,
                    monitor_token=keys.monitor_intake_token,
                ),
                monitor_process(
                    env | keys.monitor_env(), otlp_endpoint=otlp, logs_dir=sandbox.logs
                ),
                portal_process(env, otlp_endpoint=otlp, logs_dir=sandbox.logs),
                *(
                    service_process(s, env, otlp_endpoint=otlp, logs_dir=sandbox.logs)
                    for s in SERVICES
                ),
                actors_process(env, rate=actors_rate, otlp_endpoint=otlp, logs_dir=sandbox.logs),
            ]
        )
        with stack:
            yield Monitored(
                stack, sandbox.settings, env, jaeger, Gateway(gateway, files, jaeger, password)
            )
