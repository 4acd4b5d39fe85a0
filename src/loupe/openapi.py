"""The services' OpenAPI documents, exported to files that are committed beside the code.

Building an app does no I/O (databases and RabbitMQ are opened by its lifespan, which never
runs here), so the export works offline and with default settings, making it reproducible.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from loupe.config import SERVICE_NAMES, SERVICES, Settings


def openapi_documents() -> dict[str, dict[str, Any]]:
    """Each service's OpenAPI document, keyed by its service name (shop-api, …)."""
    documents = {}
    for service in SERVICES:
        module = importlib.import_module(f"loupe.{service}.app")
        app = module.create_app(Settings())
        documents[SERVICE_NAMES[service]] = app.openapi()
    return documents


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export_openapi(folder: Path) -> list[Path]:
    """Write `<service-name>.json` for every service into `folder`; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in openapi_documents().items():
        path = folder / f"{name}.json"
        path.write_text(render(document), encoding="utf-8")
        written.append(path)
    return written
