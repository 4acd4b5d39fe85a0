"""The sign-in gateway through the real processes: Jaeger (memory), Dex and oauth2-proxy on free
ports, and an HTTP client with a cookie jar that fills in Dex's sign-in form like a browser."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from .conftest import API, BROWSER, GATEWAY_SERVICES, Gateway, sign_in

pytestmark = pytest.mark.e2e

SERVICES = GATEWAY_SERVICES


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
