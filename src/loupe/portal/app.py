"""The portal's FastAPI app: who is signed in, and the dead-letter queue by role."""

import html
import logging
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

from loupe.portal.auth import Identity, Jwks, TokenVerifier, Unauthenticated
from loupe.portal.deadletters import list_dead_letters, requeue_dead_letters
from loupe.portal.settings import PortalSettings

log = logging.getLogger(__name__)

Role = Literal["operator", "reader", "none"]


class Forbidden(Exception):
    def __init__(self, message: str, needed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.needed = needed


class RequeueRequest(BaseModel):
    order_id: str | None = None


def role_of(identity: Identity, settings: PortalSettings) -> Role:
    groups = set(identity.groups)
    if groups & set(settings.act_groups):
        return "operator"
    if groups & set(settings.read_groups):
        return "reader"
    return "none"


def create_app(settings: PortalSettings, verifier: TokenVerifier | None = None) -> FastAPI:
    verifier = verifier or TokenVerifier(
        Jwks(settings.issuer), settings.client_id, settings.groups_claim
    )
    app = FastAPI(
        title="loupe-portal",
        description="loupe's own pages behind the sign-in gateway.",
    )

    async def identity(request: Request) -> Identity:
        # Only the ID token counts; X-Forwarded-User, -Email and -Groups are ignored.
        return await verifier.verify_header(request.headers.get("authorization"))

    Who = Annotated[Identity, Depends(identity)]

    def require(who: Identity, role: Role) -> None:
        granted = role_of(who, settings)
        if role == "reader" and granted in ("reader", "operator"):
            return
        if role == "operator" and granted == "operator":
            return
        needed = settings.act_groups if role == "operator" else settings.read_groups
        raise Forbidden(
            f"{who.email or who.subject} is not in a group allowed to do this; "
            f"it needs one of: {', '.join(needed)}",
            needed,
        )

    def whoami_body(who: Identity) -> dict[str, Any]:
        role = role_of(who, settings)
        return {
            "email": who.email,
            "subject": who.subject,
            "groups": list(who.groups),
            "role": role,
            "can_read": role in ("reader", "operator"),
            "can_act": role == "operator",
        }

    @app.exception_handler(Unauthenticated)
    async def unauthenticated(_: Request, exc: Unauthenticated) -> JSONResponse:
        return JSONResponse(
            {"error": "unauthenticated", "detail": str(exc)},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="loupe-portal"'},
        )

    @app.exception_handler(Forbidden)
    async def forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return JSONResponse(
            {"error": "forbidden", "detail": str(exc), "needs_group": list(exc.needed)},
            status_code=403,
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/whoami")
    async def whoami(who: Who) -> dict[str, Any]:
        return whoami_body(who)

    @app.get("/", response_class=HTMLResponse)
    async def home(who: Who) -> HTMLResponse:
        body = whoami_body(who)
        role = {
            "operator": "operator — may read and requeue dead letters",
            "reader": "reader — may read",
            "none": "no role — in no group loupe knows",
        }[body["role"]]
        groups = ", ".join(body["groups"]) or "no group"
        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>loupe</title></head>
<body>
<h1>loupe</h1>
<p>Signed in as <strong>{html.escape(body["email"] or body["subject"])}</strong>
({html.escape(groups)}).</p>
<p>Role: {html.escape(role)}</p>
<ul>
<li><a href="/api/dead-letters">Dead letters</a></li>
<li><a href="/jaeger/api/services">Jaeger API: services</a></li>
</ul>
<p><a href="/oauth2/sign_out">Sign out</a></p>
</body></html>
"""
        return HTMLResponse(page)

    @app.get("/api/dead-letters")
    async def dead_letters(who: Who, limit: int = 100) -> dict[str, Any]:
        require(who, "reader")
        letters = await list_dead_letters(settings, max(1, min(limit, 1000)))
        return {"count": len(letters), "dead_letters": letters}

    @app.post("/api/dead-letters/requeue")
    async def requeue(who: Who, request: RequeueRequest | None = None) -> dict[str, Any]:
        require(who, "operator")
        order_id = request.order_id if request else None
        result = await requeue_dead_letters(settings, who.email or who.subject, order_id)
        log.warning(
            "%s requeued %d dead letter(s)%s",
            who.email or who.subject,
            len(result["requeued"]),
            f" of order {order_id}" if order_id else "",
        )
        return {"requested_by": who.email or who.subject, **result}

    return app


def run_portal() -> None:
    """Run loupe-portal until SIGINT/SIGTERM."""
    from loupe.runtime import serve
    from loupe.telemetry import configure_telemetry

    settings = PortalSettings.from_env()
    configure_telemetry("loupe-portal")
    serve(create_app(settings), settings.host, settings.port)
