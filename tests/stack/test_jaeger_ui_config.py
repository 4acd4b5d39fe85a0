"""deploy/jaeger/ui-config.json, the settings Jaeger puts into Jaeger UI's page."""

from __future__ import annotations

import json
from typing import Any

from loupe.portal import links
from loupe.stack.components import JAEGER_UI_CONFIG


def ui_config() -> dict[str, Any]:
    loaded = json.loads(JAEGER_UI_CONFIG.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_order_id_tag_links_to_the_consoles_order_page() -> None:
    (pattern,) = [
        p for p in ui_config()["linkPatterns"] if p["type"] == "tags" and p["key"] == "order.id"
    ]
    # The console's own path with Jaeger UI's placeholder where the order id goes: a change to
    # links.ORDER_PATH fails here until ui-config.json follows it.
    assert pattern["url"] == links.ORDER_PATH.format(order_id="#{order.id}")
    # Jaeger UI fills the placeholder with the tag's value, URL-encoded, as order_path() does.
    order_id = "0b6a3c1e-7f42-4d1e-9a55-1f2d3e4c5b6a"
    assert pattern["url"].replace("#{order.id}", order_id) == links.order_path(order_id)
    assert "#{order.id}" in pattern["text"]


def test_menu_dependencies_and_archive() -> None:
    config = ui_config()
    assert {"label": "loupe console", "url": "/", "anchorTarget": "_self"} in config["menu"]
    assert config["dependencies"] == {"menuEnabled": True}
    # No archive storage is configured, and no metrics storage for the Monitor tab.
    assert config["archiveEnabled"] is False
    assert config["monitor"] == {"menuEnabled": False}
