"""The order projection: from decoded spans to each order's row (status, where it got it,
deadline, when it counts as broken). Pure: no I/O; store.py reads the rows, hands them here
and writes back what changed.

Spans arrive late, twice and out of order, so the rules are ones that give the same row
whatever order they come in:

* an order's status is the furthest any span reports, in the lifecycle's own order
  (loupe.orders.lifecycle.HAPPY_PATH, then REJECTED, then FAILED), so a late span never moves
  it back;
* of the spans that report the same status, the one that began first is the move; later ones
  are copies following it (another service mirroring the event);
* an order is broken by an error after its last move, once the SLO's grace is over (at once
  for a dead letter); an order that reached CLOSED, REJECTED or FAILED is not judged by
  errors (FAILED and REJECTED are broken by themselves).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from loupe.monitor.slo import Slo
from loupe.monitor.spans import SpanFacts
from loupe.orders import OrderStatus
from loupe.orders.lifecycle import HAPPY_PATH

# Stored in orders.rank: the numbers must not change (rows written before keep theirs).
_RANK = {status.value: index for index, status in enumerate(HAPPY_PATH)}
_RANK[OrderStatus.REJECTED.value] = 100
_RANK[OrderStatus.FAILED.value] = 101
BROKEN_STATUSES = (OrderStatus.FAILED.value, OrderStatus.REJECTED.value)
FINAL_RANK = _RANK[OrderStatus.CLOSED.value]


def rank(status: str | None) -> int:
    """How far along its lifecycle `status` is (-1 for none or an unknown one)."""
    return _RANK.get(status or "", -1)


@dataclass
class OrderRow:
    """One row of the `orders` table: what the monitor knows of the order now."""

    order_id: str
    status: str | None
    rank: int
    status_began: datetime
    status_at: datetime
    service: str | None = None
    operation: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    source: str | None = None
    deadline: datetime | None = None
    broken_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> OrderRow:
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    @classmethod
    def new(cls, span: SpanFacts) -> OrderRow:
        """An order known so far only by this span: no status until a move is seen."""
        return cls(span.order_id or "", None, -1, span.started_at, span.ended_at)


@dataclass(frozen=True)
class StoredError:
    """An error span of an order, as judged for brokenness (refused steps left out)."""

    at: datetime
    dead_lettered: bool


@dataclass
class Projection:
    """The orders after a batch of spans: every row read or made (by order id), the ids of
    those that changed, and (from, to, seconds) of each move whose previous status was seen."""

    orders: dict[str, OrderRow]
    changed: set[str] = field(default_factory=set)
    durations: list[tuple[str, str, float]] = field(default_factory=list)

    def open_orders(self) -> list[OrderRow]:
        """The changed orders whose errors decide whether they are broken: not yet final."""
        return [
            o for o in self.orders.values() if o.order_id in self.changed and o.rank < FINAL_RANK
        ]

    def changed_rows(self) -> list[OrderRow]:
        return [o for o in self.orders.values() if o.order_id in self.changed]


def place_key(service: str, place: str) -> str:
    """A place's key in the `flow` table (SQL: `service || '|' || place`)."""
    return f"{service}|{place}"


TELEMETRY = "telemetry"
"""The place where the monitor hears from a service that sends heartbeats: its `flow` row has
the end of the latest span received from it (store.heard_from)."""


def flow_keys(span: SpanFacts) -> Iterable[str]:
    """The places an order passed through without error in `span`: its service and place, and
    the step it moved on from. An incident at such a place resolves once an order flows again."""
    if span.error or not span.order_id:
        return ()
    keys = [place_key(span.service, span.place)]
    if span.transition and span.status_from:
        keys.append(f"step:{span.status_from}")
    return keys


def advance(
    rows: Iterable[OrderRow],
    transitions: Sequence[SpanFacts],
    errors: Sequence[SpanFacts],
    slo: Slo,
) -> Projection:
    """Moves each order on by the new `transitions` (spans not seen before), and notes the
    orders the new `errors` concern. Each order's broken time is settled afterwards, by
    `mark_broken`, from every error stored for it."""
    projection = Projection({row.order_id: row for row in rows})
    orders = projection.orders
    for span in sorted(transitions, key=lambda s: s.started_at):
        assert span.order_id and span.status_to
        order = orders.get(span.order_id)
        step_rank = rank(span.status_to)
        if order is None:
            order = orders[span.order_id] = OrderRow.new(span)
        moves_on = step_rank > order.rank
        # The same status from a span that began earlier: that one is the move, the other a
        # copy following it.
        origin = step_rank == order.rank and span.started_at < order.status_began
        if not (moves_on or origin):
            continue
        if moves_on and order.status == span.status_from and order.status is not None:
            seconds = (span.ended_at - order.status_at).total_seconds()
            projection.durations.append((order.status, span.status_to, max(seconds, 0.0)))
        if moves_on:
            order.broken_at = span.ended_at if span.status_to in BROKEN_STATUSES else None
        order.status, order.rank = span.status_to, step_rank
        order.status_began, order.status_at = span.started_at, span.ended_at
        order.service, order.operation = span.service, span.name
        order.trace_id, order.span_id = span.trace_id, span.span_id
        order.source = span.source or order.source
        step = slo.step(order.status)
        order.deadline = order.status_at + step.within if step else None
        projection.changed.add(order.order_id)

    for span in errors:
        # An error that names no order (a poison message that is not JSON) is a finding of
        # its own (detection's orphan dead letters), not part of any order's projection.
        if span.order_id is None:
            continue
        if span.order_id not in orders:
            orders[span.order_id] = OrderRow.new(span)
        projection.changed.add(span.order_id)
    return projection


def mark_broken(
    projection: Projection, stored: Mapping[str, Sequence[StoredError]], slo: Slo
) -> None:
    """Sets when each open order of `projection` counts as broken: the earliest error after
    its last move plus the grace (none for a dead letter), or never. Recomputed from every
    stored error of the order (`stored`, by order id), so late spans land right either way."""
    for order in projection.open_orders():
        due = [
            error.at + (timedelta(0) if error.dead_lettered else slo.error_grace)
            for error in stored.get(order.order_id, ())
            if order.status is None or error.at > order.status_at
        ]
        order.broken_at = min(due) if due else None
