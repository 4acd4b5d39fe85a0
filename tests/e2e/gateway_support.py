"""The sign-in gateway the `gateway` fixture starts (Jaeger in memory, Dex and oauth2-proxy on
free ports), and signing in through it with an HTTP client that fills in Dex's password form."""

from __future__ import annotations

import json
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from loupe.stack.components import JaegerPorts
from loupe.stack.gateway import GatewayFiles, GatewaySettings

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
