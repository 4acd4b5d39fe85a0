"""Runs the drills one at a time on one `loupe up`, each followed by a settling time and an
audit, and gives their results as rows of the table in docs/reliability.md."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from rich.console import Console

from loupe.actors import Workshop
from loupe.bench.slo import slo_toml
from loupe.drills.audit import (
    SpanCounters,
    contradicted,
    read_monitor,
    read_orders,
    read_spans,
    spans_since,
)
from loupe.drills.faults import Fault
from loupe.drills.stack import LoupeUp
from loupe.monitor.models import FindingKind
from loupe.orders import OrderStatus
from loupe.stack.sandbox import Sandbox

# Shorter than the demo's 30 s, so a 20 s fault makes orders late enough to open an incident.
SLO_SECONDS = 10.0
SLO_FILE = slo_toml(f"{SLO_SECONDS:g}s", f"{SLO_SECONDS:g}s")
SETTLE_TIMEOUT = 120.0
# How long a stuck finding may lag the databases before it counts as contradicted: the
# monitor sees a move a few seconds after it happened (batching, detection ticks).
MONITOR_LAG = 10.0
CUSTOMER_INTERVAL = 1.0


@dataclass(eq=False)
class Customer(threading.Thread):
    """A customer placing an order at the shop every `interval` seconds, keeping the answers:
    an HTTP status, or None where no answer came (refused, reset, timed out)."""

    loupe: LoupeUp
    interval: float = CUSTOMER_INTERVAL
    answers: list[tuple[float, int | None]] = field(default_factory=list)
    _done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(name="drill customer", daemon=True)

    def run(self) -> None:
        asyncio.run(self._orders())

    async def _orders(self) -> None:
        workshop = Workshop(self.loupe.sandbox.settings, seed=7)
        try:
            while not self._done.is_set():
                began = time.time()
                try:
                    await workshop.place_order()
                    answer: int | None = 201
                except httpx.HTTPStatusError as exc:
                    answer = exc.response.status_code
                except httpx.HTTPError:
                    answer = None
                self.answers.append((began, answer))
                await asyncio.sleep(max(0.0, self.interval - (time.time() - began)))
        finally:
            await workshop.close()

    def stop(self) -> None:
        self._done.set()
        self.join(30)

    def between(self, start: float, end: float) -> list[int | None]:
        return [answer for at, answer in self.answers if start <= at <= end]


@dataclass
class DrillResult:
    fault: str
    lasted: float
    submitted: int
    closed: int
    moving: int
    failed: int
    lost: int
    ghosts: int
    requests: int
    answered_5xx: int
    answered_500: int
    """5xx other than 503: an error, where a 503 (with Retry-After) is a refusal by design."""
    unanswered: int
    broker_only: bool
    spans: SpanCounters
    monitor_behind: int
    """Orders submitted during the fault whose last move the monitor has not seen."""
    incidents: list[str]
    incident_kinds: set[str]
    blinds_monitor: bool
    contradicted: list[str]
    """Each order the monitor reports stuck although the databases show it moved on."""
    settled: float | None
    outbox_left: int

    @property
    def passed(self) -> bool:
        """What the drills promise: nothing lost, no ghost, every span the services sent
        received by the monitor, no finding the databases contradict, no 5xx while only the
        broker was away, and a monitor that, blinded, says so and reports nothing else."""
        return (
            self.lost == 0
            and self.spans.lost == 0
            and not self.spans.unreceived
            and self.ghosts == 0
            and not self.contradicted
            and not (self.blinds_monitor and self.incident_kinds != {FindingKind.TELEMETRY_GAP})
            and self.answered_500 == 0
            and self.settled is not None
            and not (self.broker_only and (self.answered_5xx or self.unanswered))
        )

    def row(self) -> str:
        incidents = "; ".join(self.incidents) or "none"
        settled = f"{self.settled:.0f} s" if self.settled is not None else "not settled"
        return (
            f"| {self.fault} | {self.lasted:.0f} s | {self.submitted} | {self.closed} / "
            f"{self.moving} / {self.failed} | **{self.lost}** | **{self.ghosts}** | "
            f"{self.answered_5xx} / {self.unanswered} of {self.requests} | "
            f"{sum(self.spans.sent.values()):.0f} / {sum(self.spans.received.values()):.0f} / "
            f"{self.spans.lost:.0f} "
            f"| {self.monitor_behind} | {incidents} | **{len(self.contradicted)}** | {settled} |"
        )


TABLE_HEADER = (
    "| drill | lasted | orders submitted | closed / moving / failed | lost | ghosts "
    "| customer 5xx / no answer | services' spans sent / received / lost | monitor behind "
    "| incidents | findings contradicted | settled in |\n"
    "|---|---:|---:|---|---:|---:|---|---|---:|---|---:|---:|"
)


@contextmanager
def running_loupe(root: Path) -> Iterator[LoupeUp]:
    root.mkdir(parents=True, exist_ok=True)
    slo_file = root / "slo.toml"
    slo_file.write_text(SLO_FILE)
    with Sandbox(root) as sandbox:
        loupe = LoupeUp(sandbox, slo_file)
        loupe.start()
        try:
            yield loupe
        finally:
            loupe.stop()


def drill(loupe: LoupeUp, fault: Fault, console: Console) -> DrillResult:
    """Inject `fault` while a customer keeps ordering, let the system settle, then audit."""
    customer = Customer(loupe)
    spans_before = read_spans(loupe)
    started = datetime.now(UTC)
    customer.start()
    began = time.time()
    try:
        with console.status(f"drill: {fault.name}"):
            fault.inject(loupe)
    finally:
        customer.stop()
    ended = time.time()
    console.print(f"[green]✓[/] {fault.name}: done in {ended - began:.0f} s; settling")
    settled = _settle(loupe, started)
    # An order the fault left without its next move is reported stuck one SLO later: wait that
    # long after the fault, so this drill's audit sees it, not the next one's.
    time.sleep(max(0.0, SLO_SECONDS - (time.time() - ended)))
    return asyncio.run(_audit(loupe, fault, customer, began, ended, started, spans_before, settled))


def _settle(loupe: LoupeUp, started: datetime) -> float | None:
    """Seconds until the outboxes are empty and every incident the drill opened has resolved;
    None when that did not happen within SETTLE_TIMEOUT."""
    began = time.monotonic()
    settings = loupe.sandbox.settings
    while time.monotonic() - began < SETTLE_TIMEOUT:
        _, _, waiting = asyncio.run(read_orders(settings))
        monitor = asyncio.run(read_monitor(settings, started))
        if waiting == 0 and all(i.resolved_at is not None for i in monitor.incidents):
            return time.monotonic() - began
        time.sleep(2)
    return None


async def _audit(
    loupe: LoupeUp,
    fault: Fault,
    customer: Customer,
    began: float,
    ended: float,
    started: datetime,
    spans_before: SpanCounters,
    settled: float | None,
) -> DrillResult:
    settings = loupe.sandbox.settings
    orders, shop_sourced, waiting = await read_orders(settings)
    # Counted twice, MONITOR_LAG apart: only what stays contradicted is the monitor's error.
    # Only orders that moved since the drill began: an earlier drill's are its own.
    first = contradicted(orders, (await read_monitor(settings, started)).stuck, started)
    await asyncio.sleep(MONITOR_LAG)
    orders, shop_sourced, waiting = await read_orders(settings)
    monitor = await read_monitor(settings, started)
    wrong = first & contradicted(orders, monitor.stuck, started)
    at = {finding.order_id: finding.status for finding in monitor.stuck}

    submitted = orders.submitted_between(
        datetime.fromtimestamp(began, UTC), datetime.fromtimestamp(ended, UTC)
    )
    statuses = [orders.status(order_id) for order_id in submitted]
    answers = customer.between(began, ended)
    return DrillResult(
        fault=fault.name,
        lasted=ended - began,
        submitted=len(submitted),
        closed=statuses.count(OrderStatus.CLOSED),
        moving=sum(1 for s in statuses if s is not None and not s.terminal),
        failed=sum(1 for s in statuses if s in (OrderStatus.FAILED, OrderStatus.REJECTED)),
        lost=len(orders.lost(submitted)),
        ghosts=len(orders.ghosts(shop_sourced)),
        requests=len(answers),
        answered_5xx=sum(1 for a in answers if a is not None and a >= 500),
        answered_500=sum(1 for a in answers if a is not None and a >= 500 and a != 503),
        unanswered=answers.count(None),
        broker_only=fault.broker_only,
        spans=spans_since(loupe, spans_before),
        incidents=[i.describe() for i in monitor.incidents],
        incident_kinds={i.state for i in monitor.incidents},
        blinds_monitor=fault.blinds_monitor,
        monitor_behind=len(monitor.behind(orders, submitted)),
        contradicted=[
            f"{order_id}: stuck at {at[order_id]}, the databases say {orders.status(order_id)}"
            for order_id in sorted(wrong)
        ],
        settled=settled,
        outbox_left=waiting,
    )
