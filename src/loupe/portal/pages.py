"""The console's pages: Now (what is stuck or broken), an order, incidents, dead letters, and
the search box. Server-rendered; the Now page refreshes its panel by itself."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Annotated

import httpx
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, RedirectResponse

from loupe.monitor.models import FindingKind, Journey
from loupe.portal import charts, links, places, waterfall
from loupe.portal.console import ConsoleDep, Reader
from loupe.portal.deadletters import list_dead_letters
from loupe.portal.jaeger_api import JaegerUnavailable, Trace
from loupe.portal.monitor_api import MonitorUnavailable
from loupe.portal.render import page

router = APIRouter(tags=["console"], include_in_schema=False)

TRACE_ID = re.compile(r"^[0-9a-f]{16}$|^[0-9a-f]{32}$")
# The Now page asks again this often; with detection every 0.5 s it is never more than
# about 1.5 s behind the monitor.
REFRESH_MS = 1000


async def _now_panel(console: ConsoleDep, viewer: Reader) -> dict[str, object]:
    """The panel's context: the places, or what could not be reached."""
    broker = await console.broker_problem()
    try:
        found = await console.monitor.findings(viewer.authorization)
    except MonitorUnavailable as exc:
        return {"monitor_problem": str(exc), "broker_problem": broker, "places": []}
    grouped = places.group(found.findings)
    return {
        "monitor_problem": None,
        "broker_problem": broker,
        "places": grouped,
        "stuck": sum(p.orders for p in grouped if p.state == FindingKind.STUCK),
        "broken": sum(p.orders for p in grouped if p.state == FindingKind.BROKEN),
        "unroutable": sum(p.orders for p in grouped if p.state == FindingKind.UNROUTABLE),
        "blind": sum(p.orders for p in grouped if p.state == FindingKind.TELEMETRY_GAP),
        "as_of": found.as_of,
    }


@router.get("/", response_class=HTMLResponse)
async def now(console: ConsoleDep, viewer: Reader) -> HTMLResponse:
    panel = await _now_panel(console, viewer)
    return page("now.html", viewer=viewer, active="now", refresh_ms=REFRESH_MS, **panel)


@router.get("/now/panel", response_class=HTMLResponse)
async def now_panel(console: ConsoleDep, viewer: Reader) -> HTMLResponse:
    """The Now page's live part. 503 when the monitor cannot be reached: the page then keeps
    what it showed, marked as out of date, instead of passing it off as current."""
    panel = await _now_panel(console, viewer)
    status = 503 if panel["monitor_problem"] else 200
    return page("now_panel.html", status_code=status, viewer=viewer, **panel)


@router.get("/search")
async def search(console: ConsoleDep, viewer: Reader, q: str = "") -> RedirectResponse:
    """An order id opens the order's page; a trace id opens the order it belongs to (or the
    trace in Jaeger UI when it names no order)."""
    wanted = q.strip()
    if not wanted:
        return RedirectResponse("/", status_code=303)
    if TRACE_ID.match(wanted.lower()):
        try:
            trace = await console.jaeger.trace(wanted.lower())
        except JaegerUnavailable:
            trace = None
        if trace is not None:
            orders = sorted(trace.order_ids)
            if len(orders) == 1:
                return RedirectResponse(
                    f"{links.order_path(orders[0])}#trace-{trace.trace_id}", status_code=303
                )
            return RedirectResponse(links.trace_path(trace.trace_id), status_code=303)
    return RedirectResponse(links.order_path(wanted), status_code=303)


@router.get("/orders/{order_id}", response_class=HTMLResponse)
async def order(order_id: str, console: ConsoleDep, viewer: Reader) -> HTMLResponse:
    problems: list[str] = []

    async def journey() -> Journey | None:
        try:
            return await console.monitor.journey(viewer.authorization, order_id)
        except MonitorUnavailable as exc:
            problems.append(str(exc))
            return None

    async def traces() -> list[Trace]:
        try:
            return await console.jaeger.traces_of_order(order_id)
        except JaegerUnavailable as exc:
            problems.append(str(exc))
            return []

    found, traced = await asyncio.gather(journey(), traces())
    status = 200 if found is not None or traced else 404
    return page(
        "order.html",
        status_code=status,
        viewer=viewer,
        active="order",
        order_id=order_id,
        journey=found,
        waterfall=waterfall.build(traced),
        problems=problems,
        geometry=waterfall,
    )


Window = Annotated[str, Query(pattern="^(" + "|".join(charts.WINDOWS) + ")$")]


@router.get("/incidents", response_class=HTMLResponse)
async def incidents(
    console: ConsoleDep, viewer: Reader, window: Window = charts.DEFAULT_WINDOW
) -> HTMLResponse:
    span = charts.WINDOWS[window]
    hours = span.total_seconds() / 3600
    try:
        listed, uptime = await asyncio.gather(
            console.monitor.incidents(viewer.authorization, "all", hours),
            console.monitor.uptime(viewer.authorization, hours),
        )
    except MonitorUnavailable as exc:
        return page("unavailable.html", 503, viewer=viewer, active="incidents", problem=str(exc))
    return page(
        "incidents.html",
        viewer=viewer,
        active="incidents",
        window=window,
        windows=list(charts.WINDOWS),
        report=listed,
        uptime=uptime,
        chart=charts.mttr_chart(listed.incidents, span, datetime.now(UTC)),
    )


@router.get("/incidents/{incident_id}", response_class=HTMLResponse)
async def incident(incident_id: int, console: ConsoleDep, viewer: Reader) -> HTMLResponse:
    try:
        found = await console.monitor.incident(viewer.authorization, incident_id)
    except MonitorUnavailable as exc:
        return page("unavailable.html", 503, viewer=viewer, active="incidents", problem=str(exc))
    return page(
        "incident.html",
        status_code=200 if found else 404,
        viewer=viewer,
        active="incidents",
        incident_id=incident_id,
        incident=found,
    )


@router.get("/dead-letters", response_class=HTMLResponse)
async def dead_letters(console: ConsoleDep, viewer: Reader) -> HTMLResponse:
    try:
        letters = await list_dead_letters(console.settings, 500)
        problem = None
    except httpx.HTTPError as exc:
        letters, problem = [], f"the dead-letter queue cannot be read ({type(exc).__name__})"
    return page(
        "dead_letters.html",
        viewer=viewer,
        active="dead-letters",
        letters=letters,
        problem=problem,
    )
