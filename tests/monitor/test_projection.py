"""The order projection without a database: spans late, twice or out of order give the same
row; a late span never moves an order back; the span that began first is the move; FAILED and
REJECTED are broken at once; errors after the last move break an order after their grace."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from loupe.monitor import projection
from loupe.monitor.projection import OrderRow, StoredError, flow_keys, rank
from loupe.monitor.spans import SpanFacts
from loupe.orders import OrderStatus
from loupe.orders.lifecycle import HAPPY_PATH
from tests.support.otlp_spans import HAPPY_MOVES, slo

SLO = slo()
T0 = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
_ids = itertools.count(1)

HAPPY = HAPPY_MOVES


def span(
    service: str,
    name: str,
    ended: float,
    *,
    order_id: str | None = "o",
    move: tuple[str, str] | None = None,
    lasted: float = 0.001,
    error: str | None = None,
    dead_lettered: bool = False,
    source: str | None = None,
) -> SpanFacts:
    """The facts of a span of `service` that ended `ended` seconds after T0."""
    status_from, status_to = move or (None, None)
    return SpanFacts(
        trace_id=f"{next(_ids):032x}",
        span_id=f"{next(_ids):016x}",
        parent_span_id=None,
        service=service,
        name=name,
        kind="INTERNAL",
        started_at=T0 + timedelta(seconds=ended - lasted),
        ended_at=T0 + timedelta(seconds=ended),
        order_id=order_id,
        status_from=status_from,
        status_to=status_to,
        source=source,
        failure_reason=None,
        error=error is not None,
        error_message=error,
        error_type=None,
        dead_lettered=dead_lettered,
        place=name,
        links=(),
    )


def happy(order_id: str = "o") -> list[SpanFacts]:
    """The happy path's moves, one every 5 s."""
    return [
        span(service, name, 5.0 * i, order_id=order_id, move=(before, after))
        for i, (service, name, before, after) in enumerate(HAPPY)
    ]


def project(
    rows: list[OrderRow], spans: list[SpanFacts], stored: dict[str, list[StoredError]] | None = None
) -> projection.Projection:
    transitions = [s for s in spans if s.transition]
    errors = [s for s in spans if s.error]
    done = projection.advance(rows, transitions, errors, SLO)
    projection.mark_broken(done, stored or {}, SLO)
    return done


def in_batches(spans: list[SpanFacts], size: int) -> OrderRow:
    """The order's row after `spans` arrive in batches of `size`, each on the row before."""
    rows: list[OrderRow] = []
    for start in range(0, len(spans), size):
        done = project([replace(r) for r in rows], spans[start : start + size])
        rows = list(done.orders.values())
    (row,) = rows
    return row


def test_rank_follows_the_lifecycle_with_rejected_and_failed_after_it() -> None:
    assert [rank(s) for s in HAPPY_PATH] == list(range(len(HAPPY_PATH)))
    assert rank(OrderStatus.CLOSED) < rank(OrderStatus.REJECTED) < rank(OrderStatus.FAILED)
    assert rank(None) == rank("NEW") == -1


def test_spans_in_any_order_and_batching_give_the_same_row() -> None:
    spans = happy()
    expected = in_batches(spans, len(spans))
    assert (expected.status, expected.service, expected.operation) == (
        "CLOSED",
        "crm-api",
        "close order",
    )
    assert expected.rank == rank("CLOSED") and expected.deadline is None
    for seed in range(5):
        shuffled = spans[:]
        random.Random(seed).shuffle(shuffled)
        for size in (1, 3, len(spans)):
            assert in_batches(shuffled, size) == expected


def test_a_span_seen_again_changes_nothing() -> None:
    first = project([], happy()[:3])
    (row,) = first.orders.values()
    again = project([replace(row)], happy()[:3])
    assert again.changed == set() and again.durations == []
    assert again.orders["o"] == row


def test_a_late_span_never_moves_an_order_back() -> None:
    spans = happy()
    ahead = project([], spans[:4])
    (row,) = ahead.orders.values()
    late = project([replace(row)], [spans[0], spans[1]])
    assert late.changed == set()
    assert late.orders["o"].status == "MANUFACTURING_STARTED"


def test_durations_between_moves_the_monitor_saw_one_after_the_other() -> None:
    spans = happy()
    done = project([], spans[:3])
    assert done.durations == [
        ("SUBMITTED", "PRICE_CALCULATED", 5.0),
        ("PRICE_CALCULATED", "MANUFACTURING_APPROVED", 5.0),
    ]
    # A move whose previous status never arrived has no duration.
    skipped = project([], [spans[0], spans[2]])
    assert skipped.durations == []


def test_deadline_from_the_slo_of_the_status_reached() -> None:
    (row,) = project([], happy()[:1]).orders.values()
    assert row.deadline == row.status_at + timedelta(seconds=30)
    assert row.status_at == T0 and row.broken_at is None


