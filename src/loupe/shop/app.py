"""shop-api: customers place orders with a 3D model and follow their status.

The company's diagram has CRM API writing the Shop DB directly. loupe keeps the databases
apart instead: the shop follows status events on its own queue, so no service reaches into
another's schema and every change that reaches the shop is a traced message (see
docs/architecture.md).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from loupe.config import Settings
from loupe.objectstore import ObjectStore
from loupe.service import http, model_files
from loupe.service.kernel import ServiceKernel
from loupe.service.orders_table import OrderTable
from loupe.shop import handlers, routes

DESCRIPTION = "The online shop's API: customers place orders with a 3D model."


def create_app(settings: Settings) -> FastAPI:
    kernel = ServiceKernel("shop", settings, Path(__file__).parent / "migrations")
    orders = OrderTable(kernel)
    handlers.subscribe(kernel, orders)
    store = ObjectStore(settings.object_store("shop"))
    app = http.create_app(kernel, orders, DESCRIPTION, [routes.router, routes.models], store=store)
    model_files.keep_models(app, kernel, store)
    return app
