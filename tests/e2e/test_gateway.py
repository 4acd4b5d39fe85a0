"""The sign-in gateway through the real processes: Jaeger (memory), Dex and oauth2-proxy on free
ports, and an HTTP client with a cookie jar that fills in Dex's sign-in form like a browser."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from loupe.stack.components import dex_process, gateway_process
from loupe.stack.gateway import CLIENT_ID, GatewaySettings, Secrets, render
from loupe.stack.process import free_port
from loupe.stack.supervisor import Stack

from .gateway_support import API, BROWSER, GATEWAY_SERVICES, Gateway, _FormFinder, sign_in

pytestmark = pytest.mark.e2e

SERVICES = GATEWAY_SERVICES


@pytest.mark.parametrize("email", ["devops@example.com", "developer@example.com"])
def test_allowed_group_reads_jaeger(gateway: Gateway, email: str) -> None:
    with gateway.client() as client:
        response = sign_in(gateway, client, email, "/jaeger/")
        # Back through /oauth2/callback to the page first asked for.
        assert response.status_code == 200, response.text
        assert response.url.path == "/jaeger/"
        assert [r.url.path for r in response.history][-1] == "/oauth2/callback"

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
        response = sign_in(gateway, client, "devops@example.com", "/")
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
        response = sign_in(gateway, client, "guest@example.com", "/jaeger/")
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

        for page in ("/", "/jaeger/", "/jaeger/search"):
            browser = client.get(f"{gateway.url}{page}", headers=BROWSER)
            assert browser.status_code == 302, page
            location = urlsplit(browser.headers["location"])
            assert f"{location.scheme}://{location.netloc}{location.path}" == (
                f"{gateway.settings.dex_issuer}/auth"
            )
        # An API path is an API call whatever it accepts: no form to be sent to.
        for path in ("/jaeger/api/services", "/monitor/api/findings", "/api/whoami"):
            assert client.get(f"{gateway.url}{path}", headers=BROWSER).status_code == 401, path

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
        assert sign_in(gateway, client, "developer@example.com", "/").is_success
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


# -- bearer tokens: scripts and API clients ------------------------------------------------


def id_token(gateway: Gateway, email: str) -> str:
    """An ID token Dex issues to the gateway's client for `email`.

    The authorization-code flow run by hand: the code is taken from Dex's redirect to the
    gateway's callback (which is never called) and redeemed with the client's secret, so Dex
    needs no extra grant type for the test.
    """
    dex = gateway.settings.dex_issuer
    state = secrets.token_urlsafe(12)
    with httpx.Client(trust_env=False, timeout=10) as client:
        page = client.get(
            f"{dex}/auth",
            params={
                "client_id": CLIENT_ID,
                "redirect_uri": gateway.settings.callback_url,
                "response_type": "code",
                "scope": "openid email profile groups",
                "state": state,
            },
            follow_redirects=True,
        )
        assert page.status_code == 200, page.text
        finder = _FormFinder()
        finder.feed(page.text)
        assert finder.action is not None, page.text
        response = client.post(
            urljoin(str(page.url), finder.action),
            data={"login": email, "password": gateway.password},
        )
        location = ""
        for _ in range(5):
            assert response.is_redirect, response.text
            location = urljoin(str(response.url), response.headers["location"])
            if location.startswith(gateway.settings.callback_url):
                break
            response = client.get(location)
        query = parse_qs(urlsplit(location).query)
        assert query.get("state") == [state], location
        tokens = client.post(
            f"{dex}/token",
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": gateway.settings.callback_url,
            },
            auth=(CLIENT_ID, gateway.files.secrets.client_secret),
        )
        assert tokens.status_code == 200, tokens.text
        return str(tokens.json()["id_token"])


def claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("accept", [BROWSER, API, {}], ids=["browser", "json", "no-accept"])
@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer garbage",
        # JWT-shaped, so oauth2-proxy tries to verify it (and fails on the signature).
        "Bearer eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl",
        "Basic ZGV2b3BzOnB3",
    ],
    ids=["garbage", "forged-jwt", "basic"],
)
def test_invalid_authorization_gets_401_not_a_redirect(
    gateway: Gateway, accept: dict[str, str], authorization: str
) -> None:
    with httpx.Client(trust_env=False, timeout=10) as client:
        response = client.get(
            f"{gateway.url}/jaeger/api/services",
            headers={**accept, "Authorization": authorization},
        )
    assert response.status_code == 401, (response.status_code, response.headers)
    assert "location" not in response.headers
    assert "services" not in response.text


@pytest.mark.parametrize("email", ["devops@example.com", "developer@example.com"])
def test_allowed_groups_id_token_is_a_bearer_session(gateway: Gateway, email: str) -> None:
    token = id_token(gateway, email)
    assert claims(token)["aud"] == CLIENT_ID
    request_id = f"bearer-{secrets.token_hex(4)}"
    with httpx.Client(trust_env=False, timeout=10) as client:
        for accept in (BROWSER, API):
            response = client.get(
                f"{gateway.url}/jaeger/api/services",
                headers={**accept, **bearer(token), "X-Request-Id": request_id},
            )
            assert response.status_code == 200, response.text
            assert set(SERVICES) <= set(response.json()["data"])
            # The token is the session for this request only: nothing is kept in a cookie.
            assert "_loupe_session" not in response.headers.get("set-cookie", "")

    lines = [e for e in gateway.audit() if e.get("request_id") == request_id]
    assert len(lines) == 2, lines
    for line in lines:
        assert (line["user"], line["status"], line["allowed"]) == (email, 200, True), line
        assert line["upstream"] == "/jaeger/"


def test_guest_id_token_is_refused_by_group(gateway: Gateway) -> None:
    token = id_token(gateway, "guest@example.com")
    assert not claims(token).get("groups")
    request_id = f"guest-bearer-{secrets.token_hex(4)}"
    with httpx.Client(trust_env=False, timeout=10) as client:
        response = client.get(
            f"{gateway.url}/jaeger/api/services",
            headers={**API, **bearer(token), "X-Request-Id": request_id},
        )
    assert response.status_code == 403
    assert "services" not in response.text
    assert "devops, developers" in response.text

    entries = gateway.audit()
    (line,) = [e for e in entries if e["kind"] == "request" and e["request_id"] == request_id]
    # The token was genuine, so the line names its user, refused.
    assert (line["user"], line["status"], line["allowed"]) == (
        "guest@example.com",
        403,
        False,
    ), line
    refusals = [e for e in entries if e["kind"] == "auth" and e["request_id"] == request_id]
    assert [(e["user"], e["status"], e["allowed"]) for e in refusals] == [
        ("guest@example.com", "AuthFailure", False)
    ], refusals


def test_id_token_with_forged_groups_is_refused(gateway: Gateway) -> None:
    token = id_token(gateway, "guest@example.com")
    header, _, signature = token.split(".")
    forged = {**claims(token), "groups": ["devops"]}
    payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    with httpx.Client(trust_env=False, timeout=10) as client:
        response = client.get(
            f"{gateway.url}/jaeger/api/services",
            headers={**API, **bearer(f"{header}.{payload}.{signature}")},
        )
    # The signature no longer verifies: not a session at all, and certainly not devops.
    assert response.status_code == 401


# -- the audit log -------------------------------------------------------------------------


def raw_request(gateway: Gateway, target: bytes, headers: dict[bytes, bytes]) -> bytes:
    """Sends one request with `target` and `headers` byte for byte, as no HTTP client would."""
    host, port = gateway.settings.host, gateway.settings.port
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: " + f"{host}:{port}".encode()]
    lines += [name + b": " + value for name, value in headers.items()]
    lines += [b"Connection: close", b"", b""]
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(b"\r\n".join(lines))
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_audit_lines_are_strict_json_whatever_the_client_sends(gateway: Gateway) -> None:
    request_id = f"odd-{secrets.token_hex(4)}"
    answer = raw_request(
        gateway,
        # Escaped quote and backslash, a raw UTF-8 segment, and a raw query with a quote, a
        # backslash, an apostrophe and a byte that is not UTF-8.
        b'/jaeger/api/traces/%22%5C/caf\xc3\xa9?q="a\\b\'c"&x=\xff',
        {
            b"Accept": b"application/json",
            b"User-Agent": b'probe "quoted" \\ back\tslash \xc3\xa9 \xff',
            b"X-Request-Id": request_id.encode() + b'"\\',
        },
    )
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]

    # Every line parses as JSON (and the file as UTF-8).
    text = gateway.files.audit_log.read_bytes().decode("utf-8")
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    (line,) = [e for e in entries if e.get("request_id", "").startswith(request_id)]
    # Values read back as the body of a Go string literal: unchanged unless they hold a quote,
    # a backslash or something unprintable, which keep Go's escapes.
    assert line["request_id"] == request_id + '\\"\\\\'
    uri = '/jaeger/api/traces/%22%5C/caf%C3%A9?q=\\"a\\\\b\'c\\"&x=\\xff'
    assert line["uri"] == uri, line["uri"]
    assert line["user_agent"] == 'probe \\"quoted\\" \\\\ back\\tslash é \\xff'
    assert (line["user"], line["status"], line["allowed"]) == ("-", 401, False)


def test_audit_log_names_who_opened_a_trace(gateway: Gateway) -> None:
    with gateway.client() as client:
        sign_in(gateway, client, "developer@example.com", "/")
        found = client.get(
            f"{gateway.url}/jaeger/api/traces", params={"service": "crm-api"}, headers=API
        )
        assert found.status_code == 200, found.text
        trace_id = found.json()["data"][0]["traceID"]
        opened = client.get(f"{gateway.url}/jaeger/api/traces/{trace_id}", headers=API)
        assert opened.status_code == 200

    who = [
        (e["user"], e["status"])
        for e in gateway.audit()
        if e["kind"] == "request" and trace_id in e["uri"]
    ]
    assert who == [("developer@example.com", 200)], who


# -- the order-flow monitor's route --------------------------------------------------------


class Recorder(ThreadingHTTPServer):
    """Stands in for an upstream: answers every GET with 200 and keeps what it was sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[tuple[str, str]] = []
        super().__init__(("127.0.0.1", 0), _RecordingHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RecordingHandler(BaseHTTPRequestHandler):
    server: Recorder

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization", "")))
        body = json.dumps({"upstream": self.server.name, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def monitored(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, Recorder, Recorder]]:
    """Dex and a gateway rendered with a monitor; recorders stand in for it and the portal."""
    root = tmp_path_factory.mktemp("monitored")
    password = secrets.token_urlsafe(12)
    settings = GatewaySettings(
        address=f"127.0.0.1:{free_port()}", dex_port=free_port(), secrets_dir=root / "secrets"
    )
    keys = Secrets.ensure(settings.secrets_dir, {"LOUPE_DEMO_PASSWORD": password})
    monitor, portal = Recorder("monitor"), Recorder("portal")
    threads = [threading.Thread(target=r.serve_forever, daemon=True) for r in (monitor, portal)]
    for thread in threads:
        thread.start()
    try:
        # Nothing listens on this Jaeger port: these tests never go to /jaeger/.
        jaeger_url = f"http://127.0.0.1:{free_port()}/jaeger"
        files = render(
            settings,
            jaeger_url,
            root / "data",
            root / "logs",
            keys,
            portal_url=portal.url,
            monitor_url=monitor.url,
        )
        logs = root / "logs"
        with Stack([dex_process(settings, files, logs), gateway_process(settings, files, logs)]):
            yield Gateway(settings, files, None, password), monitor, portal  # type: ignore[arg-type]
    finally:
        for recorder in (monitor, portal):
            recorder.shutdown()
            recorder.server_close()


def test_monitor_paths_reach_the_monitor_with_the_users_token(
    monitored: tuple[Gateway, Recorder, Recorder],
) -> None:
    gateway, monitor, portal = monitored
    with gateway.client() as client:
        assert sign_in(gateway, client, "devops@example.com", "/").status_code == 200
        response = client.get(f"{gateway.url}/monitor/api/findings", headers=API)
        assert response.json() == {"upstream": "monitor", "path": "/monitor/api/findings"}
        journey = client.get(f"{gateway.url}/monitor/api/orders/o-1/journey?x=1", headers=API)
        assert journey.json() == {
            "upstream": "monitor",
            "path": "/monitor/api/orders/o-1/journey?x=1",
        }
        # Only /monitor/ and below: anything else is the portal's.
        assert client.get(f"{gateway.url}/monitoring", headers=API).json()["upstream"] == "portal"

    assert [path for path, _ in portal.seen] == ["/", "/monitoring"]
    path, authorization = monitor.seen[-1]
    assert path == "/monitor/api/orders/o-1/journey?x=1"
    scheme, _, token = authorization.partition(" ")
    assert scheme == "Bearer"
    assert (claims(token)["email"], claims(token)["aud"]) == ("devops@example.com", CLIENT_ID)

    monitor.seen.clear()
    with httpx.Client(trust_env=False, timeout=10) as client:
        refused = client.get(f"{gateway.url}/monitor/api/findings", headers=API)
        assert refused.status_code == 401
        # A script's own ID token is passed on as it came.
        token = id_token(gateway, "developer@example.com")
        allowed = client.get(f"{gateway.url}/monitor/api/findings", headers=bearer(token))
        assert allowed.status_code == 200
    assert monitor.seen == [("/monitor/api/findings", f"Bearer {token}")]