def test_the_copy_that_began_later_follows_the_move_whichever_arrives_first() -> None:
    submitted = span("shop-api", "POST /orders", 0, move=HAPPY[0][2:])
    # MES's span publishes the event before it ends: CRM's copy ends first but began later.
    move = span("mes-api", "process loupe.orders", 3, lasted=2, move=HAPPY[1][2:])
    copy = span("crm-api", "process loupe.orders", 2, lasted=0.5, move=HAPPY[1][2:])
    for order in ([submitted, move, copy], [submitted, copy, move]):
        row = in_batches(order, 1)
        assert (row.service, row.span_id) == ("mes-api", move.span_id)
        assert row.status_began == move.started_at and row.status_at == move.ended_at


def test_failed_and_rejected_are_broken_at_once_and_failed_outranks_rejected() -> None:
    spans = happy()[:2]
    rejected = span("crm-api", "reject", 12, move=("PRICE_CALCULATED", "REJECTED"))
    row = in_batches([*spans, rejected], 1)
    assert (row.status, row.broken_at, row.deadline) == ("REJECTED", rejected.ended_at, None)

    failed = span(
        "mes-api", "process loupe.orders", 20, move=("SUBMITTED", "FAILED"), error="poison"
    )
    assert failed.transition  # a move to FAILED is made on the failure path itself
    row = in_batches([*spans, rejected, failed], 1)
    assert (row.status, row.broken_at) == ("FAILED", failed.ended_at)
    # Final: its errors no longer decide anything, and a late happy move does not revive it.
    late = project([replace(row)], [span("crm-api", "x", 30, error="boom"), happy()[2]])
    assert late.open_orders() == []
    assert late.orders["o"].broken_at == failed.ended_at


def test_a_failed_span_that_names_a_move_was_rolled_back() -> None:
    rolled_back = span("mes-api", "take order", 1, move=HAPPY[3][2:], error="deadlock")
    assert not rolled_back.transition
    done = project([], [rolled_back])
    (row,) = done.orders.values()
    assert row.status is None and row.rank == -1


def test_errors_after_the_last_move_break_an_order_after_their_grace() -> None:
    (row,) = project([], happy()[:2]).orders.values()  # PRICE_CALCULATED at 5 s
    before = StoredError(T0 + timedelta(seconds=4), dead_lettered=False)
    after = StoredError(T0 + timedelta(seconds=8), dead_lettered=False)
    dead = StoredError(T0 + timedelta(seconds=20), dead_lettered=True)
    error = span("crm-api", "process loupe.orders", 8, error="database is down")

    done = project([replace(row)], [error], {"o": [before]})
    assert done.orders["o"].broken_at is None  # the order moved on after it
    done = project([replace(row)], [error], {"o": [before, after]})
    assert done.orders["o"].broken_at == after.at + SLO.error_grace
    # A dead letter is broken at once; the earliest due time counts.
    done = project([replace(row)], [error], {"o": [dead]})
    assert done.orders["o"].broken_at == dead.at
    done = project([replace(row)], [error], {"o": [after, dead]})
    assert done.orders["o"].broken_at == min(after.at + SLO.error_grace, dead.at)


def test_a_move_after_the_error_mends_the_order() -> None:
    spans = happy()[:2]
    error = span("crm-api", "approve manufacturing", 6, error="timeout")
    (row,) = project(
        [], [*spans, error], {"o": [StoredError(error.ended_at, False)]}
    ).orders.values()
    assert row.broken_at == error.ended_at + SLO.error_grace
    moved = project([replace(row)], [happy()[2]], {"o": [StoredError(error.ended_at, False)]})
    assert moved.orders["o"].broken_at is None


def test_an_order_known_only_by_an_error_has_no_status_and_breaks_after_its_grace() -> None:
    error = span("mes-api", "price order", 1, order_id="e", error="no model")
    done = project([], [error], {"e": [StoredError(error.ended_at, False)]})
    (row,) = done.orders.values()
    assert (row.order_id, row.status, row.rank) == ("e", None, -1)
    assert row.broken_at == error.ended_at + SLO.error_grace
    assert done.changed == {"e"}


def test_an_error_naming_no_order_is_no_order_of_the_projection() -> None:
    poison = span("mes-api", "process loupe.orders", 1, order_id=None, error="not JSON")
    done = project([], [poison])
    assert done.orders == {} and done.changed == set()


@pytest.mark.parametrize(
    ("made", "keys"),
    [
        (span("mes-api", "process", 1, move=HAPPY[1][2:]), ["mes-api|process", "step:SUBMITTED"]),
        (span("mes-api", "price order", 1), ["mes-api|price order"]),
        (span("mes-api", "price order", 1, error="boom"), []),
        (span("mes-api", "SELECT", 1, order_id=None), []),
    ],
)
def test_an_order_flows_through_a_place_without_error(made: SpanFacts, keys: list[str]) -> None:
    assert list(flow_keys(made)) == keys
