"""The order lifecycle, checked against the rules as the business states them."""

from __future__ import annotations

import itertools

import pytest

from loupe.messaging.topology import QUEUES
from loupe.orders import IllegalTransition, OrderStatus, check_transition, routing_key
from loupe.orders.lifecycle import allowed_next, had_by_leaving, is_behind

S = OrderStatus

# The business rules, written out independently of the implementation:
# the happy path, one step at a time ...
HAPPY = [
    S.SUBMITTED,
    S.PRICE_CALCULATED,
    S.MANUFACTURING_APPROVED,
    S.MANUFACTURING_STARTED,
    S.MANUFACTURING_COMPLETED,
    S.SHIPPED,
    S.CLOSED,
]
ALLOWED: set[tuple[OrderStatus, OrderStatus]] = set(itertools.pairwise(HAPPY))
# ... a seller may reject only a priced order ...
ALLOWED.add((S.PRICE_CALCULATED, S.REJECTED))
# ... and any order not yet shipped (and not finished) may fail.
ALLOWED |= {
    (status, S.FAILED)
    for status in (
        S.SUBMITTED,
        S.PRICE_CALCULATED,
        S.MANUFACTURING_APPROVED,
        S.MANUFACTURING_STARTED,
        S.MANUFACTURING_COMPLETED,
    )
}
TERMINAL = {S.CLOSED, S.REJECTED, S.FAILED}

ALL_PAIRS = list(itertools.product(OrderStatus, OrderStatus))
ALLOWED_PAIRS = [pair for pair in ALL_PAIRS if pair in ALLOWED]
DISALLOWED_PAIRS = [pair for pair in ALL_PAIRS if pair not in ALLOWED]


def _id(pair: tuple[OrderStatus, OrderStatus]) -> str:
    return f"{pair[0]}->{pair[1]}"


def test_the_table_covers_every_status() -> None:
    assert len(ALL_PAIRS) == len(OrderStatus) ** 2 == 81
    assert len(ALLOWED_PAIRS) == 12


@pytest.mark.parametrize("pair", ALLOWED_PAIRS, ids=_id)
def test_allowed_transition(pair: tuple[OrderStatus, OrderStatus]) -> None:
    current, wanted = pair
    check_transition("order-1", current, wanted)
    assert wanted in allowed_next(current)


@pytest.mark.parametrize("pair", DISALLOWED_PAIRS, ids=_id)
def test_disallowed_transition(pair: tuple[OrderStatus, OrderStatus]) -> None:
    current, wanted = pair
    with pytest.raises(IllegalTransition) as raised:
        check_transition("order-1", current, wanted)
    assert raised.value.order_id == "order-1"
    assert raised.value.current is current
    assert raised.value.wanted is wanted
    assert wanted not in allowed_next(current)


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_terminal_statuses_go_nowhere(status: OrderStatus) -> None:
    assert status.terminal
    assert allowed_next(status) == frozenset()
    for wanted in OrderStatus:
        with pytest.raises(IllegalTransition):
            check_transition("o", status, wanted)


@pytest.mark.parametrize("status", sorted(set(OrderStatus) - TERMINAL))
def test_non_terminal_statuses_can_move_on(status: OrderStatus) -> None:
    assert not status.terminal
    assert allowed_next(status)


def test_rejected_only_from_price_calculated() -> None:
    sources = {current for current, wanted in ALLOWED_PAIRS if wanted is S.REJECTED}
    assert sources == {S.PRICE_CALCULATED}


def test_shipped_order_cannot_fail() -> None:
    with pytest.raises(IllegalTransition):
        check_transition("o", S.SHIPPED, S.FAILED)


