"""The console's HTML: Jinja2 templates from this package, with the filters the pages share
(times in UTC with a relative form, durations, deep links)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from loupe.portal import links


def utc(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else ""


def seconds(value: float | None) -> str:
    """A duration as people say it: 850 ms, 42 s, 7 min, 3.5 h, 2.1 d."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    if value < 48 * 3600:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} d"


def ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "-"
    delta = ((now or datetime.now(UTC)) - value).total_seconds()
    if -1 < delta < 1:
        return "just now"
    return f"{seconds(abs(delta))} ago" if delta > 0 else f"in {seconds(-delta)}"


def microseconds(value: int) -> str:
    return seconds(value / 1_000_000)


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 time from a message header; None when absent or not a time."""
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def short(identifier: str | None, keep: int = 8) -> str:
    return (identifier or "")[:keep]


_environment = Environment(
    loader=PackageLoader("loupe.portal", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.filters.update(
    utc=utc,
    iso=iso,
    ago=ago,
    seconds=seconds,
    microseconds=microseconds,
    short=short,
    parse_time=parse_time,
)
_environment.globals.update(
    order_path=links.order_path, incident_path=links.incident_path, trace_path=links.trace_path
)


def page(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = _environment.get_template(template).render(now=datetime.now(UTC), **context)
    return HTMLResponse(html, status_code=status_code)
