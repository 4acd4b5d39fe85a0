"""The monitor's database rows as the models it answers with (models.py): the one place that
shapes them, for the API, the CLI's `--json` and the webhooks alike."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from loupe.monitor.models import (
    Finding,
    Incident,
    IncidentState,
    Journey,
    JourneyError,
    LastStep,
    LinkedSpan,
    Move,
    SeenBy,
)
from loupe.monitor.projection import rank

Row = Mapping[str, Any]


def last_step(order: Row) -> LastStep | None:
    """The order's last move (from its `orders` row), or None before any."""
    if order["status"] is None:
        return None
    return LastStep(
        status=order["status"],
        at=order["status_at"],
        service=order["service"],
        operation=order["operation"],
        trace_id=order["trace_id"],
    )


def finding(row: Row) -> Finding:
    return Finding(
        order_id=row["order_id"],
        state=row["state"],
        status=row["status"],
        since=row["since"],
        deadline=row["deadline"],
        service=row["service"],
        where=row["place"],
        trace_id=row["trace_id"],
        evidence=row["evidence"],
        last_step=LastStep.model_validate_json(row["last_step"]) if row["last_step"] else None,
        detected_at=row["detected_at"],
        incident_id=row["incident_id"],
        cleared_at=row["cleared_at"],
    )


def incident(row: Row, orders: int) -> Incident:
    """An `incidents` row holding `orders` findings; its times to detect and resolve."""
    resolved = row["resolved_at"]
    return Incident(
        id=row["id"],
        state=row["state"],
        service=row["service"],
        where=row["place"],
        status=IncidentState.RESOLVED if resolved else IncidentState.OPEN,
        started_at=row["started_at"],
        detected_at=row["opened_at"],
        resolved_at=resolved,
        orders=orders,
        time_to_detect_seconds=(row["opened_at"] - row["started_at"]).total_seconds(),
        detection_delay_seconds=max((row["opened_at"] - row["deadline_at"]).total_seconds(), 0.0),
        time_to_resolve_seconds=(resolved - row["started_at"]).total_seconds()
        if resolved
        else None,
        acknowledged_by=row["acknowledged_by"],
        acknowledged_at=row["acknowledged_at"],
    )


def journey(
    order: Row, transitions: Sequence[Row], errors: Sequence[Row], open_finding: Row | None
) -> Journey:
    """The order's moves in time order from its `transitions` rows (ordered by when their
    spans began): the first span of each status is the move; services that followed it later
    are listed under `seen_by`."""
    moves: dict[str, Move] = {}
    for row in transitions:
        move = moves.get(row["status_to"])
        if move is None:
            links = json.loads(row["links"]) if isinstance(row["links"], str) else []
            moves[row["status_to"]] = Move(
                status=row["status_to"],
                from_=row["status_from"],
                at=row["at"],
                service=row["service"],
                operation=row["operation"],
                trace_id=row["trace_id"],
                span_id=row["span_id"],
                linked=[LinkedSpan(**link) for link in links],
                seen_by=[],
            )
        else:
            move.seen_by.append(
                SeenBy(service=row["service"], at=row["at"], trace_id=row["trace_id"])
            )
    return Journey(
        order_id=order["order_id"],
        status=order["status"],
        source=order["source"],
        transitions=sorted(moves.values(), key=lambda m: (m.at, rank(m.status))),
        errors=[
            JourneyError(
                at=e["at"],
                service=e["service"],
                where=e["place"],
                message=e["message"],
                dead_lettered=e["dead_lettered"],
                trace_id=e["trace_id"],
                span_id=e["span_id"],
            )
            for e in errors
        ],
        finding=finding(open_finding) if open_finding else None,
    )
