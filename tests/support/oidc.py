"""A fake OpenID Connect provider for the portal's and the monitor's access tests: its
discovery document and JWKS through httpx's mock transport, and ID tokens signed by its key."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from loupe.access import Jwks, TokenVerifier

ISSUER = "http://127.0.0.1:5556/dex"
CLIENT = "loupe-gateway"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


PROVIDER_KEY = _key()
OTHER_KEY = _key()


class FakeProvider:
    """Discovery document and JWKS, counting how often the keys are fetched."""

    def __init__(self, key: rsa.RSAPrivateKey = PROVIDER_KEY, kid: str = "k1") -> None:
        self.jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": kid}
        self.jwks_fetches = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/dex/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": f"{ISSUER}/keys"})
        if request.url.path == "/dex/keys":
            self.jwks_fetches += 1
            return httpx.Response(200, json={"keys": [{**self.jwk, "use": "sig", "alg": "RS256"}]})
        return httpx.Response(404)

    def verifier(self) -> TokenVerifier:
        return TokenVerifier(Jwks(ISSUER, transport=httpx.MockTransport(self.handler)), CLIENT)


def token(
    *,
    key: rsa.RSAPrivateKey = PROVIDER_KEY,
    kid: str = "k1",
    groups: list[str] | None = None,
    **overrides: Any,
) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": "user-1",
        "email": "devops@example.com",
        "groups": ["devops"] if groups is None else groups,
        "iat": now,
        # Hours, not minutes: tokens made once per session outlive the e2e tests and drills
        # that run before the unit tests using them.
        "exp": now + 6 * 3600,
        **overrides,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
