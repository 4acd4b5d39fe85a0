"""A service's HTTP side: the FastAPI app its routes hang on (health, refusals as 409/404, the
dependencies routes declare), the order views it answers with, and serving it with uvicorn."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from types import FrameType
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel
from starlette.types import ASGIApp

from loupe.config import SERVICE_NAMES, Settings
from loupe.database import RETRY_AFTER_SECONDS, UNAVAILABLE
from loupe.environment import Network
from loupe.hosts import answer_only_known_hosts
from loupe.objectstore import ObjectStore
from loupe.orders import IllegalTransition
from loupe.service.kernel import ServiceKernel
from loupe.service.orders_table import OrderNotFound, OrderTable
from loupe.telemetry import edge
from loupe.telemetry.edge import (
    TRUSTED_CLIENTS,
    TraceKey,
    UntrustedTraceContext,
    link_untrusted_caller,
)

View = TypeVar("View", bound=BaseModel)
log = logging.getLogger(__name__)


def create_app(
    kernel: ServiceKernel,
    orders: OrderTable,
    description: str,
    routers: Sequence[APIRouter],
    store: ObjectStore | None = None,
) -> FastAPI:
    """The app of one service, titled with its service.name: its kernel starts and stops with
    it; routes reach the order table, the object store (shop and MES keep 3D models) and the
    settings through the dependencies below."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await kernel.start()
        try:
            restated = await orders.restate_recent()
        except UNAVAILABLE as exc:
            # Best effort: the orders are safe whatever the monitor believes.
            log.warning("%s: could not restate recent orders: %s", kernel.service_name, exc)
        else:
            log.info("%s: restated %d recently changed orders", kernel.service_name, restated)
        try:
            yield
        finally:
            await kernel.stop()

    app = FastAPI(
        title=kernel.service_name, description=description, version="0.1.0", lifespan=lifespan
    )
    app.state.orders = orders
    app.state.store = store
    app.state.settings = kernel.settings
    answer_only_known_hosts(app, kernel.settings)

    @app.get("/healthz", tags=["operations"], summary="Ready: database and broker connected")
    async def healthz() -> JSONResponse:
        problems = await kernel.health()
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, 503)
        return JSONResponse({"status": "ok", "service": kernel.service_name})

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Accepting orders: the database answers (events wait in the outbox if RabbitMQ "
        "does not)",
    )
    async def readyz() -> JSONResponse:
        problems = await kernel.health()
        if "database" in problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, 503)
        return JSONResponse({"status": "ready", "service": kernel.service_name})

    @app.exception_handler(IllegalTransition)
    async def illegal(_: Request, exc: IllegalTransition) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc), "status": exc.current.value, "requested": exc.wanted.value},
            409,
        )

    # Only the database may refuse a request (events wait in the outbox when RabbitMQ is
    # away): a 503 with Retry-After tells clients and proxies to come back, a 500 would not.
    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("answering 503, the database is unavailable: %s: %s", type(exc).__name__, exc)
        return JSONResponse(
            {"detail": f"{kernel.service_name}'s database is unavailable; retry shortly"},
            503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    for error in UNAVAILABLE:
        app.add_exception_handler(error, unavailable)

    @app.exception_handler(OrderNotFound)
    async def missing(_: Request, exc: OrderNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 404)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        # Prometheus text: how this process's spans fared on their way to Jaeger, and the
        # process's own figures.
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    return app


def _orders(request: Request) -> OrderTable:
    orders: OrderTable = request.app.state.orders
    return orders


def _store(request: Request) -> ObjectStore:
    store: ObjectStore = request.app.state.store
    return store


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


Orders = Annotated[OrderTable, Depends(_orders)]
Store = Annotated[ObjectStore, Depends(_store)]
ServiceSettings = Annotated[Settings, Depends(_settings)]


def field_error(field: str, message: str) -> HTTPException:
    """A 422 that names the offending field, like FastAPI's own validation errors do."""
    return HTTPException(422, {"field": field, "message": message})


def order_view(view: type[View], row: Mapping[str, Any]) -> View:
    """An order row as a service's API shows it: its own columns only, prices as numbers and
    times in ISO 8601."""
    data = {name: row[name] for name in view.model_fields if name in row}
    for name, value in data.items():
        if isinstance(value, Decimal):
            data[name] = float(value)
        elif isinstance(value, datetime):
            data[name] = value.isoformat()
    return view(**data)


def serve(
    app: FastAPI,
    host: str,
    port: int,
    excluded_urls: str = "healthz,readyz,metrics",
) -> None:
    """Serve the app, `instrumented`, with uvicorn until SIGINT/SIGTERM, then flush
    telemetry."""
    import uvicorn

    from loupe.telemetry import shutdown_telemetry

    config = uvicorn.Config(
        instrumented(app, excluded_urls, TRUSTED_CLIENTS.read(), edge.process_key()),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        # The TCP peer is who decides whether a trace context is trusted (telemetry/edge.py):
        # X-Forwarded-For, which any local process can send, must not replace it.
        proxy_headers=False,
    )
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the handler it
    # found. With the default one that kills the process before the `finally` below, and the
    # spans of its last seconds were never sent (orders then looked stuck after a restart).
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        asyncio.run(uvicorn.Server(config).serve())
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutdown_telemetry()


def instrumented(
    app: FastAPI,
    excluded_urls: str = "healthz,readyz,metrics",
    trusted: tuple[Network, ...] = (),
    key: TraceKey | None = None,
    tracer_provider: TracerProvider | None = None,
) -> ASGIApp:
    """The app traced, behind the public edge: only the trace context of `trusted` clients,
    and of requests `key` vouches for, is continued (telemetry/edge.py). `excluded_urls`
    (comma-separated regular expressions) are served untraced."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # The ASGI receive/send sub-spans add nothing an operator reads; health probes are noise.
    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls=excluded_urls,
        exclude_spans=["receive", "send"],
        server_request_hook=link_untrusted_caller,
        tracer_provider=tracer_provider,
    )
    return UntrustedTraceContext(app, trusted, key)


def _exit_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def run_service(service: str, port: int | None = None) -> None:
    """Run one order service until SIGINT/SIGTERM."""
    import importlib

    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    from loupe.stack.gateway import SECRETS_DIR, trace_context_key
    from loupe.telemetry import configure_telemetry
    from loupe.telemetry.statements import trace_statements

    settings = Settings.from_env()
    if configure_telemetry(SERVICE_NAMES[service]) is not None:
        trace_statements()
    HTTPXClientInstrumentor().instrument()
    # Like the propagator, one per process: the services vouch for their calls to each other.
    edge.use_process_key(TraceKey(trace_context_key(SECRETS_DIR.read())))
    module = importlib.import_module(f"loupe.{service}.app")
    serve(module.create_app(settings), settings.host, port or settings.port(service))
