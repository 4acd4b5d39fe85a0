"""The status event every service publishes when it moves an order: one schema, one parser."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from loupe.orders.lifecycle import OrderSource, OrderStatus


class OrderEventError(ValueError):
    """A message body that is not a valid order event; the text names the field."""

    def __init__(self, message: str, order_id: str | None = None) -> None:
        super().__init__(message)
        self.order_id = order_id


@dataclass(frozen=True)
class OrderEvent:
    order_id: str
    status: OrderStatus
    previous_status: OrderStatus | None
    source: OrderSource
    occurred_at: str
    # Facts a consumer needs to act without calling back: where the 3D model is, the price.
    model_sha256: str | None = None
    model_url: str | None = None
    price: float | None = None
    currency: str | None = None
    reason: str | None = None

    @classmethod
    def now(cls, **fields: Any) -> OrderEvent:
        return cls(occurred_at=datetime.now(UTC).isoformat(), **fields)

    def to_json(self) -> bytes:
        body = {k: v for k, v in asdict(self).items() if v is not None}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, body: bytes) -> OrderEvent:
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise OrderEventError(f"body is not JSON: {exc}") from None
        except (ValueError, RecursionError) as exc:
            # Numbers too long to read, or nesting too deep: hostile or broken, never retryable.
            raise OrderEventError(f"body is not readable JSON: {type(exc).__name__}") from None
        if not isinstance(data, dict):
            raise OrderEventError("body must be a JSON object")
        order_id = data.get("order_id")
        if not isinstance(order_id, str) or not order_id:
            raise OrderEventError("field order_id is missing or not a string")

        def enum(name: str, kind: type[Any], required: bool = True) -> Any:
            raw = data.get(name)
            if raw is None and not required:
                return None
            try:
                return kind(raw)
            except ValueError:
                raise OrderEventError(
                    f"field {name} is {raw!r}; expected one of {', '.join(kind)}", order_id
                ) from None

        def optional(name: str, kind: type | tuple[type, ...]) -> Any:
            raw = data.get(name)
            if raw is not None and (not isinstance(raw, kind) or isinstance(raw, bool)):
                raise OrderEventError(f"field {name} has the wrong type", order_id)
            return raw

        occurred_at = data.get("occurred_at")
        if not isinstance(occurred_at, str):
            raise OrderEventError("field occurred_at is missing or not a string", order_id)
        try:
            datetime.fromisoformat(occurred_at)
        except ValueError:
            raise OrderEventError("field occurred_at is not an ISO 8601 time", order_id) from None
        price = optional("price", (int, float))
        if price is not None:
            try:
                price = float(price)
            except OverflowError:
                raise OrderEventError("field price is too large", order_id) from None
            if not math.isfinite(price) or price < 0:
                raise OrderEventError("field price must be a finite, non-negative number", order_id)
        return cls(
            order_id=order_id,
            status=enum("status", OrderStatus),
            previous_status=enum("previous_status", OrderStatus, required=False),
            source=enum("source", OrderSource),
            occurred_at=occurred_at,
            model_sha256=optional("model_sha256", str),
            model_url=optional("model_url", str),
            price=price,
            currency=optional("currency", str),
            reason=optional("reason", str),
        )
