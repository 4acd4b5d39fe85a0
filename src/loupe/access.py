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
from urllib.parse import urlsplit

import httpx
import jwt
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from loupe.environment import EnvSettings, Variable, names_or_default, number, url

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
    early refetch (at most every `min_refetch` seconds), so key rotation is picked up. When a
    refetch fails (the provider briefly unreachable, or answering nonsense), the keys held
    stay in use for up to `max_stale` seconds past their `ttl`, and the next try waits
    `min_refetch`, so requests are neither refused nor held up by each failed fetch. Past that
    bound, or with no keys at all, tokens are refused: a key the provider revoked must not
    stay good for ever.
    """

    def __init__(
        self,
        issuer: str,
        *,
        ttl: float = 3600.0,
        min_refetch: float = 30.0,
        max_stale: float = 900.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self._ttl = ttl
        self._min_refetch = min_refetch
        self._max_stale = max_stale
        self._transport = transport
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._tried_at = float("-inf")
        self._problem: str | None = None
        self._lock = asyncio.Lock()

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        async with httpx.AsyncClient(
            transport=self._transport, timeout=5.0, trust_env=False
        ) as client:
            discovery = await client.get(f"{self.issuer}/.well-known/openid-configuration")
            discovery.raise_for_status()
            document = discovery.json()
            if not isinstance(document, dict):
                raise ValueError("the discovery document is not a JSON object")
            if str(document.get("issuer", "")).rstrip("/") != self.issuer:
                raise ValueError("the discovery document names another issuer")
            jwks_uri = document.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise ValueError("the discovery document names no jwks_uri")
            answer = await client.get(jwks_uri)
            answer.raise_for_status()
        published = answer.json()
        listed = published.get("keys") if isinstance(published, dict) else None
        if not isinstance(listed, list):
            raise ValueError("the key set is not a JSON object with a list of keys")
        keys = {}
        for data in listed:
            if not isinstance(data, dict) or data.get("use", "sig") != "sig":
                continue
            if not isinstance(data.get("kid"), str):
                continue
            try:
                keys[data["kid"]] = jwt.PyJWK(data)
            except (jwt.PyJWTError, ValueError, TypeError):
                continue
        return keys

    async def key(self, kid: str) -> jwt.PyJWK:
        async with self._lock:
            now = time.monotonic()
            age = now - self._fetched_at
            due = age > self._ttl or (kid not in self._keys and age > self._min_refetch)
            if due and now - self._tried_at > self._min_refetch:
                self._tried_at = now
                try:
                    self._keys = await self._fetch()
                except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
                    # Never the provider's own text: it could echo anything back to a caller.
                    self._problem = (
                        f"cannot fetch the identity provider's keys ({type(exc).__name__})"
                    )
                else:
                    self._fetched_at, self._problem = now, None
            if time.monotonic() - self._fetched_at > self._ttl + self._max_stale:
                raise Unauthenticated(
                    self._problem or "the identity provider's keys are out of date"
                )
        if kid not in self._keys:
            raise Unauthenticated(
                self._problem
                or "the token is signed with a key the identity provider does not publish"
            )
        return self._keys[kid]


MAX_TOKEN_LENGTH = 16 * 1024
"""Longer is no ID token (a provider's run to a few kilobytes); refused before any parsing."""


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
        """The identity a valid ID token names; any other token, however malformed, raises
        Unauthenticated (a 401), never anything else."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated(f"malformed token: over {MAX_TOKEN_LENGTH} characters")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise Unauthenticated(f"malformed token: {type(exc).__name__}") from exc
        algorithm, kid = header.get("alg"), header.get("kid")
        if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
            raise Unauthenticated(f"token algorithm {str(algorithm)[:20]!r} is not accepted")
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
        # A key of another type than the algorithm (an EC algorithm naming an RSA key's kid)
        # makes PyJWT raise TypeError or InvalidKeyError rather than an invalid-token error.
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise Unauthenticated(
                f"the token's algorithm {algorithm} does not fit the key it names"
            ) from exc
        self._check_authorized_party(claims)
        groups = claims.get(self._groups_claim) or []
        if not isinstance(groups, list):
            groups = []
        return Identity(
            subject=str(claims["sub"]),
            email=str(claims.get("email", "")),
            groups=tuple(str(g) for g in groups),
            claims=claims,
        )

    def _check_authorized_party(self, claims: dict[str, Any]) -> None:
        """OpenID Connect Core 3.1.3.7: a token for several audiences must name, in `azp`, the
        client it was issued to, and that must be ours; otherwise another client that shares
        the audience could pass its tokens off as ours."""
        audience = claims["aud"]
        several = isinstance(audience, list) and len(audience) > 1
        party = claims.get("azp")
        if several and party is None:
            raise Unauthenticated("the token names several audiences and no authorized party (azp)")
        if party is not None and party != self._client_id:
            raise Unauthenticated("the token was issued to another client (azp)")


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

KEYS_MAX_STALE = Variable(
    "LOUPE_OIDC_KEYS_MAX_STALE_SECONDS",
    900.0,
    "the issuer's signing keys are fetched again hourly; while it cannot be reached, the keys"
    " held stay in use this much longer (a refetch is tried every 30 s), then tokens get 401",
    number,
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
    keys_max_stale: float = KEYS_MAX_STALE.field()


class CrossSiteRefused(Exception):
    """An action that does not come from the console's own pages; the text says why."""


# What a browser's Sec-Fetch-Site says of a request the console's own page made, or one a
# person made by typing the URL. "same-site" is not enough: another port of 127.0.0.1, or
# another subdomain, is the same site.
_OWN_REQUESTS = ("same-origin", "none")


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def refuse_cross_site(request: Request, allowed_origins: tuple[str, ...]) -> None:
    """Refuses an action a page of another site made the browser send. Browsers say where a
    request comes from, and a page cannot make them lie: Origin on every cross-origin POST,
    Sec-Fetch-Site on every request (the current Chromium, Firefox and Safari). Either, when
    present, must say the console. A script sends neither, and proves itself with its token.
    This comes on top of the session cookie's SameSite=Lax, which older browsers ignore."""
    origin = request.headers.get("origin")
    if origin is not None and origin.lower() not in allowed_origins:
        raise CrossSiteRefused(
            f"refused: this action comes from {origin[:200]}, not from the console "
            f"({', '.join(allowed_origins)})"
        )
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.lower() not in _OWN_REQUESTS:
        raise CrossSiteRefused(
            f"refused: the browser says this action comes from a {site[:40]} page, not from"
            " the console"
        )


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

    def __init__(
        self,
        settings: AccessSettings,
        verifier: TokenVerifier | None = None,
        console_url: str | None = None,
    ) -> None:
        """`console_url`: actions (the `operator` dependency) must come from its origin
        (refuse_cross_site)."""
        self.settings = settings
        self.allowed_origins = (origin_of(console_url),) if console_url else ()
        self.verifier = verifier or TokenVerifier(
            Jwks(settings.issuer, max_stale=settings.keys_max_stale),
            settings.client_id,
            settings.groups_claim,
        )

        # The dependencies routes declare: a person allowed to read, or to act; else 403.
        self.reader = Annotated[Identity, Depends(self._requiring("reader"))]
        self.operator = Annotated[Identity, Depends(self._requiring("operator"))]

    def _requiring(self, role: Role) -> Callable[[Request], Awaitable[Identity]]:
        async def dependency(request: Request) -> Identity:
            who = await self.identity(request)
            self.require(who, role)
            if role == "operator":
                refuse_cross_site(request, self.allowed_origins)
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

        @app.exception_handler(CrossSiteRefused)
        async def cross_site(_: Request, exc: CrossSiteRefused) -> JSONResponse:
            return JSONResponse({"error": "forbidden", "detail": str(exc)}, status_code=403)

        @app.exception_handler(Forbidden)
        async def forbidden(_: Request, exc: Forbidden) -> JSONResponse:
            return JSONResponse(
                {"error": "forbidden", "detail": str(exc), "needs_group": list(exc.needed)},
                status_code=403,
            )
