"""Deep links into loupe's console and into Jaeger UI behind the gateway.

The one home for these paths: the console's pages, the CLI, the webhooks and Jaeger UI's
link patterns (deploy/jaeger/ui-config.json) all point at the same places, so a link pasted
into a chat or a ticket keeps working.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

ORDER_PATH = "/orders/{order_id}"
INCIDENT_PATH = "/incidents/{incident_id}"
JAEGER_TRACE_PATH = "/jaeger/trace/{trace_id}"


def order_path(order_id: str) -> str:
    return ORDER_PATH.format(order_id=quote(order_id, safe=""))


def incident_path(incident_id: int) -> str:
    return INCIDENT_PATH.format(incident_id=int(incident_id))


def trace_path(trace_id: str, span_id: str | None = None) -> str:
    """Jaeger UI's trace page; with `span_id`, the span is found and highlighted (uiFind)."""
    path = JAEGER_TRACE_PATH.format(trace_id=quote(trace_id, safe=""))
    return f"{path}?{urlencode({'uiFind': span_id})}" if span_id else path


def absolute(base_url: str, path: str) -> str:
    """`path` under the console's public base URL (LOUPE_CONSOLE_URL)."""
    return base_url.rstrip("/") + path
