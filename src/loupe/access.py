"""Who may read and who may act: the OIDC ID token the gateway passes as
`Authorization: Bearer <token>`, verified, and the role its groups give.

loupe-portal and the monitor's API both sit behind the gateway and use this.

The signature is checked against the issuer's published keys (JWKS, found through its discovery
document and cached), then `iss`, `aud` (our client id) and `exp`. Headers such as
X-Forwarded-User are never read: anyone who reaches the portal directly could set them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import httpx
import jwt
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from loupe.environment import EnvSettings, Variable, names_or_default, url

# Asymmetric algorithms only: an HMAC "signature" made with a public key must never pass.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
LEEWAY_SECONDS = 30


class Unauthenticated(Exception):
    """No valid ID token; the text says why (safe to show the caller)."""


@dataclass(frozen=True)
class Identity:
    subject: str
    email: str
    groups: tuple[str, ...]
    claims: dict[str, Any]


class Jwks:
    """The issuer's signing keys, fetched through its discovery document and cached.

    Keys are kept for `ttl` seconds; a token signed with a key id not seen yet triggers one
    early refetch (at most every `min_refetch` seconds), so key rotation is picked up.
    """

    def __init__(
        self,
        issuer: str,
        *,
        ttl: float = 3600.0,
        min_refetch: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self._ttl = ttl
        self._min_refetch = min_refetch
        self._transport = transport
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def _fetch(self) -> None:
        async with httpx.AsyncClient(
            transport=self._transport, timeout=5.0, trust_env=False
        ) as client:
            discovery = await client.get(f"{self.issuer}/.well-known/openid-configuration")
            discovery.raise_for_status()
            document = discovery.json()
            if document.get("issuer", "").rstrip("/") != self.issuer:
                raise Unauthenticated(
                    "the identity provider's discovery document names another issuer"
                )
            answer = await client.get(document["jwks_uri"])
            answer.raise_for_status()
        keys = {}
        for data in answer.json().get("keys", []):
            if data.get("use", "sig") != "sig" or "kid" not in data:
                continue
            try:
                keys[data["kid"]] = jwt.PyJWK(data)
            except jwt.PyJWKError:
                continue
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def key(self, kid: str) -> jwt.PyJWK:
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            if age > self._ttl or (kid not in self._keys and age > self._min_refetch):
                try:
                    await self._fetch()
                except (httpx.HTTPError, KeyError, ValueError) as exc:
                    raise Unauthenticated(
                        f"cannot fetch the identity provider's keys ({type(exc).__name__})"
                    ) from exc
        if kid not in self._keys:
            raise Unauthenticated(
                "the token is signed with a key the identity provider does not publish"
            )
        return self._keys[kid]


class TokenVerifier:
    def __init__(self, jwks: Jwks, client_id: str, groups_claim: str = "groups") -> None:
        self._jwks = jwks
        self._client_id = client_id
        self._groups_claim = groups_claim

    async def verify_header(self, authorization: str | None) -> Identity:
        """The identity in an `Authorization: Bearer <ID token>` header, or Unauthenticated."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                "no ID token: sign in through the gateway, which passes it as "
                "'Authorization: Bearer <token>'"
            )
        return await self.verify(token.strip())

    async def verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"malformed token: {exc}") from exc
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALGORITHMS:
            raise Unauthenticated(f"token algorithm {algorithm!r} is not accepted")
        if not isinstance(kid, str):
            raise Unauthenticated("the token names no signing key (kid)")
        key = await self._jwks.key(kid)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self._client_id,
                issuer=self._jwks.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the token has expired; sign in again") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated("the token was issued for another client") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated("the token comes from another issuer") from exc
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated("the token's signature does not verify") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from exc
        groups = claims.get(self._groups_claim) or []
        if not isinstance(groups, list):
            groups = []
        return Identity(
            subject=str(claims["sub"]),
            email=str(claims.get("email", "")),
            groups=tuple(str(g) for g in groups),
            claims=claims,
        )


# -- roles --------------------------------------------------------------------------------

Role = Literal["operator", "reader", "none"]
"""operator: may read and act (requeue, acknowledge, dismiss); reader: may read; none: neither."""

DEFAULT_ISSUER = "http://127.0.0.1:5556/dex"
DEFAULT_CLIENT_ID = "loupe-gateway"

