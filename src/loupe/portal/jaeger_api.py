"""Jaeger's query API as the console reads it: an order's traces and single traces, parsed
from Jaeger's JSON into the few facts the console draws."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from loupe.portal import upstream
from loupe.telemetry.attributes import (
    DEAD_LETTER_REASON,
    DEAD_LETTERED_EVENT,
    DELIVERY_ATTEMPT,
    ORDER_ID,
    ORDER_STATUS_FROM,
    ORDER_STATUS_TO,
)

# How many of an order's traces one service's search returns at most; an order has about a
# dozen, so a larger answer means something else is wrong.
TRACES_PER_SERVICE = 100


class JaegerUnavailable(Exception):
    """Jaeger's query API did not answer as expected; the text says how."""


@dataclass(frozen=True)
class SpanEvent:
    at_us: int
    name: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    # Span links (Jaeger's FOLLOWS_FROM references, or a parent in another trace).
    links: tuple[tuple[str, str], ...]
    service: str
    name: str
    start_us: int
    duration_us: int
    attributes: dict[str, Any]
    events: tuple[SpanEvent, ...] = ()

    @property
    def end_us(self) -> int:
        return self.start_us + self.duration_us

    @property
    def error(self) -> bool:
        return self.attributes.get("error") is True or self.attributes.get("otel.status_code") in (
            "ERROR",
            "error",
        )

    @property
    def order_id(self) -> str | None:
        value = self.attributes.get(ORDER_ID)
        return str(value) if value else None

    @property
    def move(self) -> tuple[str, str] | None:
        to = self.attributes.get(ORDER_STATUS_TO)
        return (str(self.attributes.get(ORDER_STATUS_FROM, "")), str(to)) if to else None

    @property
    def attempt(self) -> int:
        try:
            return int(self.attributes.get(DELIVERY_ATTEMPT, 1))
        except (TypeError, ValueError):
            return 1

    @property
    def dead_letter_reason(self) -> str | None:
        for event in self.events:
            if event.name == DEAD_LETTERED_EVENT:
                return str(event.attributes.get(DEAD_LETTER_REASON) or "dead-lettered")
        return None


@dataclass(frozen=True)
class Trace:
    trace_id: str
    spans: tuple[Span, ...] = field(default=())

    @property
    def start_us(self) -> int:
        return min(s.start_us for s in self.spans)

    @property
    def end_us(self) -> int:
        return max(s.end_us for s in self.spans)

    @property
    def order_ids(self) -> set[str]:
        return {s.order_id for s in self.spans if s.order_id}


def _tags(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {item["key"]: item.get("value") for item in items or () if "key" in item}


def parse_trace(data: dict[str, Any]) -> Trace:
    """One trace of Jaeger's `/api/traces` answer."""
    trace_id = str(data["traceID"])
    processes = {key: p.get("serviceName", "?") for key, p in (data.get("processes") or {}).items()}
    spans = []
    for item in data.get("spans") or ():
        parent = None
        links = []
        for ref in item.get("references") or ():
            target = (str(ref.get("traceID")), str(ref.get("spanID")))
            if ref.get("refType") == "CHILD_OF" and target[0] == trace_id and parent is None:
                parent = target[1]
            else:
                links.append(target)
        events = []
        for log in item.get("logs") or ():
            fields = _tags(log.get("fields"))
            name = str(fields.pop("event", "event"))
            events.append(SpanEvent(int(log.get("timestamp", 0)), name, fields))
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=str(item["spanID"]),
                parent_id=parent,
                links=tuple(links),
                service=processes.get(item.get("processID", ""), "?"),
                name=str(item.get("operationName", "")),
                start_us=int(item.get("startTime", 0)),
                duration_us=int(item.get("duration", 0)),
                attributes=_tags(item.get("tags")),
                events=tuple(events),
            )
        )
    return Trace(trace_id, tuple(sorted(spans, key=lambda s: (s.start_us, s.span_id))))


class JaegerApi:
    def __init__(self, query_url: str, client: httpx.AsyncClient) -> None:
        self.query_url = query_url.rstrip("/")
        self._client = client

    async def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        response = await upstream.request(
            self._client,
            "GET",
            f"{self.query_url}{path}",
            JaegerUnavailable,
            f"Jaeger's query API at {self.query_url}",
            params=params,
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise JaegerUnavailable(f"Jaeger answered {response.status_code} for {path}")
        return response.json().get("data")

    async def services(self) -> list[str]:
        return sorted(await self._get("/api/services") or [])

    async def trace(self, trace_id: str) -> Trace | None:
        found = await self._get(f"/api/traces/{quote(trace_id, safe='')}")
        return parse_trace(found[0]) if found else None

    async def traces_of_order(self, order_id: str) -> list[Trace]:
        """Every trace with a span tagged with the order's id, whichever service made it,
        oldest first. Jaeger searches one service at a time, so all are asked at once."""
        tags = json.dumps({ORDER_ID: order_id})
        answers = await asyncio.gather(
            *(
                self._get(
                    "/api/traces",
                    {"service": service, "tags": tags, "limit": str(TRACES_PER_SERVICE)},
                )
                for service in await self.services()
            )
        )
        traces: dict[str, Trace] = {}
        for answer in answers:
            for item in answer or ():
                trace = parse_trace(item)
                if trace.spans:
                    traces[trace.trace_id] = trace
        return sorted(traces.values(), key=lambda t: t.start_us)