@pytest.mark.parametrize(
    ("current", "wanted", "words"),
    [
        pytest.param(
            S.SUBMITTED,
            S.SHIPPED,
            # Both statuses and the order; it also tells what would have been allowed.
            ("7f1c", "SUBMITTED", "SHIPPED", "PRICE_CALCULATED", "FAILED"),
            id="names-both-statuses-and-the-order",
        ),
        pytest.param(
            S.CLOSED, S.SHIPPED, ("7f1c", "CLOSED", "SHIPPED", "final"), id="a-final-status-says-so"
        ),
    ],
)
def test_illegal_transition_message(
    current: OrderStatus, wanted: OrderStatus, words: tuple[str, ...]
) -> None:
    with pytest.raises(IllegalTransition) as raised:
        check_transition("7f1c", current, wanted)
    text = str(raised.value)
    for word in words:
        assert word in text, word


@pytest.mark.parametrize(
    ("current", "incoming", "behind"),
    [
        # The same status again (a redelivery) is behind.
        (S.PRICE_CALCULATED, S.PRICE_CALCULATED, True),
        (S.SUBMITTED, S.SUBMITTED, True),
        # Earlier steps of the happy path are behind.
        (S.MANUFACTURING_STARTED, S.PRICE_CALCULATED, True),
        (S.SHIPPED, S.SUBMITTED, True),
        (S.PRICE_CALCULATED, S.SUBMITTED, True),
        # Later steps are not, even when some were skipped (an overtaking event).
        (S.SUBMITTED, S.PRICE_CALCULATED, False),
        (S.SUBMITTED, S.SHIPPED, False),
        (S.MANUFACTURING_COMPLETED, S.CLOSED, False),
        # Leaving the happy path is news.
        (S.PRICE_CALCULATED, S.REJECTED, False),
        (S.SUBMITTED, S.FAILED, False),
        (S.MANUFACTURING_COMPLETED, S.FAILED, False),
        # Once final, nothing is news any more.
        (S.CLOSED, S.SHIPPED, True),
        (S.REJECTED, S.MANUFACTURING_APPROVED, True),
        (S.FAILED, S.PRICE_CALCULATED, True),
        (S.FAILED, S.CLOSED, True),
        (S.REJECTED, S.FAILED, True),
    ],
)
def test_is_behind(current: OrderStatus, incoming: OrderStatus, behind: bool) -> None:
    assert is_behind(current, incoming) is behind


@pytest.mark.parametrize(("earlier", "later"), list(itertools.combinations(HAPPY, 2)))
def test_is_behind_along_the_happy_path(earlier: OrderStatus, later: OrderStatus) -> None:
    assert is_behind(later, earlier)
    assert not is_behind(earlier, later)


@pytest.mark.parametrize(
    ("status", "key"),
    [
        (S.SUBMITTED, "order.submitted"),
        (S.PRICE_CALCULATED, "order.price_calculated"),
        (S.MANUFACTURING_APPROVED, "order.manufacturing_approved"),
        (S.MANUFACTURING_STARTED, "order.manufacturing_started"),
        (S.MANUFACTURING_COMPLETED, "order.manufacturing_completed"),
        (S.SHIPPED, "order.shipped"),
        (S.CLOSED, "order.closed"),
        (S.REJECTED, "order.rejected"),
        (S.FAILED, "order.failed"),
    ],
)
def test_routing_key(status: OrderStatus, key: str) -> None:
    assert routing_key(status) == key


def test_every_key_a_queue_binds_is_a_status_routing_key() -> None:
    keys = {routing_key(status) for status in OrderStatus}
    for spec in QUEUES.values():
        for binding in spec.bindings:
            assert binding == "order.*" or binding in keys, (spec.name, binding)


@pytest.mark.parametrize("index", range(len(HAPPY)))
def test_an_order_leaving_a_happy_status_has_had_every_one_before_it(index: int) -> None:
    assert had_by_leaving(HAPPY[index]) == tuple(HAPPY[: index + 1])


@pytest.mark.parametrize("final", [S.REJECTED, S.FAILED])
def test_a_final_status_off_the_happy_path_is_never_left(final: OrderStatus) -> None:
    assert had_by_leaving(final) == ()
    assert allowed_next(final) == frozenset()
