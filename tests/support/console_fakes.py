"""A monitor and a Jaeger that answer the console's questions from memory, in the shapes of
their real APIs (loupe.monitor.models; Jaeger's /api/traces JSON). For the console's unit
tests and for looking at its pages without the whole stack; never in place of the real ones in
integration or end-to-end tests."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import httpx

from loupe.monitor import rows
from loupe.monitor.models import Durations, Move
from loupe.orders import OrderStatus
from loupe.orders.lifecycle import HAPPY_PATH
from loupe.telemetry import attributes as attr

MONITOR = "http://monitor.test"
JAEGER = "http://jaeger.test/jaeger"
SERVICES = ("crm-api", "mes-api", "shop-api")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


_FINDING_IDS = itertools.count(1)


def finding(
    order_id: str | None,
    since: datetime,
    *,
    finding_id: int | None = None,
    state: str = "stuck",
    service: str = "mes-api",
    where: str = "queue mes.order-submitted",
    incident_id: int = 1,
    evidence: str = "queue mes.order-submitted: 4 ready, 0 unacknowledged, 0 consumer(s)",
) -> dict[str, Any]:
    return {
        "id": next(_FINDING_IDS) if finding_id is None else finding_id,
        "order_id": order_id,
        "state": state,
        "status": "SUBMITTED",
        "since": iso(since),
        "deadline": iso(since + timedelta(seconds=10)),
        "service": service,
        "where": where,
        "trace_id": f"{abs(hash(order_id)):032x}"[-32:],
        "evidence": evidence,
        "last_step": None,
        "detected_at": iso(since + timedelta(seconds=11)),
        "incident_id": incident_id,
        "cleared_at": None,
        "cleared_reason": None,
    }


@dataclass
class Span:
    service: str
    name: str
    start: datetime
    ms: float
    span_id: str
    parent: str | None = None
    links: list[tuple[str, str]] = field(default_factory=list)
    tags: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    error: bool = False


def jaeger_trace(trace_id: str, spans: list[Span]) -> dict[str, Any]:
    processes = {f"p{i}": {"serviceName": s, "tags": []} for i, s in enumerate(SERVICES)}
    by_service = {s: f"p{i}" for i, s in enumerate(SERVICES)}
    items = []
    for span in spans:
        refs = []
        if span.parent:
            refs.append({"refType": "CHILD_OF", "traceID": trace_id, "spanID": span.parent})
        refs += [{"refType": "FOLLOWS_FROM", "traceID": t, "spanID": s} for t, s in span.links]
        tags = [{"key": k, "type": "string", "value": v} for k, v in span.tags.items()]
        if span.error:
            tags.append({"key": "error", "type": "bool", "value": True})
        start_us = int(span.start.timestamp() * 1_000_000)
        items.append(
            {
                "traceID": trace_id,
                "spanID": span.span_id,
                "operationName": span.name,
                "references": refs,
                "startTime": start_us,
                "duration": int(span.ms * 1000),
                "tags": tags,
                "logs": [
                    {
                        "timestamp": start_us,
                        "fields": [{"key": "event", "type": "string", "value": name}]
                        + [{"key": k, "type": "string", "value": v} for k, v in fields.items()],
                    }
                    for name, fields in span.events
                ],
                "processID": by_service[span.service],
                "warnings": None,
            }
        )
    return {"traceID": trace_id, "spans": items, "processes": processes, "warnings": None}


@dataclass
class _Step:
    """One person's step of closed_order's journey: its number and when it began."""

    index: int
    at: datetime

    def span(
        self, n: int, service: str, name: str, *, after_ms: float, ms: float, **more: Any
    ) -> Span:
        """The step's span number `n`, starting `after_ms` into the step; its id is the step's
        number then `n` (so every id in the journey differs). `more` as for Span."""
        return Span(
            service,
            name,
            self.at + timedelta(milliseconds=after_ms),
            ms,
            f"{self.index:02d}" + str(n) * 14,
            **more,
        )


def closed_order(order_id: str, began: datetime) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A CLOSED order's journey (monitor) and its traces (Jaeger): one trace per person's
    step, each linked to the step before; a retry and a dead letter on the way."""
    moves = []
    traces = []
    previous: tuple[str, str] | None = None
    statuses = [s.value for s in HAPPY_PATH]
    services = ["shop-api", "mes-api", "crm-api", "mes-api", "mes-api", "crm-api", "crm-api"]
    at = began
    for index, (status, service) in enumerate(zip(statuses, services, strict=True)):
        trace_id = f"{index + 1:02d}" + "ab" * 15
        status_from = statuses[index - 1] if index else "NEW"
        step = _Step(index, at)
        root = step.span(
            0,
            service,
            f"POST /orders/{{order_id}}/{status.lower()}",
            after_ms=0,
            ms=40 + index,
            links=[previous] if previous else [],
        )
        move = step.span(
            1,
            service,
            "UPDATE orders",
            after_ms=5,
            ms=6,
            parent=root.span_id,
            tags={
                attr.ORDER_ID: order_id,
                attr.ORDER_STATUS_FROM: status_from,
                attr.ORDER_STATUS_TO: status,
            },
        )
        publish = step.span(
            2, service, "publish loupe.orders", after_ms=15, ms=4, parent=root.span_id
        )
        consume = step.span(
            3,
            "crm-api" if service != "crm-api" else "shop-api",
            "process loupe.orders",
            after_ms=30,
            ms=9,
            parent=publish.span_id,
            tags={attr.ORDER_ID: order_id, attr.DELIVERY_ATTEMPT: "2" if index == 2 else "1"},
        )
        spans = [root, move, publish, consume]
        if index == 1:
            spans.append(
                step.span(
                    4,
                    "crm-api",
                    "process loupe.orders",
                    after_ms=20,
                    ms=3,
                    parent=publish.span_id,
                    tags={attr.ORDER_ID: order_id},
                    events=[
                        (attr.DEAD_LETTERED_EVENT, {attr.DEAD_LETTER_REASON: "poison message"})
                    ],
                    error=True,
                )
            )
        traces.append(jaeger_trace(trace_id, spans))
        moves.append(
            {
                "status": status,
                "from": status_from,
                "at": iso(at + timedelta(milliseconds=11)),
                "service": service,
                "operation": root.name,
                "trace_id": trace_id,
                "span_id": move.span_id,
                "linked": [{"trace_id": t, "span_id": s} for t, s in root.links],
                "seen_by": [],
            }
        )
        previous = (trace_id, root.span_id)
        at += timedelta(seconds=7 + 3 * index)
    journey = {
        "order_id": order_id,
        "status": OrderStatus.CLOSED.value,
        "source": "shop",
        "transitions": moves,
        "errors": [],
        "finding": None,
    }
    return journey, traces


