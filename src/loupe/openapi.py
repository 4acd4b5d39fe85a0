"""The HTTP APIs' OpenAPI documents, exported to files that are committed beside the code:
the three order services' and loupe-monitor's.

Building an app does no I/O (databases and RabbitMQ are opened by its lifespan, which never
runs here; the monitor reads only its SLO file), so the export works offline and with default
settings, making it reproducible.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from loupe.config import SERVICE_NAMES, SERVICES, Settings

MONITOR_NAME = "loupe-monitor"


def openapi_documents() -> dict[str, dict[str, Any]]:
    """Each API's OpenAPI document, keyed by its service name (shop-api, …, loupe-monitor)."""
    documents = {}
    for service in SERVICES:
        module = importlib.import_module(f"loupe.{service}.app")
        app = module.create_app(Settings())
        documents[SERVICE_NAMES[service]] = app.openapi()
    documents[MONITOR_NAME] = _monitor_document()
    return documents


def _monitor_document() -> dict[str, Any]:
    from loupe.monitor.app import create_app
    from loupe.monitor.settings import MonitorSettings

    return create_app(MonitorSettings(), run_loops=False).openapi()


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export_openapi(folder: Path) -> list[Path]:
    """Write `<service-name>.json` for every API into `folder`; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in openapi_documents().items():
        path = folder / f"{name}.json"
        path.write_text(render(document), encoding="utf-8")
        written.append(path)
    return written