ISSUER_URL = Variable(
    "LOUPE_OIDC_ISSUER_URL",
    DEFAULT_ISSUER,
    "the OpenID Connect issuer whose ID tokens are accepted; `loupe up` sets it to the gateway's",
    url,
    shown="Dex, `http://127.0.0.1:5556/dex`",
)
CLIENT_ID = Variable(
    "LOUPE_OIDC_CLIENT_ID",
    DEFAULT_CLIENT_ID,
    "the client id the ID tokens must be issued for (`aud`); `loupe up` sets it to the gateway's",
)
GROUPS_CLAIM = Variable(
    "LOUPE_OIDC_GROUPS_CLAIM", "groups", "the ID token's claim that lists the user's groups"
)
READ_GROUPS = Variable(
    "LOUPE_ALLOWED_GROUPS",
    ("devops", "developers"),
    "comma-separated; groups that may read (`loupe up`: the gateway's, unless set)",
    names_or_default,
)
ACT_GROUPS = Variable(
    "LOUPE_OPERATOR_GROUPS",
    ("devops",),
    "comma-separated; groups that may act (requeue, acknowledge, dismiss)",
    names_or_default,
)


@dataclass(frozen=True)
class AccessSettings(EnvSettings):
    """Whose ID tokens are accepted, where their groups are, who may read and who may act; the
    portal's and the monitor's API's."""

    issuer: str = ISSUER_URL.field()
    client_id: str = CLIENT_ID.field()
    groups_claim: str = GROUPS_CLAIM.field()
    read_groups: tuple[str, ...] = READ_GROUPS.field()
    act_groups: tuple[str, ...] = ACT_GROUPS.field()


class Forbidden(Exception):
    def __init__(self, message: str, needed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.needed = needed


def role_of(identity: Identity, settings: AccessSettings) -> Role:
    groups = set(identity.groups)
    if groups & set(settings.act_groups):
        return "operator"
    if groups & set(settings.read_groups):
        return "reader"
    return "none"


class Access:
    """The role check of one app: `reader` and `operator` are its FastAPI dependencies (a
    signed-in person allowed to read, or to act), `require` the check, and `install` adds the
    401/403 answers (JSON, with the reason) to the app."""

    def __init__(self, settings: AccessSettings, verifier: TokenVerifier | None = None) -> None:
        self.settings = settings
        self.verifier = verifier or TokenVerifier(
            Jwks(settings.issuer), settings.client_id, settings.groups_claim
        )

        # The dependencies routes declare: a person allowed to read, or to act; else 403.
        self.reader = Annotated[Identity, Depends(self._requiring("reader"))]
        self.operator = Annotated[Identity, Depends(self._requiring("operator"))]

    def _requiring(self, role: Role) -> Callable[[Request], Awaitable[Identity]]:
        async def dependency(request: Request) -> Identity:
            who = await self.identity(request)
            self.require(who, role)
            return who

        return dependency

    async def identity(self, request: Request) -> Identity:
        """Who sent the request, from its ID token, or Unauthenticated."""
        # Only the ID token counts; X-Forwarded-User, -Email and -Groups are ignored.
        return await self.verifier.verify_header(request.headers.get("authorization"))

    def role(self, who: Identity) -> Role:
        return role_of(who, self.settings)

    def require(self, who: Identity, role: Role) -> None:
        granted = self.role(who)
        if role == "reader" and granted in ("reader", "operator"):
            return
        if role == "operator" and granted == "operator":
            return
        needed = self.settings.act_groups if role == "operator" else self.settings.read_groups
        raise Forbidden(
            f"{who.email or who.subject} is not in a group allowed to do this; "
            f"it needs one of: {', '.join(needed)}",
            needed,
        )

    def install(self, app: FastAPI, realm: str) -> None:
        @app.exception_handler(Unauthenticated)
        async def unauthenticated(_: Request, exc: Unauthenticated) -> JSONResponse:
            return JSONResponse(
                {"error": "unauthenticated", "detail": str(exc)},
                status_code=401,
                headers={"WWW-Authenticate": f'Bearer realm="{realm}"'},
            )

        @app.exception_handler(Forbidden)
        async def forbidden(_: Request, exc: Forbidden) -> JSONResponse:
            return JSONResponse(
                {"error": "forbidden", "detail": str(exc), "needs_group": list(exc.needed)},
                status_code=403,
            )
