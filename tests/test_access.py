"""loupe-portal trusts only a verified ID token: signature against the issuer's JWKS (served
here by a fake provider through httpx's mock transport), then iss, aud and exp."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
import tomllib
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st

from loupe import access
from loupe.access import (
    Access,
    AccessSettings,
    Identity,
    Jwks,
    TokenVerifier,
    Unauthenticated,
)
from loupe.messaging.management import Management
from loupe.portal.app import create_app
from loupe.portal.settings import PortalSettings
from loupe.stack.gateway import GatewaySettings, Secrets, render
from tests.support.oidc import CLIENT, ISSUER, OTHER_KEY, PROVIDER_KEY, FakeProvider, token


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


# -- hostile tokens: anything but a valid ID token is a 401, never a 500 --------------------

EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: Any, claims: Any, signature: bytes = b"sig") -> str:
    return (
        ".".join(_segment(json.dumps(part).encode()) for part in (header, claims))
        + f".{_segment(signature)}"
    )


NASTY_TOKENS = {
    "an EC algorithm naming the RSA key's kid": lambda: jwt.encode(
        {"iss": ISSUER, "aud": CLIENT, "sub": "x", "iat": 1, "exp": 2**31},
        EC_KEY,
        algorithm="ES256",
        headers={"kid": "k1"},
    ),
    "a header that is a JSON list": lambda: _unsigned(["RS256"], {}),
    "alg as a list": lambda: _unsigned({"alg": ["RS256"], "kid": "k1"}, {}),
    "kid as a number": lambda: _unsigned({"alg": "RS256", "kid": 1}, {}),
    "claims that are not an object": lambda: _unsigned({"alg": "RS256", "kid": "k1"}, [1]),
    "a signature that is not base64": lambda: "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.e30.!!!",
    "non-ASCII bytes": lambda: "é.ü.ß",
    "a huge token": lambda: "a." * 20_000 + "a",
    "exp as text": lambda: token(exp="tomorrow"),
    "aud as a number": lambda: token(aud=7),
    "another client's token for several audiences": lambda: token(
        aud=[CLIENT, "other"], azp="other"
    ),
    "several audiences and no azp": lambda: token(aud=[CLIENT, "other"]),
    "our audience among others, azp another client": lambda: token(aud=CLIENT, azp="other"),
}


@pytest.mark.parametrize("made", NASTY_TOKENS.values(), ids=NASTY_TOKENS.keys())
async def test_malformed_and_mismatched_tokens_are_401s(
    client: httpx.AsyncClient, made: Callable[[], str]
) -> None:
    # Latin-1 on the wire, as a raw header byte would reach the app.
    bearer = f"Bearer {made()}".encode("latin-1", "replace")
    response = await client.get("/api/whoami", headers={"Authorization": bearer})
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthenticated"


async def test_several_audiences_pass_when_azp_is_ours() -> None:
    verifier = FakeProvider().verifier()
    identity = await verifier.verify(token(aud=[CLIENT, "other"], azp=CLIENT))
    assert identity.subject == "user-1"
    assert (await verifier.verify(token(azp=CLIENT))).subject == "user-1"


def _refused_or_accepted(verifier: TokenVerifier, text: str) -> None:
    with contextlib.suppress(Unauthenticated):
        asyncio.run(verifier.verify(text))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
claim_values = st.dictionaries(
    st.sampled_from(["iss", "aud", "sub", "exp", "iat", "nbf", "azp", "groups", "email"]),
    json_values,
)


@given(st.text() | st.binary().map(lambda b: b.decode("latin-1")))
@settings(max_examples=200, deadline=None)
def test_any_text_is_refused_with_401s_reason(text: str) -> None:
    with pytest.raises(Unauthenticated):
        asyncio.run(FakeProvider().verifier().verify(text))


@given(
    st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "b64"]), json_values),
    json_values,
    st.binary(max_size=300),
)
@settings(max_examples=200, deadline=None)
def test_any_three_part_token_is_refused_with_401s_reason(
    header: dict[str, Any], claims: Any, signature: bytes
) -> None:
    with pytest.raises(Unauthenticated):
        asyncio.run(FakeProvider().verifier().verify(_unsigned(header, claims, signature)))


@given(claim_values)
@settings(max_examples=200, deadline=None)
def test_any_claims_signed_by_the_provider_give_an_identity_or_401s_reason(
    overrides: dict[str, Any],
) -> None:
    # Signed with the provider's own key, so only the claims' values can be wrong; signed as
    # raw JSON, since PyJWT would refuse to make some of these tokens.
    claims = {**jwt.decode(token(), options={"verify_signature": False}), **overrides}
    signed = jwt.api_jws.encode(
        json.dumps(claims).encode(), PROVIDER_KEY, algorithm="RS256", headers={"kid": "k1"}
    )
    _refused_or_accepted(FakeProvider().verifier(), signed)


# -- the issuer's keys, when it cannot be reached or answers nonsense -----------------------


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        monkeypatch.setattr(access.time, "monotonic", lambda: self.now)


class FlakyProvider(FakeProvider):
    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.asked = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.asked += 1
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        return super().handler(request)


async def test_keys_stay_usable_for_a_bounded_time_while_the_provider_is_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(monkeypatch)
    provider = FlakyProvider()
    jwks = Jwks(
        ISSUER,
        ttl=3600,
        min_refetch=30,
        max_stale=900,
        transport=httpx.MockTransport(provider.handler),
    )
    verifier = TokenVerifier(jwks, CLIENT)
    await verifier.verify(token())
    provider.down = True
    clock.now += 3601  # the keys are due for a refetch, which fails
    asked = provider.asked
    assert (await verifier.verify(token())).subject == "user-1"
    assert provider.asked == asked + 1
    clock.now += 10  # within min_refetch: no new attempt holds the request up
    await verifier.verify(token())
    assert provider.asked == asked + 1
    clock.now += 900  # past the bound: refused, saying why without the provider's text
    with pytest.raises(
        Unauthenticated, match=r"cannot fetch the identity provider's keys \(ConnectError\)"
    ):
        await verifier.verify(token())
    provider.down = False
    clock.now += 31
    assert (await verifier.verify(token())).subject == "user-1"


def _answering(discovery: Any, keys: Any) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/openid-configuration"):
            return httpx.Response(200, json=discovery)
        return httpx.Response(200, json=keys)

    return httpx.MockTransport(handler)


GOOD_DISCOVERY = {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/keys"}
BROKEN_PROVIDERS = {
    "discovery is a list": ([GOOD_DISCOVERY], {}),
    "jwks_uri is a number": ({"issuer": ISSUER, "jwks_uri": 5}, {}),
    "jwks_uri is no URL": ({"issuer": ISSUER, "jwks_uri": "http://[::1"}, {}),
    "another issuer": ({"issuer": "http://evil.example", "jwks_uri": f"{ISSUER}/keys"}, {}),
    "keys is a string": (GOOD_DISCOVERY, {"keys": "k1"}),
    "the key set is a list": (GOOD_DISCOVERY, [FakeProvider().jwk]),
    "keys that are not keys": (
        GOOD_DISCOVERY,
        {"keys": [1, {"kid": "k1", "kty": "RSA", "n": "x"}, {"kid": "k1", "kty": "nope"}]},
    ),
}


@pytest.mark.parametrize("answers", BROKEN_PROVIDERS.values(), ids=BROKEN_PROVIDERS.keys())
async def test_a_provider_answering_nonsense_makes_tokens_401s_not_500s(
    answers: tuple[Any, Any],
) -> None:
    verifier = TokenVerifier(Jwks(ISSUER, transport=_answering(*answers)), CLIENT)
    with pytest.raises(Unauthenticated):
        await verifier.verify(token())


# -- actions come from the console's own pages ------------------------------------------------


@pytest.fixture
async def acting() -> AsyncIterator[httpx.AsyncClient]:
    """An app acting through Access's operator dependency, as the monitor's actions do."""
    guard = Access(
        AccessSettings(issuer=ISSUER, client_id=CLIENT),
        FakeProvider().verifier(),
        "https://loupe.example.org/console",
    )
    app = FastAPI()
    guard.install(app, "test")

    async def act(who: Identity) -> dict[str, str]:
        return {"by": who.email}

    # The dependency is the app's own, so it is set here rather than named in the signature
    # (which this module's postponed annotations would leave unresolvable).
    act.__annotations__["who"] = guard.operator
    app.add_api_route("/act", act, methods=["POST"])

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        client.headers["Authorization"] = f"Bearer {token()}"
        yield client


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://loupe.example.org"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://loupe.example.org", "Sec-Fetch-Site": "cross-site"},
    ],
)
async def test_an_action_another_site_made_the_browser_send_is_403(
    acting: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await acting.post("/act", headers=headers)
    assert response.status_code == 403, response.text
    assert response.json()["detail"].startswith("refused: ")


@pytest.mark.parametrize(
    "headers",
    [
        {},  # a script: no Origin, no Sec-Fetch-Site; its token is its proof
        {"Origin": "https://Loupe.example.org", "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
    ],
)
async def test_an_action_from_the_console_or_a_script_passes(
    acting: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await acting.post("/act", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"by": "devops@example.com"}
