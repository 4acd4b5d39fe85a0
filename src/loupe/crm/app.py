"""crm-api: sellers see priced orders, approve or reject manufacturing, ship and close.

CRM learns of every order and status through its own queue on the status topic; the
decisions its sellers take are published back on the same topic for MES and the shop.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from loupe.config import Settings
from loupe.crm import handlers, routes
from loupe.service import http
from loupe.service.kernel import ServiceKernel
from loupe.service.orders_table import OrderTable

DESCRIPTION = "The CRM's API: sellers decide on and ship orders."


def create_app(settings: Settings) -> FastAPI:
    kernel = ServiceKernel("crm", settings, Path(__file__).parent / "migrations")
    orders = OrderTable(kernel)
    handlers.subscribe(kernel, orders)
    return http.create_app(kernel, orders, DESCRIPTION, [routes.router])
