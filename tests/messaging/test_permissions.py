"""What each account may do on RabbitMQ, as derived from the topology (enforced by the broker:
test_permissions_enforced.py)."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from loupe.accounts import Account
from loupe.config import SERVICES
from loupe.messaging.permissions import (
    GRANTS,
    MANAGEMENT,
    MONITORING,
    NOTHING,
    exactly,
    password_matches,
)
from loupe.messaging.topology import (
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DEFAULT_EXCHANGE,
    EXCHANGES,
    ORDERS_EXCHANGE,
    QUEUES,
    RETRY_EXCHANGE,
    UNROUTABLE_QUEUE,
)

NAMES = (
    *EXCHANGES,
    DEFAULT_EXCHANGE,
    "amq.topic",
    UNROUTABLE_QUEUE,
    DEAD_LETTER_QUEUE,
    *QUEUES,
    *(spec.retry_queue for spec in QUEUES.values()),
)


def allowed(expression: str) -> set[str]:
    """The names an expression lets through, as RabbitMQ matches them (a search)."""
    return {name for name in NAMES if re.search(expression, name)}


def test_no_account_may_declare_or_delete_anything() -> None:
    assert {account: allowed(g.configure) for account, g in GRANTS.items()} == {
        account: set() for account in Account
    }


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_reads_only_its_own_work_queues_and_writes_only_loupes_exchanges(
    service: str,
) -> None:
    grant = GRANTS[Account(service)]
    own = {name for name, spec in QUEUES.items() if spec.service == service}
    assert own and allowed(grant.read) == own
    assert allowed(grant.write) == {ORDERS_EXCHANGE, RETRY_EXCHANGE, DEAD_LETTER_EXCHANGE}
    assert grant.tags == ()


def test_the_portal_reads_dead_letters_and_sends_them_back_straight_to_their_queue() -> None:
    grant = GRANTS[Account.PORTAL]
    assert allowed(grant.read) == {DEAD_LETTER_QUEUE}
    assert allowed(grant.write) == {DEFAULT_EXCHANGE}
    assert grant.tags == (MANAGEMENT,)


def test_the_monitor_reads_the_queues_it_peeks_and_writes_nothing() -> None:
    grant = GRANTS[Account.MONITOR]
    assert allowed(grant.read) == {UNROUTABLE_QUEUE, DEAD_LETTER_QUEUE}
    assert grant.write == NOTHING and allowed(grant.write) == set()
    assert grant.tags == (MONITORING,)


def test_exactly_matches_whole_names_with_their_dots_taken_literally() -> None:
    expression = exactly(["loupe.orders", "mes.order-submitted"])
    assert re.search(expression, "loupe.orders")
    assert not re.search(expression, "loupeXorders")
    assert not re.search(expression, "mes.order-submitted.retry")
    assert not re.search(expression, "x.loupe.orders")
    assert exactly([]) == NOTHING


def test_a_stored_password_hash_is_checked_as_rabbitmq_makes_it() -> None:
    # RabbitMQ's rabbit_password_hashing_sha256: base64(salt ++ sha256(salt ++ password)).
    salt = bytes.fromhex("908dc60a")
    stored = base64.b64encode(salt + hashlib.sha256(salt + b"right").digest()).decode()
    algorithm = "rabbit_password_hashing_sha256"
    assert password_matches("right", stored, algorithm)
    assert not password_matches("wrong", stored, algorithm)
    assert not password_matches("right", stored, "some_other_algorithm")
    assert not password_matches("right", "", algorithm)
