"""The real thing: Jaeger (memory storage) and the three services as processes, on their own
ports, RabbitMQ vhost and databases, so a developer's `make run` can keep running beside it."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import httpx
import pytest

from loupe.config import SERVICES
from loupe.stack.components import (
    JaegerPorts,
    dex_process,
    gateway_process,
    jaeger_process,
    service_process,
)
from loupe.stack.gateway import GatewaySettings, Secrets, render
from loupe.stack.process import free_port
from loupe.stack.sandbox import Sandbox
from loupe.stack.supervisor import Stack

# A real browser for every e2e module that asks for one.
from .browser_support import browser  # noqa: F401
from .gateway_support import GATEWAY_SERVICES, Gateway, export_span
from .pipeline_support import Pipeline


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


# -- the sign-in gateway: Jaeger (memory), Dex and oauth2-proxy on free ports ----------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("gateway")
    password = secrets.token_urlsafe(12)
    settings = GatewaySettings(
        address=f"127.0.0.1:{free_port()}",
        dex_port=free_port(),
        secrets_dir=root / "secrets",
    )
    jaeger = JaegerPorts.pick_free()
    keys = Secrets.ensure(settings.secrets_dir, {"LOUPE_DEMO_PASSWORD": password})
    files = render(settings, jaeger.query_url, root / "data", root / "logs", keys)
    logs = root / "logs"
    stack = Stack(
        [
            jaeger_process("memory", jaeger, logs_dir=logs),
            dex_process(settings, files, logs),
            gateway_process(settings, files, logs),
        ]
    )
    with stack:
        for service in GATEWAY_SERVICES:
            export_span(jaeger, service)
        deadline = time.monotonic() + 20
        while True:
            listed = httpx.get(f"{jaeger.query_url}/api/services", trust_env=False).json()
            if set(GATEWAY_SERVICES) <= set(listed["data"] or []) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        yield Gateway(settings, files, jaeger, password)
