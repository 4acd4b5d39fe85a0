"""mes-api: prices orders from their 3D model, takes B2B partners' orders, and runs the
operators' work queue (pricing in pricing.py, its queue in handlers.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI

from loupe.config import Settings
from loupe.mes import handlers, routes
from loupe.mes.pricing import PricingLimits
from loupe.objectstore import ObjectStore
from loupe.service import http, model_files
from loupe.service.kernel import ServiceKernel
from loupe.service.orders_table import OrderTable
from loupe.telemetry import edge

DESCRIPTION = "The manufacturing system's API: pricing, B2B intake and the operators' work queue."


def create_app(settings: Settings) -> FastAPI:
    kernel = ServiceKernel("mes", settings, Path(__file__).parent / "migrations")
    orders = OrderTable(kernel)
    # Models come from the shop's (or MES's own) API: the request vouches for its trace, so
    # the download stays in the order's trace (telemetry/edge.py).
    client = httpx.AsyncClient(timeout=httpx.Timeout(10.0), event_hooks={"request": [edge.vouch]})
    kernel.on_stop(client.aclose)
    intake = handlers.Intake(
        orders,
        client,
        settings.pricing_seconds,
        PricingLimits(settings.pricing_max_triangles, settings.pricing_timeout_seconds),
        settings.max_model_bytes,
        handlers.model_sources(settings.service_urls),
    )
    handlers.subscribe(kernel, orders, intake)
    store = ObjectStore(settings.object_store("mes"))
    app = http.create_app(kernel, orders, DESCRIPTION, [routes.router, routes.models], store=store)
    model_files.keep_models(app, kernel, store)
    return app
