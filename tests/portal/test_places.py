"""The Now page's places (loupe.portal.places): open findings grouped by what they point at,
the place whose oldest order has waited longest first."""

from __future__ import annotations

from datetime import timedelta

import pytest

from loupe.monitor.models import Finding
from loupe.portal.places import group
from tests.support.console_fakes import NOW, finding

POISON = {"state": "broken", "service": "crm-api", "where": "process loupe.orders"}


def made(order_id: str, minutes_ago: float, incident_id: int = 1, **place: str) -> Finding:
    return Finding.model_validate(
        finding(order_id, NOW - timedelta(minutes=minutes_ago), incident_id=incident_id, **place)
    )


def test_findings_of_one_place_are_one_group_with_its_oldest_as_example() -> None:
    queued = [made("q-1", 2, 3), made("q-2", 9, 1), made("q-3", 5, 3)]
    broken = made("p-1", 4, 2, **POISON)
    places = group([*queued, broken])
    assert [p.key for p in places] == [
        "stuck|mes-api|queue mes.order-submitted",  # q-2 has waited 9 min
        "broken|crm-api|process loupe.orders",
    ]
    queue, poison = places
    assert (queue.orders, queue.example.order_id, queue.incidents) == (3, "q-2", [1, 3])
    assert (poison.orders, poison.example.order_id, poison.incidents) == (1, "p-1", [2])


@pytest.mark.parametrize("listed", [["stuck", "broken"], ["broken", "stuck"]])
def test_the_same_queue_stuck_and_broken_are_two_places_in_a_stable_order(
    listed: list[str],
) -> None:
    # Same service and queue, different kinds: people act differently on each. Equally old,
    # they go by key, whatever order the monitor listed them in (the page must not jump).
    places = group([made(f"o-{state}", 1, state=state) for state in listed])
    assert [p.key for p in places] == [
        "broken|mes-api|queue mes.order-submitted",
        "stuck|mes-api|queue mes.order-submitted",
    ]


def test_nothing_open_is_no_place() -> None:
    assert group([]) == []
