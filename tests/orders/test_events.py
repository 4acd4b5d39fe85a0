"""The order status event: one schema, one parser that rejects bad input by naming the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from loupe.orders import OrderEvent, OrderEventError, OrderSource, OrderStatus

ORDER_ID = "3f0c8a52-9d4e-4b61-8f2a-61d0c2b5e7a1"


def _valid(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_id": ORDER_ID,
        "status": "PRICE_CALCULATED",
        "previous_status": "SUBMITTED",
        "source": "shop",
        "occurred_at": "2024-05-01T10:00:00+00:00",
        "price": 412.5,
        "currency": "EUR",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not _MISSING}


_MISSING: Any = object()


def _parse(body: dict[str, Any] | list[Any] | str) -> OrderEvent:
    return OrderEvent.from_json(json.dumps(body).encode())


def test_full_event_round_trips() -> None:
    event = OrderEvent(
        order_id=ORDER_ID,
        status=OrderStatus.PRICE_CALCULATED,
        previous_status=OrderStatus.SUBMITTED,
        source=OrderSource.B2B,
        occurred_at="2024-05-01T10:00:00+00:00",
        model_sha256="ab" * 32,
        model_url="http://127.0.0.1:8081/models/" + "ab" * 32,
        price=412.5,
        currency="EUR",
        reason="because",
    )
    assert OrderEvent.from_json(event.to_json()) == event


def test_minimal_event_round_trips_and_leaves_out_empty_fields() -> None:
    event = OrderEvent.now(
        order_id=ORDER_ID,
        status=OrderStatus.SUBMITTED,
        previous_status=None,
        source=OrderSource.SHOP,
    )
    body = json.loads(event.to_json())
    assert set(body) == {"order_id", "status", "source", "occurred_at"}
    assert body["status"] == "SUBMITTED"
    assert body["source"] == "shop"
    parsed = OrderEvent.from_json(event.to_json())
    assert parsed == event
    assert parsed.status is OrderStatus.SUBMITTED
    assert parsed.previous_status is None


def test_now_stamps_the_current_time_in_utc() -> None:
    before = datetime.now(UTC)
    event = OrderEvent.now(
        order_id="o", status=OrderStatus.SUBMITTED, previous_status=None, source=OrderSource.SHOP
    )
    stamped = datetime.fromisoformat(event.occurred_at)
    assert stamped.utcoffset() == timedelta(0)
    assert before <= stamped <= datetime.now(UTC)


def test_an_integer_price_is_read_as_a_float() -> None:
    event = _parse(_valid(price=400))
    assert event.price == 400.0
    assert isinstance(event.price, float)


events = st.builds(
    OrderEvent,
    order_id=st.text(min_size=1),
    status=st.sampled_from(OrderStatus),
    previous_status=st.none() | st.sampled_from(OrderStatus),
    source=st.sampled_from(OrderSource),
    occurred_at=st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
    model_sha256=st.none() | st.text(min_size=1),
    model_url=st.none() | st.text(min_size=1),
    price=st.none() | st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    currency=st.none() | st.text(min_size=1),
    reason=st.none() | st.text(),
)


@given(events)
def test_any_event_round_trips(event: OrderEvent) -> None:
    assert OrderEvent.from_json(event.to_json()) == event


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"{", b"\xff\xfe\x00garbage", b"{'order_id': 'single quotes'}"],
)
def test_non_json_is_refused(body: bytes) -> None:
    with pytest.raises(OrderEventError, match="not JSON") as raised:
        OrderEvent.from_json(body)
    assert raised.value.order_id is None


@pytest.mark.parametrize("body", [[], [ORDER_ID], "SUBMITTED", 42, None, True])
def test_non_object_is_refused(body: Any) -> None:
    with pytest.raises(OrderEventError, match="JSON object") as raised:
        _parse(body)
    assert raised.value.order_id is None


@pytest.mark.parametrize("order_id", [_MISSING, None, "", 42, ["x"], {"id": "x"}])
def test_missing_or_bad_order_id_is_refused(order_id: Any) -> None:
    with pytest.raises(OrderEventError, match="order_id") as raised:
        _parse(_valid(order_id=order_id))
    assert raised.value.order_id is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", _MISSING),
        ("status", None),
        ("status", "NOPE"),
        ("status", "submitted"),
        ("status", 3),
        ("status", ["SUBMITTED"]),
        ("previous_status", "NOPE"),
        ("previous_status", ""),
        ("source", _MISSING),
        ("source", "SHOP"),
        ("source", "fax"),
        ("occurred_at", _MISSING),
        ("occurred_at", 1714557600),
        ("occurred_at", "yesterday"),
        ("occurred_at", "2024-13-01T00:00:00"),
        ("price", "412.50"),
        ("price", True),
        ("price", [412.5]),
        ("price", {"amount": 1}),
        ("price", -5),
        ("currency", 978),
        ("model_sha256", 1),
        ("model_url", False),
        ("reason", ["x"]),
    ],
)
def test_bad_field_is_refused_naming_the_field_and_keeping_the_order_id(
    field: str, value: Any
) -> None:
    with pytest.raises(OrderEventError) as raised:
        _parse(_valid(**{field: value}))
    assert field in str(raised.value)
    assert raised.value.order_id == ORDER_ID


def test_bad_status_message_lists_what_is_allowed() -> None:
    with pytest.raises(OrderEventError) as raised:
        _parse(_valid(status="PAID"))
    text = str(raised.value)
    assert "'PAID'" in text
    assert "SUBMITTED" in text
    assert "CLOSED" in text


def test_order_event_error_is_a_value_error() -> None:
    assert issubclass(OrderEventError, ValueError)


def _only_order_event_errors(body: bytes) -> None:
    try:
        event = OrderEvent.from_json(body)
    except OrderEventError:
        return
    # When it parses, it is a well-formed event.
    assert event.order_id
    assert isinstance(event.status, OrderStatus)
    assert isinstance(event.source, OrderSource)


@given(st.binary())
@example(b'{"order_id": "o", "status": "SUBMITTED", "source": "shop", "occurred_at": "2024"}')
@example(b"\x00")
@example("{}".encode("utf-16"))
def test_arbitrary_bytes_raise_nothing_but_order_event_error(body: bytes) -> None:
    _only_order_event_errors(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=8,
)
fields = st.sampled_from(
    [
        "order_id",
        "status",
        "previous_status",
        "source",
        "occurred_at",
        "model_sha256",
        "model_url",
        "price",
        "currency",
        "reason",
    ]
)
near_valid_values = (
    json_values
    | st.sampled_from(OrderStatus).map(str)
    | st.sampled_from(OrderSource).map(str)
    | st.datetimes().map(datetime.isoformat)
)


@given(st.dictionaries(fields, near_valid_values))
def test_near_valid_objects_raise_nothing_but_order_event_error(body: dict[str, Any]) -> None:
    _only_order_event_errors(json.dumps(body).encode())


BUG_EVENTS = (
    "src/loupe/orders/events.py: from_json lets some bad bodies escape as other exceptions "
    "(OverflowError, RecursionError, ValueError), so the consumer retries a poison message "
    "instead of dead-lettering it at once"
)


@pytest.mark.parametrize(
    "body",
    [
        # A price too large for a float: OverflowError from float().
        json.dumps(_valid(price=10**400)).encode(),
        # Deeply nested JSON: RecursionError from json.loads.
        b"[" * 100_000 + b"]" * 100_000,
        # A number longer than Python reads: plain ValueError from json.loads.
        b'{"order_id": "o", "price": 1' + b"0" * 5000 + b"}",
    ],
    ids=["huge-price", "deep-nesting", "long-number"],
)
def test_unreadable_numbers_and_nesting_are_order_event_errors(body: bytes) -> None:
    with pytest.raises(OrderEventError):
        OrderEvent.from_json(body)
