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
    Move,
    NotSeen,
    SeenBy,
)
from loupe.monitor.projection import rank
from loupe.orders import OrderStatus
from loupe.orders.lifecycle import had_by_leaving

Row = Mapping[str, Any]


# Columns are named as the models' fields, but for these (and the columns no model shows).
# A place in a service is `where` in the answers; `place` in SQL, where WHERE is a keyword.


def last_step(order: Row) -> LastStep | None:
    """The order's last move (from its `orders` row), or None before any."""
    if order["status"] is None:
        return None
    return LastStep.model_validate({**order, "at": order["status_at"]})


def finding(row: Row) -> Finding:
    stored = row["last_step"]  # JSON text
    return Finding.model_validate(
        {
            **row,
            "where": row["place"],
            "last_step": LastStep.model_validate_json(stored) if stored else None,
        }
    )


def incident(row: Row, orders: int) -> Incident:
    """An `incidents` row holding `orders` findings; its times to detect and resolve (none
    when every finding was dismissed: nothing was resolved)."""
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
        if resolved and not row["dismissed"]
        else None,
        acknowledged_by=row["acknowledged_by"],
        acknowledged_at=row["acknowledged_at"],
        dismissed=row["dismissed"],
    )


def not_seen(moves: Sequence[Move]) -> list[NotSeen]:
    """The statuses the order must have had that none of `moves` reached: each status a move
    left, and those before it (lifecycle.had_by_leaving), that no move is to. Each is listed
    once, before the first move seen after it, in the lifecycle's order."""
    seen = {move.status for move in moves}
    missing: dict[str, NotSeen] = {}
    for move in sorted(moves, key=lambda m: rank(m.status)):
        try:
            left = OrderStatus(move.from_)
        except ValueError:  # NEW, the first move's `from`: no status before it
            continue
        for status in had_by_leaving(left):
            if status not in seen and status not in missing:
                missing[status] = NotSeen(status=status, before=move.status)
    return sorted(missing.values(), key=lambda n: rank(n.status))


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
            moves[row["status_to"]] = Move.model_validate(
                {
                    **row,
                    "status": row["status_to"],
                    "from": row["status_from"],
                    "linked": links,
                    "seen_by": [],
                }
            )
        else:
            move.seen_by.append(SeenBy.model_validate(dict(row)))
    return Journey(
        order_id=order["order_id"],
        status=order["status"],
        source=order["source"],
        transitions=sorted(moves.values(), key=lambda m: (m.at, rank(m.status))),
        not_seen=not_seen(list(moves.values())),
        errors=[JourneyError.model_validate({**e, "where": e["place"]}) for e in errors],
        finding=finding(open_finding) if open_finding else None,
    )
