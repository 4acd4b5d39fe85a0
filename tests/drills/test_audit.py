"""The drills' audit, on hand-made views of the three databases: what counts as lost, as a
ghost, as a finding the databases contradict, and how counters of restarted processes add."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from loupe.drills.audit import (
    MonitorView,
    Orders,
    SpanCounters,
    StuckFinding,
    contradicted,
    furthest,
)
from loupe.orders import OrderStatus

S = OrderStatus
T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _orders() -> Orders:
    return Orders(
        views={
            "shop": {"a": S.SUBMITTED, "b": S.SUBMITTED, "lost": S.SUBMITTED},
            "mes": {"a": S.MANUFACTURING_STARTED, "b": S.PRICE_CALCULATED, "p": S.SUBMITTED},
            "crm": {"a": S.MANUFACTURING_APPROVED, "b": S.REJECTED},
        },
        shop_created={"a": T0, "b": T0 + timedelta(seconds=5), "lost": T0},
        b2b_created={"p": T0 + timedelta(seconds=1)},
    )


def test_an_orders_status_is_the_furthest_any_service_holds() -> None:
    orders = _orders()
    assert orders.status("a") is S.MANUFACTURING_STARTED
    assert orders.status("b") is S.REJECTED
    assert orders.status("nowhere") is None
    assert furthest([S.CLOSED, S.SHIPPED, S.SUBMITTED]) is S.CLOSED


def test_lost_is_a_shop_order_no_later_service_has() -> None:
    orders = _orders()
    submitted = orders.submitted_between(T0, T0 + timedelta(seconds=2))
    assert sorted(submitted) == ["a", "lost", "p"], "b came later; p is a partner's"
    assert orders.lost(submitted) == ["lost"]


def test_a_ghost_is_a_shop_order_the_shop_does_not_hold() -> None:
    assert _orders().ghosts({"a", "b", "ghost"}) == ["ghost"]


def test_only_a_finding_behind_the_databases_is_contradicted() -> None:
    stuck = [
        StuckFinding("a", S.PRICE_CALCULATED, T0),  # the databases say it moved on
        StuckFinding("b", S.PRICE_CALCULATED, T0),  # REJECTED since: moved on, to a final status
        StuckFinding("p", S.SUBMITTED, T0),  # true: MES still has it SUBMITTED
        StuckFinding("unknown", S.SUBMITTED, T0),  # nothing to contradict it
    ]
    assert contradicted(_orders(), stuck) == {"a", "b"}
    # A drill answers for the orders that moved since it began, not for an earlier drill's.
    assert contradicted(_orders(), stuck, since=T0 + timedelta(seconds=1)) == set()


def test_a_counter_that_went_down_restarted_and_counts_from_zero_each_process_apart() -> None:
    before = SpanCounters(
        sent={"shop-api": 100, "mes-api": 500},
        given_up={"shop-api": 0, "mes-api": 3},
        forwarded=600,
        dropped=2,
        received={"shop-api": 95, "mes-api": 500},
    )
    # mes-api was killed and restarted: its own counters start again, not the others'.
    after = SpanCounters(
        sent={"shop-api": 150, "mes-api": 40},
        given_up={"shop-api": 1, "mes-api": 0},
        forwarded=700,
        dropped=2,
        received={"shop-api": 150, "mes-api": 590},
    )
    since = after.since(before)
    assert since == SpanCounters(
        sent={"shop-api": 50, "mes-api": 40},
        given_up={"shop-api": 1, "mes-api": 0},
        forwarded=100,
        dropped=0,
        received={"shop-api": 55, "mes-api": 90},
    )
    assert (since.lost, since.unreceived) == (1, [])


def test_a_service_whose_spans_the_monitor_did_not_all_receive_is_named() -> None:
    counters = SpanCounters(
        sent={"shop-api": 10, "crm-api": 7},
        given_up={"shop-api": 0, "crm-api": 0},
        forwarded=0,
        dropped=4,
        received={"shop-api": 12, "crm-api": 6},
    )
    assert (counters.lost, counters.unreceived) == (4, ["crm-api"])


def test_the_monitor_is_behind_where_it_missed_an_orders_last_move() -> None:
    monitor = MonitorView(
        incidents=[],
        stuck=[],
        statuses={"a": S.MANUFACTURING_STARTED, "b": S.PRICE_CALCULATED},
    )
    # b was REJECTED, the span of it never arrived; p the monitor never heard of at all.
    assert monitor.behind(_orders(), ["a", "b", "p"]) == ["b", "p"]
