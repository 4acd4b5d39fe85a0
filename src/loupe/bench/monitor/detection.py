"""Part 2, detection latency: with SUBMITTED allowed a few seconds, a few hundred orders are
submitted at random moments and never priced; each finding's `detected_at - deadline` is read
from the monitor's database. First on a quiet monitor, then while it ingests a steady flow of
other orders' spans at shares of the rate it took in part 1."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from rich.console import Console
from rich.progress import Progress, TaskID

from loupe.bench.journeys import WARM_UP, Batch, Journeys, spans_per_order, submissions
from loupe.bench.measure import metric_sum, percentile
from loupe.bench.monitor import harness

DETECTION_AIM = 2.0
HISTOGRAM = "loupe_monitor_detection_latency_seconds"


@dataclass
class Detection:
    phase: str
    orders: int
    spread_seconds: float
    slo_seconds: float
    latencies: list[float]  # detected_at - deadline, one per order found stuck
    background_spans_per_second: float = 0.0  # achieved, while the orders were submitted
    histogram_count: float = 0.0
    histogram_within_aim: float = 0.0

    @property
    def missing(self) -> int:
        return self.orders - len(self.latencies)

    @property
    def meets_aim(self) -> bool:
        return not self.missing and percentile(self.latencies, 99) <= DETECTION_AIM


async def detection_phase(
    monitor: harness.RunningMonitor,
    phase: str,
    orders: int,
    spread_seconds: float,
    slo_seconds: float,
    seed: int,
    console: Console,
    background: Sequence[Batch] = (),
    background_rate: float = 0.0,
) -> Detection:
    """Submit `orders` orders at random moments over `spread_seconds`, each in a request of
    its own, and never move them on; then read how long after each one's deadline the
    monitor found it stuck. `background` requests go meanwhile at `background_rate` spans/s."""
    journeys = Journeys(seed)
    arrivals = sorted(journeys.uniform(spread_seconds) for _ in range(orders))
    order_ids: list[str] = []
    async with harness.http_client(monitor.authorization) as client:
        before = await harness.scrape(client, monitor.metrics_url)
        submitting = True
        loaded = 0

        async def load() -> None:
            # Paced by the spans already due, so a slow answer is caught up afterwards.
            nonlocal loaded
            started = time.perf_counter()
            for batch in background:
                due = started + loaded / background_rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                if not submitting:
                    return
                await harness.send_all(client, monitor.intake, [batch], 1)
                loaded += batch.spans

        async def submit(bar: Progress, task: TaskID) -> None:
            batch, ids = submissions(journeys, 1, time.time_ns())
            order_ids.extend(ids)
            await harness.send_all(client, monitor.intake, [batch], 1)
            bar.advance(task)

        loader = asyncio.create_task(load()) if background else None
        with harness.progress(console) as bar:
            task = bar.add_task(f"detection ({phase}): orders submitted", total=orders)
            started = time.perf_counter()
            sends = []
            for at in arrivals:
                await asyncio.sleep(max(0.0, started + at - time.perf_counter()))
                sends.append(asyncio.create_task(submit(bar, task)))
            await asyncio.gather(*sends)
            submitted_seconds = time.perf_counter() - started
        submitting = False
        if loader is not None:
            await loader
        with console.status(f"detection ({phase}): waiting for the last findings"):
            latencies = await _lateness(monitor, order_ids, slo_seconds)
        after = await harness.scrape(client, monitor.metrics_url)
    count, within = _histogram(before, after)
    return Detection(
        phase=phase,
        orders=len(order_ids),
        spread_seconds=spread_seconds,
        slo_seconds=slo_seconds,
        latencies=latencies,
        background_spans_per_second=loaded / submitted_seconds,
        histogram_count=count,
        histogram_within_aim=within,
    )


async def _lateness(
    monitor: harness.RunningMonitor, order_ids: list[str], slo_seconds: float
) -> list[float]:
    """`detected_at - deadline` of each order found stuck, once all are found or after
    `slo_seconds` and half a minute more."""
    connection = await asyncpg.connect(monitor.dsn)
    try:

        async def all_found() -> bool:
            found = await connection.fetchval(
                "SELECT count(*) FROM findings WHERE order_id = ANY($1::text[])", order_ids
            )
            return found >= len(order_ids)

        with contextlib.suppress(TimeoutError):
            await harness.wait_until(all_found, slo_seconds + 30.0, "every finding", 0.25)
        rows = await connection.fetch(
            "SELECT extract(epoch FROM detected_at - deadline)::float8 AS late"
            " FROM findings WHERE order_id = ANY($1::text[]) AND state = 'stuck'",
            order_ids,
        )
    finally:
        await connection.close()
    return [row["late"] for row in rows]


def _histogram(before: str, after: str) -> tuple[float, float]:
    """Between two scrapes: the monitor's own detection latency observations, and how many of
    them were within the aim."""
    count = metric_sum(after, f"{HISTOGRAM}_count") - metric_sum(before, f"{HISTOGRAM}_count")
    le = {"le": f"{DETECTION_AIM:.1f}"}
    within = metric_sum(after, f"{HISTOGRAM}_bucket", le) - metric_sum(
        before, f"{HISTOGRAM}_bucket", le
    )
    return count, within


def _phases(
    part: harness.Part, args: argparse.Namespace, capacity: float
) -> list[tuple[str, list[Batch], float]]:
    """The quiet phase, then one per `--load-shares`: its name, its background requests and
    their rate, a share of `capacity` (spans per second)."""
    phases: list[tuple[str, list[Batch], float]] = [("quiet", [], 0.0)]
    per_batch = spans_per_order()[0] * args.orders_per_batch
    for n, share in enumerate(float(x) for x in str(args.load_shares).split(",") if x.strip()):
        rate = capacity * share
        duration = args.stuck_spread + args.slo_seconds + 5
        with part.console.status(f"making the spans for {share:.0%} load"):
            load = harness.flow(20 + n, int(rate * duration / per_batch) + 1, args.orders_per_batch)
        phases.append((f"{share:.0%} of that rate", load[WARM_UP:], rate))
    return phases


def measure(part: harness.Part, args: argparse.Namespace, capacity: float) -> list[Detection]:
    """Every phase in turn on one monitor whose SUBMITTED is due after `--slo-seconds`."""
    phases = _phases(part, args, capacity)
    detections = []
    with part.monitor("detect", "detection", harness.slo_toml(f"{args.slo_seconds:g}s")) as monitor:
        for seed, (phase, load, rate) in enumerate(phases, start=10):
            detection = asyncio.run(
                detection_phase(
                    monitor,
                    phase,
                    args.stuck_orders,
                    args.stuck_spread,
                    args.slo_seconds,
                    seed,
                    part.console,
                    load,
                    rate,
                )
            )
            detections.append(detection)
            part.time_yardstick()
            found = detection.latencies or [float("nan")]
            background = detection.background_spans_per_second
            part.console.print(
                f"detection ({phase}): {len(detection.latencies)}/{detection.orders} "
                f"found, p50 {harness.ms(percentile(found, 50))} ms, p99 "
                f"{harness.ms(percentile(found, 99))} ms, max {harness.ms(max(found))} ms"
                + (
                    f", while ingesting {harness.thousands(background)} spans/s"
                    if background
                    else ""
                )
            )
    return detections
