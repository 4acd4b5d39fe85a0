"""loupe-portal: the console's pages and its JSON API, behind the sign-in gateway."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from loupe.access import Access, TokenVerifier
from loupe.hosts import answer_only_known_hosts
from loupe.portal import actions, pages
from loupe.portal.console import Console
from loupe.portal.monitor_api import MonitorRefused, MonitorUnavailable
from loupe.portal.settings import PortalSettings

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


def create_app(
    settings: PortalSettings,
    verifier: TokenVerifier | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """`transport` replaces the network for the monitor and Jaeger (tests only)."""
    access = Access(settings.access, verifier)

    # trust_env=False: the monitor and Jaeger are on this machine; a proxy from the
    # environment must not see the person's token.
    client = httpx.AsyncClient(timeout=10.0, trust_env=False, transport=transport)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with client:
            yield

    app = FastAPI(
        title="loupe-portal",
        description="loupe's console and its API, behind the sign-in gateway.",
        lifespan=lifespan,
    )
    app.state.console = Console(settings, access, client)
    answer_only_known_hosts(app, settings.base)
    access.install(app, "loupe-portal")

    @app.exception_handler(MonitorRefused)
    async def refused(_: Request, exc: MonitorRefused) -> JSONResponse:
        if exc.status_code == 409:
            return JSONResponse({"error": "conflict", "detail": str(exc)}, status_code=409)
        return JSONResponse({"error": "forbidden", "detail": str(exc)}, status_code=403)

    @app.exception_handler(MonitorUnavailable)
    async def unavailable(_: Request, exc: MonitorUnavailable) -> JSONResponse:
        return JSONResponse({"error": "unavailable", "detail": str(exc)}, status_code=503)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(actions.router)
    app.include_router(pages.router)
    return app


def run_portal() -> None:
    """Run loupe-portal until SIGINT/SIGTERM."""
    from loupe.service.http import serve
    from loupe.telemetry import configure_telemetry

    settings = PortalSettings.from_env()
    configure_telemetry("loupe-portal")
    # The Now page's panel is asked for every second by every open page: tracing it would
    # bury the spans people look for.
    serve(
        create_app(settings),
        settings.host,
        settings.port,
        excluded_urls="healthz,static,now/panel",
    )
