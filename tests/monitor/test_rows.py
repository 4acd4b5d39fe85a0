"""The monitor's database rows shaped as its answers (loupe.monitor.rows), with rows as the
tables of migrations/001_monitor.sql hold them: `place` becomes `where`, JSON columns arrive as
text, and the times to detect and resolve are worked out from the incident's row."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loupe.monitor import rows
from loupe.monitor.models import IncidentState

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ORDER = {"order_id": "o-1", "status": "PRICE_CALCULATED", "status_at": T0, "source": "shop"}
ORDER |= {"service": "mes-api", "operation": "price", "trace_id": "1" * 32}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def transition(status_to: str, service: str, seconds: float, **more: Any) -> dict[str, Any]:
    return {
        "trace_id": f"{int(seconds):032x}",
        "span_id": "a" * 16,
        "status_from": "NEW",
        "status_to": status_to,
        "at": at(seconds),
        "service": service,
        "operation": "POST /orders",
        "links": "[]",
        **more,
    }


def finding_row(last_step: str | None) -> dict[str, Any]:
    return {
        "id": 7,
        "order_id": "o-1",
        "state": "stuck",
        "status": "SUBMITTED",
        "since": T0,
        "deadline": at(30),
        "service": "mes-api",
        "place": "queue mes.order-submitted",
        "trace_id": None,
        "evidence": "no move",
        "last_step": last_step,
        "detected_at": at(31),
        "incident_id": 4,
        "cleared_at": None,
    }


def test_an_order_without_a_status_has_no_last_step() -> None:
    assert rows.last_step({**ORDER, "status": None}) is None
    step = rows.last_step(ORDER)
    assert step is not None and (step.status, step.at) == ("PRICE_CALCULATED", T0)


# As detection stores it: the LastStep's own JSON.
STORED_STEP = json.dumps(
    {"status": "SUBMITTED", "at": T0.isoformat(), "service": "shop-api"}
    | {"operation": "POST /orders", "trace_id": "1" * 32}
)


@pytest.mark.parametrize("stored", [None, STORED_STEP])
def test_a_finding_takes_its_place_as_where_and_its_last_step_from_json(
    stored: str | None,
) -> None:
    found = rows.finding(finding_row(stored))
    assert found.where == "queue mes.order-submitted"
    assert (found.last_step.at if found.last_step else None) == (T0 if stored else None)


@pytest.mark.parametrize(
    ("opened", "resolved", "dismissed", "delay", "to_resolve", "status"),
    [
        (40, None, False, 10.0, None, IncidentState.OPEN),
        # A broken order is found before any deadline: no negative delay.
        (20, 100, False, 0.0, 100.0, IncidentState.RESOLVED),
        # Every finding dismissed: resolved, but nothing was, so no time to resolve.
        (20, 100, True, 0.0, None, IncidentState.RESOLVED),
    ],
)
def test_an_incidents_times_from_its_row(
    opened: float,
    resolved: float | None,
    dismissed: bool,
    delay: float,
    to_resolve: float | None,
    status: str,
) -> None:
    row = {"id": 4, "state": "stuck", "service": "mes-api", "place": "queue q", "started_at": T0}
    row |= {"opened_at": at(opened), "deadline_at": at(30), "resolved_at": None}
    row |= {"acknowledged_by": None, "acknowledged_at": None, "dismissed": dismissed}
    if resolved is not None:
        row["resolved_at"] = at(resolved)
    made = rows.incident(row, orders=3)
    assert (made.where, made.orders, made.status) == ("queue q", 3, status)
    assert made.time_to_detect_seconds == opened
    assert (made.detection_delay_seconds, made.time_to_resolve_seconds) == (delay, to_resolve)
    assert made.dismissed is dismissed


def test_a_journey_keeps_the_first_span_of_each_status_and_lists_the_followers() -> None:
    link = [{"trace_id": "f" * 32, "span_id": "e" * 16}]
    transitions = [
        # Its span began first but ended at the same instant as SUBMITTED's (clocks are
        # coarse): lifecycle order decides which move comes first.
        transition("PRICE_CALCULATED", "mes-api", 0, links=json.dumps(link)),
        transition("SUBMITTED", "shop-api", 0),
        transition("SUBMITTED", "crm-api", 2),
    ]
    error = {"at": at(1), "service": "crm-api", "place": "process loupe.orders"}
    error |= {"message": "boom", "dead_lettered": True, "trace_id": "9" * 32, "span_id": "8" * 16}
    journey = rows.journey(ORDER, transitions, [error], finding_row(None))
    assert [(m.status, m.service) for m in journey.transitions] == [
        ("SUBMITTED", "shop-api"),
        ("PRICE_CALCULATED", "mes-api"),
    ]
    submitted, priced = journey.transitions
    assert [(s.service, s.at) for s in submitted.seen_by] == [("crm-api", at(2))]
    assert [(lk.trace_id, lk.span_id) for lk in priced.linked] == [("f" * 32, "e" * 16)]
    assert [(e.where, e.dead_lettered) for e in journey.errors] == [("process loupe.orders", True)]
    assert journey.finding is not None and journey.finding.incident_id == 4
    assert (journey.status, journey.source) == ("PRICE_CALCULATED", "shop")


def _moves(*steps: tuple[str, str, float]) -> list[dict[str, Any]]:
    """Transition rows of (from, to, seconds), each its first span."""
    return [transition(to, "mes-api", seconds, status_from=from_) for from_, to, seconds in steps]


@pytest.mark.parametrize(
    ("steps", "missing"),
    [
        # Every move seen: nothing is missing.
        (
            [("NEW", "SUBMITTED", 0), ("SUBMITTED", "PRICE_CALCULATED", 5)],
            [],
        ),
        # Two moves lost between: both listed, before the move that came after them.
        (
            [("NEW", "SUBMITTED", 0), ("MANUFACTURING_APPROVED", "MANUFACTURING_STARTED", 9)],
            [
                ("PRICE_CALCULATED", "MANUFACTURING_STARTED"),
                ("MANUFACTURING_APPROVED", "MANUFACTURING_STARTED"),
            ],
        ),
        # The very first move lost: the order was SUBMITTED, whatever came first.
        ([("SUBMITTED", "PRICE_CALCULATED", 5)], [("SUBMITTED", "PRICE_CALCULATED")]),
        # A failure from a status never seen; the later gap is named for the first move after.
        (
            [
                ("SUBMITTED", "PRICE_CALCULATED", 5),
                ("MANUFACTURING_STARTED", "FAILED", 9),
                ("NEW", "SUBMITTED", 0),
            ],
            [
                ("MANUFACTURING_APPROVED", "FAILED"),
                ("MANUFACTURING_STARTED", "FAILED"),
            ],
        ),
    ],
    ids=["all-seen", "two-lost", "first-lost", "failed-from-unseen"],
)
def test_a_journey_lists_the_statuses_it_passed_unseen(
    steps: list[tuple[str, str, float]], missing: list[tuple[str, str]]
) -> None:
    journey = rows.journey(ORDER, _moves(*steps), [], None)
    assert [(n.status, n.before) for n in journey.not_seen] == missing
    # The moves themselves are as reported: nothing is made up for the missing ones.
    assert sorted(m.status for m in journey.transitions) == sorted(to for _, to, _ in steps)