def order_with_lost_moves(
    order_id: str, began: datetime
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """closed_order's journey and traces without the spans of its second and third moves (lost
    on the way to Jaeger), and the statuses the monitor then lists as not seen."""
    journey, traces = closed_order(order_id, began)
    lost = {OrderStatus.PRICE_CALCULATED.value, OrderStatus.MANUFACTURING_APPROVED.value}
    kept = [m for m in journey["transitions"] if m["status"] not in lost]
    unseen = rows.not_seen([Move.model_validate(m) for m in kept])
    journey |= {"transitions": kept, "not_seen": [n.model_dump() for n in unseen]}
    traced = {m["trace_id"] for m in kept}
    return journey, [t for t in traces if t["traceID"] in traced]


@dataclass
class FakeBackends:
    """What the monitor and Jaeger hold; `down` names the ones that do not answer."""

    findings: list[dict[str, Any]] = field(default_factory=list)
    journeys: dict[str, dict[str, Any]] = field(default_factory=dict)
    traces: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    requests: list[httpx.Request] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = str(request.url)
        if url.startswith(MONITOR):
            if "monitor" in self.down:
                raise httpx.ConnectError("connection refused", request=request)
            return self._monitor(request, request.url.path.removeprefix("/monitor/api"))
        if url.startswith(JAEGER):
            if "jaeger" in self.down:
                raise httpx.ConnectError("connection refused", request=request)
            return self._jaeger(request, request.url.path.removeprefix("/jaeger"))
        if "/api/queues/" in url:  # RabbitMQ's management API
            if "rabbitmq" in self.down:
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(200, json=[{"name": "loupe.dead-letter"}])
        return httpx.Response(404)

    def _monitor(self, request: httpx.Request, path: str) -> httpx.Response:
        if path == "/findings":
            body = {"count": len(self.findings), "findings": self.findings, "as_of": iso(NOW)}
            return httpx.Response(200, json=body)
        if path.startswith("/orders/"):
            order_id = unquote(path.split("/")[2])
            found = self.journeys.get(order_id)
            return httpx.Response(200, json=found) if found else httpx.Response(404, json={})
        if path == "/incidents":
            resolved = [i for i in self.incidents if i["resolved_at"]]
            counted = [i for i in self.incidents if not i.get("dismissed")]
            detect = Durations.of([i["time_to_detect_seconds"] for i in counted])
            resolve = Durations.of(
                [i["time_to_resolve_seconds"] for i in counted if i["resolved_at"]]
            )
            body = {
                "window_seconds": float(request.url.params["window_hours"]) * 3600,
                "open": len(self.incidents) - len(resolved),
                "resolved": len(resolved),
                "mttd_seconds": detect.mean_seconds,
                "mttr_seconds": resolve.mean_seconds,
                "time_to_detect": detect.model_dump(),
                "time_to_resolve": resolve.model_dump(),
                "incidents": self.incidents,
            }
            return httpx.Response(200, json=body)
        if path.startswith("/findings/") and path.endswith("/dismiss"):
            finding_id = int(path.split("/")[2])
            held = next((f for f in self.findings if f["id"] == finding_id), None)
            if held is None:
                return httpx.Response(404, json={})
            if held["cleared_at"]:
                detail = f"finding {finding_id} was cleared already ({held['cleared_reason']})"
                return httpx.Response(409, json={"detail": detail})
            reason = json.loads(request.content)["reason"]
            held["cleared_at"] = iso(NOW)
            held["cleared_reason"] = f"dismissed by devops@example.com: {reason}"
            return httpx.Response(200, json=held)
        if path.startswith("/incidents/") and path.endswith("/acknowledge"):
            found = self._incident(int(path.split("/")[2]))
            if found is None:
                return httpx.Response(404, json={})
            found["acknowledged_by"] = "devops@example.com"
            found["acknowledged_at"] = iso(NOW)
            return httpx.Response(200, json=found)
        if path.startswith("/incidents/"):
            found = self._incident(int(path.split("/")[2]))
            if found is None:
                return httpx.Response(404, json={})
            held = [f for f in self.findings if f["incident_id"] == found["id"]]
            return httpx.Response(200, json={**found, "findings": held})
        if path == "/uptime":
            services = {
                s: {"availability": a, "samples": 720, "probe_failures": int(720 * (1 - a))}
                for s, a in zip(SERVICES, (1.0, 0.985, 0.9993), strict=True)
            }
            return httpx.Response(200, json={"window_seconds": 86400.0, "services": services})
        return httpx.Response(404, json={})

    def _incident(self, incident_id: int) -> dict[str, Any] | None:
        return next((i for i in self.incidents if i["id"] == incident_id), None)

    def _jaeger(self, request: httpx.Request, path: str) -> httpx.Response:
        if path == "/api/services":
            return httpx.Response(200, json={"data": list(SERVICES)})
        if path == "/api/traces":
            tags = json.loads(request.url.params["tags"])
            service = request.url.params["service"]
            found = [
                t
                for t in self.traces.get(tags[attr.ORDER_ID], [])
                if any(p["serviceName"] == service for p in t["processes"].values())
            ]
            return httpx.Response(200, json={"data": found or None})
        if path.startswith("/api/traces/"):
            trace_id = path.rsplit("/", 1)[1]
            for traces in self.traces.values():
                for trace in traces:
                    if trace["traceID"] == trace_id:
                        return httpx.Response(200, json={"data": [trace]})
            return httpx.Response(404, json={"data": None})
        return httpx.Response(404)


def incident(
    incident_id: int, started: datetime, *, resolved_after: float | None = None, **more: Any
) -> dict[str, Any]:
    resolved = started + timedelta(seconds=resolved_after) if resolved_after else None
    return {
        "id": incident_id,
        "state": "stuck",
        "service": "mes-api",
        "where": "queue mes.order-submitted",
        "status": "resolved" if resolved else "open",
        "started_at": iso(started),
        "detected_at": iso(started + timedelta(seconds=12)),
        "resolved_at": iso(resolved) if resolved else None,
        "orders": 3,
        "time_to_detect_seconds": 12.0,
        "detection_delay_seconds": 1.0,
        "time_to_resolve_seconds": resolved_after,
        "acknowledged_by": None,
        "acknowledged_at": None,
        **more,
    }
