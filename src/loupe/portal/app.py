"""The portal's FastAPI app: who is signed in, and the dead-letter queue by role."""

import html
import logging
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from loupe.access import Access, Identity, TokenVerifier
from loupe.portal.deadletters import list_dead_letters, requeue_dead_letters
from loupe.portal.settings import PortalSettings

log = logging.getLogger(__name__)


class RequeueRequest(BaseModel):
    order_id: str | None = None


def create_app(settings: PortalSettings, verifier: TokenVerifier | None = None) -> FastAPI:
    access = Access(settings.access, verifier)
    app = FastAPI(
        title="loupe-portal",
        description="loupe's own pages behind the sign-in gateway.",
    )
    access.install(app, "loupe-portal")
    Who = access.who
    require = access.require

    def whoami_body(who: Identity) -> dict[str, Any]:
        role = access.role(who)
        return {
            "email": who.email,
            "subject": who.subject,
            "groups": list(who.groups),
            "role": role,
            "can_read": role in ("reader", "operator"),
            "can_act": role == "operator",
        }

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
