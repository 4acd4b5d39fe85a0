"""The real thing: Jaeger (memory storage) and the three services as processes, on their own
ports, RabbitMQ vhost and databases, so a developer's `make run` can keep running beside it."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from playwright.sync_api import Browser, sync_playwright

from loupe.config import SERVICES, Settings
from loupe.stack import Stack, free_port
from loupe.stack.components import (
    JaegerPorts,
    dex_process,
    gateway_process,
    jaeger_process,
    service_process,
)
from loupe.stack.gateway import GatewayFiles, GatewaySettings, Secrets, render
from loupe.stack.sandbox import Sandbox

from .browser_support import CHROMIUM, CHROMIUM_ARGS


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


# -- the sign-in gateway: Jaeger (memory), Dex and oauth2-proxy on free ports ----------------

GATEWAY_SERVICES = ("shop-api", "crm-api", "mes-api")
"""The services the gateway fixture puts one span each of into Jaeger."""
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
API = {"Accept": "application/json"}


@dataclass
class Gateway:
    settings: GatewaySettings
    files: GatewayFiles
    jaeger: JaegerPorts
    password: str

    @property
    def url(self) -> str:
        return self.settings.url

    def client(self) -> httpx.Client:
        # trust_env=False: a proxy from the environment must not see loopback traffic.
        return httpx.Client(trust_env=False, timeout=10, follow_redirects=True)

    def audit(self) -> list[dict[str, Any]]:
        lines = self.files.audit_log.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


class _FormFinder(HTMLParser):
    """The first form's action and method, with entities already decoded by the parser."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "form" and self.action is None:
            values = dict(attrs)
            self.action = values.get("action") or ""
            self.method = (values.get("method") or "get").lower()


def sign_in(gateway: Gateway, client: httpx.Client, email: str, path: str) -> httpx.Response:
    """Opens `path` through the gateway as a browser would and completes Dex's password form."""
    page = client.get(f"{gateway.url}{path}", headers=BROWSER)
    assert page.status_code == 200, page.text
    dex = urlsplit(gateway.settings.dex_issuer)
    assert (page.url.host, page.url.port) == (dex.hostname, dex.port), page.url
    assert page.url.path.startswith("/dex/auth/local/login"), page.url
    finder = _FormFinder()
    finder.feed(page.text)
    assert finder.action is not None and finder.method == "post", page.text
    return client.post(
        urljoin(str(page.url), finder.action),
        data={"login": email, "password": gateway.password},
        headers=BROWSER,
    )


def export_span(jaeger: JaegerPorts, service: str) -> None:
    exporter = OTLPSpanExporter(endpoint=f"{jaeger.otlp_http_url}/v1/traces", timeout=10)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        with provider.get_tracer("loupe.tests").start_as_current_span("probe"):
            pass
    finally:
        provider.shutdown()


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


# -- a real browser (tests/e2e/browser_support.py) ------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium; a test module using it is marked `needs_chromium`."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()
