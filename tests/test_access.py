"""loupe-portal trusts only a verified ID token: signature against the issuer's JWKS (served
here by a fake provider through httpx's mock transport), then iss, aud and exp."""

from __future__ import annotations

import re
import time
import tomllib
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from loupe.access import AccessSettings, Unauthenticated
from loupe.messaging.management import Management
from loupe.portal.app import create_app
from loupe.portal.settings import PortalSettings
from loupe.stack.gateway import GatewaySettings, Secrets, render
from tests.support.oidc import CLIENT, ISSUER, OTHER_KEY, FakeProvider, token


async def test_valid_token_gives_identity() -> None:
    provider = FakeProvider()
    verifier = provider.verifier()
    identity = await verifier.verify(token(groups=["developers"]))
    assert identity.email == "devops@example.com"
    assert identity.groups == ("developers",)
    await verifier.verify(token())
    assert provider.jwks_fetches == 1, "keys are cached"


@pytest.mark.parametrize(
    ("made", "why"),
    [
        (lambda: token(exp=int(time.time()) - 3600), "expired"),
        (lambda: token(aud="someone-else"), "another client"),
        (lambda: token(iss="http://evil.example/dex"), "another issuer"),
        (lambda: token(key=OTHER_KEY), "signature"),
        (lambda: token(kid="unknown"), "does not publish"),
        (lambda: "not-a-jwt", "malformed"),
        (
            lambda: jwt.encode(
                {"iss": ISSUER, "aud": CLIENT, "sub": "x", "exp": 2**31}, "s", algorithm="HS256"
            ),
            "not accepted",
        ),
    ],
)
async def test_bad_tokens_are_refused(made: Any, why: str) -> None:
    with pytest.raises(Unauthenticated, match=why), warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        await FakeProvider().verifier().verify(made())


async def test_missing_or_non_bearer_header_is_refused() -> None:
    verifier = FakeProvider().verifier()
    for header in (None, "", "Basic dXNlcjpwYXNz", "Bearer "):
        with pytest.raises(Unauthenticated, match="no ID token"):
            await verifier.verify_header(header)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = PortalSettings(access=AccessSettings(issuer=ISSUER, client_id=CLIENT))
    app = create_app(settings, FakeProvider().verifier())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


FORGED = {
    "X-Forwarded-User": "devops",
    "X-Forwarded-Email": "devops@example.com",
    "X-Forwarded-Groups": "devops",
}


async def test_forged_forwarded_headers_alone_get_401(client: httpx.AsyncClient) -> None:
    for path in ("/api/whoami", "/", "/api/dead-letters"):
        response = await client.get(path, headers=FORGED)
        assert response.status_code == 401, path
        assert response.json()["error"] == "unauthenticated"
        assert "ID token" in response.json()["detail"]
    assert (await client.post("/api/dead-letters/requeue", headers=FORGED)).status_code == 401


async def test_forwarded_groups_do_not_raise_a_developers_role(client: httpx.AsyncClient) -> None:
    bearer = {"Authorization": f"Bearer {token(groups=['developers'])}"}
    response = await client.get("/api/whoami", headers={**FORGED, **bearer})
    assert response.status_code == 200
    assert response.json()["role"] == "reader"
    assert response.json()["can_act"] is False


async def test_roles_from_groups(client: httpx.AsyncClient) -> None:
    answer = await client.get("/api/whoami", headers={"Authorization": f"Bearer {token()}"})
    devops = answer.json()
    assert re.fullmatch(r"[0-9a-f]{64}", devops.pop("csrf_token"))
    assert devops == {
        "email": "devops@example.com",
        "subject": "user-1",
        "groups": ["devops"],
        "role": "operator",
        "can_read": True,
        "can_act": True,
    }
    page = await client.get("/", headers={"Authorization": f"Bearer {token()}"})
    assert "devops@example.com" in page.text and "/oauth2/sign_out" in page.text


async def test_developer_cannot_requeue(client: httpx.AsyncClient) -> None:
    bearer = {"Authorization": f"Bearer {token(groups=['developers'])}"}
    response = await client.post("/api/dead-letters/requeue", headers=bearer)
    assert response.status_code == 403
    assert response.json()["needs_group"] == ["devops"]
    assert "devops" in response.json()["detail"]


async def test_no_group_cannot_read(client: httpx.AsyncClient) -> None:
    bearer = {"Authorization": f"Bearer {token(groups=[])}"}
    assert (await client.get("/api/dead-letters", headers=bearer)).status_code == 403


def test_settings_from_env() -> None:
    settings = PortalSettings.from_env(
        {
            "LOUPE_PORTAL_URL": "http://127.0.0.1:9999/",
            "LOUPE_OPERATOR_GROUPS": "sre, devops",
            "LOUPE_AMQP_URL": "amqp://u:p@127.0.0.1:5672/loupe-sandbox-x",
        }
    )
    assert (settings.host, settings.port) == ("127.0.0.1", 9999)
    assert settings.access.act_groups == ("sre", "devops")
    assert settings.access.read_groups == ("devops", "developers")
    management = Management(settings.management_url, settings.amqp_url)
    assert management.vhost == "loupe-sandbox-x"
    assert management.credentials == ("u", "p")
    assert Management("http://m", "amqp://127.0.0.1").vhost == "/"


def test_gateway_sends_slash_to_the_portal_with_the_id_token(tmp_path: Path) -> None:
    settings = GatewaySettings(secrets_dir=tmp_path / "secrets")
    keys = Secrets.ensure(settings.secrets_dir, {"LOUPE_DEMO_PASSWORD": "pw"})
    files = render(
        settings,
        "http://127.0.0.1:16686/jaeger",
        tmp_path / "data",
        tmp_path / "logs",
        keys,
        portal_url="http://127.0.0.1:8090",
    )
    config = tomllib.loads(files.gateway_config.read_text(encoding="utf-8"))
    assert config["upstreams"] == ["http://127.0.0.1:16686/jaeger/", "http://127.0.0.1:8090/"]
    assert config["pass_authorization_header"] is True
