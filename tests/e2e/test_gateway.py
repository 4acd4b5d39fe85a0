"""The sign-in gateway through the real processes: Jaeger (memory), Dex and oauth2-proxy on free
ports, and an HTTP client with a cookie jar that fills in Dex's sign-in form like a browser."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from loupe.stack import JaegerPorts, Stack, free_port, jaeger_process
from loupe.stack.components import dex_process, gateway_process
from loupe.stack.gateway import GatewayFiles, GatewaySettings, Secrets, render

pytestmark = pytest.mark.e2e

SERVICES = ("shop-api", "crm-api", "mes-api")
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
        for service in SERVICES:
            export_span(jaeger, service)
        deadline = time.monotonic() + 20
        while True:
            listed = httpx.get(f"{jaeger.query_url}/api/services", trust_env=False).json()
            if set(SERVICES) <= set(listed["data"] or []) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        yield Gateway(settings, files, jaeger, password)


@pytest.mark.parametrize("email", ["devops@example.com", "developer@example.com"])
def test_allowed_group_reads_jaeger(gateway: Gateway, email: str) -> None:
    with gateway.client() as client:
        response = sign_in(gateway, client, email, "/jaeger/api/services")
        # Back through /oauth2/callback to the page first asked for.
        assert response.status_code == 200, response.text
        assert response.url.path == "/jaeger/api/services"
        assert [r.url.path for r in response.history][-1] == "/oauth2/callback"
        assert set(SERVICES) <= set(response.json()["data"])

        again = client.get(f"{gateway.url}/jaeger/api/services", headers=API)
        assert again.status_code == 200
        assert set(SERVICES) <= set(again.json()["data"])

    entries = gateway.audit()
    assert any(
        e["kind"] == "auth" and e["user"] == email and e["allowed"] is True for e in entries
    ), entries
    assert any(
        e["kind"] == "request"
        and e["user"] == email
        and e["uri"] == "/jaeger/api/services"
        and e["status"] == 200
        and e["allowed"] is True
        and e["client"].startswith("127.0.0.1")
        for e in entries
    ), entries


def test_session_cookie_flags(gateway: Gateway) -> None:
    with gateway.client() as client:
        response = sign_in(gateway, client, "devops@example.com", "/jaeger/api/services")
        assert response.status_code == 200
        callback = next(r for r in response.history if r.url.path == "/oauth2/callback")
        cookie = next(
            v for v in callback.headers.get_list("set-cookie") if v.startswith("_loupe_session=")
        )
        pairs = [a.strip().partition("=") for a in cookie.split(";")[1:]]
        attributes = {name.lower(): value for name, _, value in pairs}
        assert "httponly" in attributes, cookie
        assert attributes.get("samesite", "").lower() == "lax", cookie
        # Bounded: 8 hours (cookie_expire), then the user signs in again.
        assert attributes.get("max-age") == str(8 * 3600), cookie
        # No TLS here, so no Secure flag (the browser would not send the cookie back).
        assert "secure" not in attributes, cookie


def test_guest_is_refused_with_a_reason(gateway: Gateway) -> None:
    with gateway.client() as client:
        response = sign_in(gateway, client, "guest@example.com", "/jaeger/api/services")
        assert response.status_code == 403
        assert response.url.path == "/oauth2/callback"
        assert "signed in" in response.text
        assert "devops, developers" in response.text
        # No session was kept: the next API call is still not signed in.
        api = client.get(f"{gateway.url}/jaeger/api/services", headers=API)
        assert api.status_code == 401

    denied = [
        e
        for e in gateway.audit()
        if e["kind"] == "auth" and e["user"] == "guest@example.com" and e["allowed"] is False
    ]
    assert denied, gateway.audit()
    assert denied[-1]["status"] == "AuthFailure"
    assert denied[-1]["client"].startswith("127.0.0.1")
    # The callback carries the provider's one-time code, so it is left out of request lines.
    assert not any(e.get("uri", "").startswith("/oauth2/callback") for e in gateway.audit())


def test_no_session_api_gets_401_and_browser_is_sent_to_sign_in(gateway: Gateway) -> None:
    with httpx.Client(trust_env=False, timeout=10) as client:
        api = client.get(f"{gateway.url}/jaeger/api/services", headers=API)
        assert api.status_code == 401
        assert api.headers["content-type"].startswith("application/json")

        browser = client.get(f"{gateway.url}/jaeger/api/services", headers=BROWSER)
        assert browser.status_code == 302
        location = urlsplit(browser.headers["location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == (
            f"{gateway.settings.dex_issuer}/auth"
        )

    entries = gateway.audit()
    assert any(
        e["kind"] == "request"
        and e["uri"] == "/jaeger/api/services"
        and e["status"] == 401
        and e["user"] == "-"
        and e["allowed"] is False
        for e in entries
    ), entries


def test_sign_out_ends_the_session(gateway: Gateway) -> None:
    with gateway.client() as client:
        assert sign_in(gateway, client, "developer@example.com", "/jaeger/api/services").is_success
        assert client.get(f"{gateway.url}/jaeger/api/services", headers=API).status_code == 200

        out = client.get(f"{gateway.url}/oauth2/sign_out", follow_redirects=False)
        assert out.status_code == 302
        assert any(
            v.startswith("_loupe_session=;") or "_loupe_session=;" in v
            for v in out.headers.get_list("set-cookie")
        ), out.headers

        after = client.get(f"{gateway.url}/jaeger/api/services", headers=API)
        assert after.status_code == 401


def test_no_open_redirect_after_sign_in(gateway: Gateway) -> None:
    with gateway.client() as client:
        response = sign_in(
            gateway, client, "devops@example.com", "/oauth2/start?rd=https://evil.example/"
        )
        assert response.status_code == 200
        assert response.url.host == urlsplit(gateway.url).hostname
        assert response.url.port == gateway.settings.port
        assert response.url.path == "/"


def test_rendered_files_keep_secrets_private(gateway: Gateway) -> None:
    for path in (
        gateway.files.dex_config,
        gateway.files.gateway_config,
        gateway.files.secrets.client_secret_file,
        gateway.files.secrets.cookie_secret_file,
    ):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert gateway.password not in gateway.files.dex_config.read_text()
    assert not gateway.files.secrets.demo_password_file.exists()
    assert Path(gateway.files.secrets.directory).stat().st_mode & 0o777 == 0o700
