"""The monitor benchmark: what `loupe monitor` ingests, how soon after an SLO deadline it
reports a stuck order, and what attaching it costs Jaeger, all measured in one run.

1. Ingest: the real monitor process, in a sandbox of its own, takes OTLP/protobuf requests
   of orders' spans mixed with spans that name no order, in the proportions the services emit
   (see journeys.py), from a few concurrent clients; SLOs of a day leave detection idle.
2. Detection latency: with SUBMITTED allowed a few seconds, a few hundred orders are
   submitted over some seconds and never priced; each finding's `detected_at - deadline` is
   read from the monitor's database. First on a quiet monitor, then while it ingests a steady
   flow of other orders' spans at shares of the rate measured in 1.
3. Jaeger with and without the monitor: rounds take turns (ABAB) between Jaeger all-in-one
   alone and Jaeger with its monitor pipeline (the filter forwarding order spans to the
   running monitor); each round sends the same spans and times Jaeger until it has stored
   them all and, attached, until the monitor has received its share.

Results go to the console and to the `monitor` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from loupe.bench.journeys import (
    JOURNEY,
    SUBMISSION,
    WARM_UP,
    Batch,
    Journeys,
    spans_per_order,
    steady_flow,
    submissions,
)
from loupe.bench.measure import (
    cpu_by_group,
    cpu_used,
    machine,
    metric_sum,
    percentile,
    pids_named,
    spread,
)
from loupe.bench.report import write_section
from loupe.database import dsn_for
from loupe.monitor.settings import MonitorSettings
from loupe.monitor.spans import decode
from loupe.stack import Process, Stack
from loupe.stack.components import JaegerPorts, jaeger_process, monitor_process
from loupe.stack.sandbox import Sandbox

SECTION = "monitor"
PROTOBUF = {"Content-Type": "application/x-protobuf"}
POLL_SECONDS = 0.025
MONITOR_POLL_SECONDS = 0.1
SETTLE_TIMEOUT = 60.0
DETECTION_AIM = 2.0
LONG_SLO = "1d"
STEPS = (
    ("SUBMITTED", "mes-api", 'queue = "mes.order-submitted"'),
    ("PRICE_CALCULATED", "crm-api", 'queue = "crm.order-status"\nthen = "seller approval"'),
    ("MANUFACTURING_APPROVED", "mes-api", 'queue = "mes.order-decisions"\nthen = "take"'),
    ("MANUFACTURING_STARTED", "mes-api", 'then = "complete"'),
    ("MANUFACTURING_COMPLETED", "crm-api", 'queue = "crm.order-status"\nthen = "ship"'),
    ("SHIPPED", "crm-api", 'then = "close"'),
)
JAEGER_MODES = ("alone", "with monitor")


def slo_toml(submitted_within: str = LONG_SLO, others: str = LONG_SLO) -> str:
    """An SLO file for the benchmark: SUBMITTED within `submitted_within`, the rest `others`."""
    lines = ['error_grace = "1h"']
    for status, service, where in STEPS:
        within = submitted_within if status == "SUBMITTED" else others
        lines += ["", f"[steps.{status}]", f'within = "{within}"', f'service = "{service}"', where]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- results


@dataclass
class IngestRound:
    clients: int
    spans: int
    kept: int
    seconds: float
    latencies: list[float]
    received_reported: float  # the monitor's loupe_monitor_spans_received_total, delta
    kept_reported: float  # ... and loupe_monitor_spans_kept_total
    monitor_cpu: float
    postgres_cpu: float
    client_cpu: float
    machine_cpu: float = 0.0  # every process on the machine

    @property
    def rate(self) -> float:
        return self.spans / self.seconds

    @property
    def other_cpu(self) -> float:
        """What processes other than the monitor, PostgreSQL and the client used."""
        return max(0.0, self.machine_cpu - self.monitor_cpu - self.postgres_cpu - self.client_cpu)


@dataclass(frozen=True)
class IngestSummary:
    clients: int
    rounds: int
    spans_per_second: float
    kept_per_second: float
    p50: float
    p99: float
    monitor_cores: float
    postgres_cores: float
    client_cores: float
    other_cores: float
    spread: float


def ingest_summary(rounds: Sequence[IngestRound]) -> list[IngestSummary]:
    """Per number of clients, in the order first run: all its rounds' spans over their
    seconds, request latency percentiles, CPU in cores busy, and the rounds' spread."""
    summaries = []
    for clients in dict.fromkeys(r.clients for r in rounds):
        chosen = [r for r in rounds if r.clients == clients]
        seconds = sum(r.seconds for r in chosen)
        latencies = [x for r in chosen for x in r.latencies]
        summaries.append(
            IngestSummary(
                clients=clients,
                rounds=len(chosen),
                spans_per_second=sum(r.spans for r in chosen) / seconds,
                kept_per_second=sum(r.kept_reported for r in chosen) / seconds,
                p50=percentile(latencies, 50),
                p99=percentile(latencies, 99),
                monitor_cores=sum(r.monitor_cpu for r in chosen) / seconds,
                postgres_cores=sum(r.postgres_cpu for r in chosen) / seconds,
                client_cores=sum(r.client_cpu for r in chosen) / seconds,
                other_cores=sum(r.other_cpu for r in chosen) / seconds,
                spread=spread(r.rate for r in chosen),
            )
        )
    return summaries


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


@dataclass
class JaegerRound:
    mode: str
    spans: int
    kept: int
    posts_seconds: float  # until every POST was answered
    accepted_seconds: float  # until otelcol_receiver_accepted_spans reached the total
    stored_seconds: float  # until the storage exporter had sent them all
    monitor_seconds: float | None  # until the monitor had received its share (attached)
    jaeger_cpu: float
    monitor_cpu: float = 0.0
    machine_cpu: float = 0.0
    client_cpu: float = 0.0
    postgres_cpu: float = 0.0
    # From the first request until Jaeger (and, attached, the monitor) had everything: the
    # time the CPU figures cover.
    window_seconds: float = 0.0
    refused: float = 0.0  # spans refused by the receiver or failed by an exporter
    monitor_received: float = 0.0

    @property
    def seconds(self) -> float:
        """Until Jaeger had accepted and stored every span, whichever came last."""
        return max(self.posts_seconds, self.accepted_seconds, self.stored_seconds)

    @property
    def rate(self) -> float:
        return self.spans / self.seconds

    @property
    def posts_rate(self) -> float:
        return self.spans / self.posts_seconds

    @property
    def other_cpu(self) -> float:
        """What processes other than Jaeger, the monitor, PostgreSQL and the client used."""
        ours = self.jaeger_cpu + self.monitor_cpu + self.postgres_cpu + self.client_cpu
        return max(0.0, self.machine_cpu - ours)


@dataclass
class Results:
    ingest: list[IngestRound]
    ingest_batches: int
    request_bytes: int
    detections: list[Detection]
    rounds: list[JaegerRound]
    jaeger_batches: int
    jaeger_clients: int
    orders_per_batch: int
    tick_seconds: float
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    seconds: float = 0.0
    # µs per span of the same CPU-bound work, timed between parts and rounds (see yardstick)
    yardsticks: list[float] = field(default_factory=list)


# ---------------------------------------------------------------------------------- sending


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=60.0, trust_env=False, limits=httpx.Limits(max_connections=32))


async def send_all(
    client: httpx.AsyncClient,
    url: str,
    batches: Sequence[Batch],
    clients: int,
    on_sent: Callable[[], None] | None = None,
) -> list[float]:
    """POST every batch to `url` from `clients` concurrent senders; each request's seconds."""
    latencies: list[float] = []
    pending = iter(batches)

    async def sender() -> None:
        for batch in pending:
            started = time.perf_counter()
            response = await client.post(url, content=batch.body, headers=PROTOBUF)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(
                    f"POST {url} answered {response.status_code}: {response.text[:200]}"
                )
            if on_sent is not None:
                on_sent()

    await asyncio.gather(*(sender() for _ in range(clients)))
    return latencies


async def scrape(client: httpx.AsyncClient, url: str) -> str:
    response = await client.get(url)
    response.raise_for_status()
    return response.text


async def wait_until(
    check: Callable[[], Awaitable[bool]], limit: float, what: str, poll: float = 0.1
) -> None:
    """Poll `check` until it is true; TimeoutError after `limit` seconds."""
    deadline = time.monotonic() + limit
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {limit:.0f} s")
        await asyncio.sleep(poll)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        refresh_per_second=4,
    )


def yardstick(batches: Sequence[Batch]) -> float:
    """Microseconds per span the monitor's own decoder takes over `batches`, in this process:
    the same CPU-bound work every time, so how it varies over a run shows how much the
    machine's own speed did (a virtual machine's cores are shared with its neighbours)."""
    started = time.perf_counter()
    for batch in batches:
        decode(batch.body)
    return (time.perf_counter() - started) / sum(b.spans for b in batches) * 1e6


# ---------------------------------------------------------------------------------- monitor


@dataclass
class RunningMonitor:
    process: Process
    settings: MonitorSettings

    @property
    def intake(self) -> str:
        return f"{self.settings.url}/v1/traces"

    @property
    def metrics_url(self) -> str:
        return f"{self.settings.url}/metrics"

    @property
    def dsn(self) -> str:
        return dsn_for(self.settings.base.postgres_dsn, self.settings.database)

    async def received(self, client: httpx.AsyncClient) -> tuple[float, float]:
        text = await scrape(client, self.metrics_url)
        return (
            metric_sum(text, "loupe_monitor_spans_received_total"),
            metric_sum(text, "loupe_monitor_spans_kept_total"),
        )


@contextlib.contextmanager
def running_monitor(sandbox: Sandbox, slo: str, otlp_endpoint: str) -> Iterator[RunningMonitor]:
    sandbox.root.mkdir(parents=True, exist_ok=True)
    slo_file = sandbox.root / "slo.toml"
    slo_file.write_text(slo)
    env = {
        **sandbox.env,
        "LOUPE_MONITOR_SLO_FILE": str(slo_file),
        "LOUPE_LOG_LEVEL": "WARNING",
    }
    process = monitor_process(env, otlp_endpoint=otlp_endpoint, logs_dir=sandbox.logs)
    settings = MonitorSettings.from_env({**os.environ, **env})
    with Stack([process]):
        yield RunningMonitor(process, settings)


# ---------------------------------------------------------------------------------- 1. ingest


async def ingest_round(
    monitor: RunningMonitor, batches: Sequence[Batch], clients: int, console: Console, label: str
) -> IngestRound:
    assert monitor.process.pid is not None
    async with _client() as client:
        received_before, kept_before = await monitor.received(client)
        groups = {"monitor": [monitor.process.pid], "postgres": pids_named("postgres")}
        cpu_before = cpu_by_group(groups)
        with _progress(console) as progress:
            task = progress.add_task(f"{label}: POST /v1/traces", total=len(batches))
            started = time.perf_counter()
            latencies = await send_all(
                client, monitor.intake, batches, clients, lambda: progress.advance(task)
            )
            seconds = time.perf_counter() - started
        used = cpu_used(cpu_before, cpu_by_group(groups))
        received_after, kept_after = await monitor.received(client)
    return IngestRound(
        clients=clients,
        spans=sum(b.spans for b in batches),
        kept=sum(b.kept for b in batches),
        seconds=seconds,
        latencies=latencies,
        received_reported=received_after - received_before,
        kept_reported=kept_after - kept_before,
        monitor_cpu=used["monitor"],
        postgres_cpu=used["postgres"],
        client_cpu=used["client"],
        machine_cpu=used["machine"],
    )


async def warm_up(monitor: RunningMonitor, batches: Sequence[Batch]) -> None:
    async with _client() as client:
        await send_all(client, monitor.intake, batches, 1)


# ---------------------------------------------------------------------------------- 2. detection


async def measure_detection(
    monitor: RunningMonitor,
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
    async with _client() as client:
        before = await scrape(client, monitor.metrics_url)
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
                await send_all(client, monitor.intake, [batch], 1)
                loaded += batch.spans

        async def submit(progress: Progress, task: TaskID) -> None:
            batch, ids = submissions(journeys, 1, time.time_ns())
            order_ids.extend(ids)
            await send_all(client, monitor.intake, [batch], 1)
            progress.advance(task)

        loader = asyncio.create_task(load()) if background else None
        with _progress(console) as progress:
            task = progress.add_task(f"detection ({phase}): orders submitted", total=orders)
            started = time.perf_counter()
            sends = []
            for at in arrivals:
                await asyncio.sleep(max(0.0, started + at - time.perf_counter()))
                sends.append(asyncio.create_task(submit(progress, task)))
            await asyncio.gather(*sends)
            submitted_seconds = time.perf_counter() - started
        submitting = False
        if loader is not None:
            await loader
        connection = await asyncpg.connect(monitor.dsn)
        try:

            async def all_found() -> bool:
                found = await connection.fetchval(
                    "SELECT count(*) FROM findings WHERE order_id = ANY($1::text[])", order_ids
                )
                return found >= len(order_ids)

            with (
                console.status(f"detection ({phase}): waiting for the last findings"),
                contextlib.suppress(TimeoutError),
            ):
                await wait_until(all_found, slo_seconds + 30.0, "every finding", 0.25)
            rows = await connection.fetch(
                "SELECT extract(epoch FROM detected_at - deadline)::float8 AS late"
                " FROM findings WHERE order_id = ANY($1::text[]) AND state = 'stuck'",
                order_ids,
            )
        finally:
            await connection.close()
        after = await scrape(client, monitor.metrics_url)
    name = "loupe_monitor_detection_latency_seconds"
    count = metric_sum(after, f"{name}_count") - metric_sum(before, f"{name}_count")
    le = {"le": f"{DETECTION_AIM:.1f}"}
    within = metric_sum(after, f"{name}_bucket", le) - metric_sum(before, f"{name}_bucket", le)
    return Detection(
        phase=phase,
        orders=len(order_ids),
        spread_seconds=spread_seconds,
        slo_seconds=slo_seconds,
        latencies=[row["late"] for row in rows],
        background_spans_per_second=loaded / submitted_seconds,
        histogram_count=count,
        histogram_within_aim=within,
    )


# ---------------------------------------------------------------------------------- 3. jaeger


@dataclass
class _Counters:
    accepted: float
    stored: float
    refused: float

    @classmethod
    def parse(cls, text: str) -> _Counters:
        storage = {"exporter": "jaeger_storage_exporter"}
        return cls(
            accepted=metric_sum(text, "otelcol_receiver_accepted_spans_total"),
            stored=metric_sum(text, "otelcol_exporter_sent_spans_total", storage),
            refused=metric_sum(text, "otelcol_receiver_refused_spans_total")
            + metric_sum(text, "otelcol_receiver_failed_spans_total")
            + metric_sum(text, "otelcol_exporter_send_failed_spans_total")
            + metric_sum(text, "otelcol_exporter_enqueue_failed_spans_total"),
        )


def jaeger_round(
    mode: str,
    ports: JaegerPorts,
    monitor: RunningMonitor,
    batches: Sequence[Batch],
    clients: int,
    logs_dir: Path,
    console: Console,
    label: str,
) -> JaegerRound:
    """One round: a fresh Jaeger (attached to `monitor` or not), warmed up, then timed."""
    process = jaeger_process(
        "memory",
        ports,
        logs_dir=logs_dir,
        monitor_endpoint=monitor.settings.url if mode == "with monitor" else None,
    )
    with Stack([process]):
        return asyncio.run(
            _jaeger_timed(process, mode, ports, monitor, batches, clients, console, label)
        )


async def _jaeger_timed(
    process: Process,
    mode: str,
    ports: JaegerPorts,
    monitor: RunningMonitor,
    batches: Sequence[Batch],
    clients: int,
    console: Console,
    label: str,
) -> JaegerRound:
    attached = mode == "with monitor"
    warm, timed = batches[:WARM_UP], batches[WARM_UP:]
    total, kept = sum(b.spans for b in timed), sum(b.kept for b in timed)
    jaeger_metrics = f"http://127.0.0.1:{ports.metrics}/metrics"
    intake = f"{ports.otlp_http_url}/v1/traces"
    assert process.pid is not None
    async with _client() as client:
        monitor_base, _ = await monitor.received(client)
        await send_all(client, intake, warm, 1)
        warm_spans, warm_kept = sum(b.spans for b in warm), sum(b.kept for b in warm)

        async def warmed() -> bool:
            counters = _Counters.parse(await scrape(client, jaeger_metrics))
            if counters.stored < warm_spans:
                return False
            received, _ = await monitor.received(client)
            return not attached or received - monitor_base >= warm_kept

        await wait_until(warmed, SETTLE_TIMEOUT, "the warm-up spans arriving")
        base = _Counters.parse(await scrape(client, jaeger_metrics))
        monitor_base, _ = await monitor.received(client)
        assert monitor.process.pid is not None
        groups = {
            "jaeger": [process.pid],
            "monitor": [monitor.process.pid],
            "postgres": pids_named("postgres"),
        }
        cpu_before = cpu_by_group(groups)
        reached: dict[str, float] = {}
        posts_done = asyncio.Event()

        async def watch(started: float) -> None:
            """Note when Jaeger had accepted and stored every span and, attached, when the
            monitor had received its share; Jaeger is no longer scraped once it has them."""
            deadline = None
            next_monitor = 0.0
            while True:
                now = time.perf_counter() - started
                if not {"accepted", "stored"} <= reached.keys():
                    counters = _Counters.parse(await scrape(client, jaeger_metrics))
                    if counters.accepted - base.accepted >= total:
                        reached.setdefault("accepted", now)
                    if counters.stored - base.stored >= total:
                        reached.setdefault("stored", now)
                    reached["refused"] = counters.refused - base.refused
                if attached and now >= next_monitor and "monitor" not in reached:
                    # Less often: the monitor is the busier of the two.
                    next_monitor = now + MONITOR_POLL_SECONDS
                    received, _ = await monitor.received(client)
                    reached["monitor_received"] = received - monitor_base
                    if received - monitor_base >= kept:
                        reached.setdefault("monitor", now)
                if {"accepted", "stored"} <= reached.keys() and (
                    not attached or "monitor" in reached
                ):
                    return
                if posts_done.is_set() and deadline is None:
                    deadline = time.perf_counter() + SETTLE_TIMEOUT
                if deadline is not None and time.perf_counter() > deadline:
                    return
                await asyncio.sleep(POLL_SECONDS)

        with _progress(console) as progress:
            task = progress.add_task(f"{label}: POST to Jaeger", total=len(timed))
            started = time.perf_counter()
            watcher = asyncio.create_task(watch(started))
            await send_all(client, intake, timed, clients, lambda: progress.advance(task))
            posts_seconds = time.perf_counter() - started
            posts_done.set()
            progress.update(task, description=f"{label}: waiting for Jaeger and the monitor")
            await watcher
            window = time.perf_counter() - started
        used = cpu_used(cpu_before, cpu_by_group(groups))
        final = _Counters.parse(await scrape(client, jaeger_metrics))
        reached["refused"] = final.refused - base.refused
    missing = [k for k in ("accepted", "stored") if k not in reached]
    if missing:
        raise TimeoutError(f"Jaeger ({mode}) never reached the total for {', '.join(missing)}")
    return JaegerRound(
        mode=mode,
        spans=total,
        kept=kept,
        posts_seconds=posts_seconds,
        accepted_seconds=reached["accepted"],
        stored_seconds=reached["stored"],
        monitor_seconds=reached.get("monitor"),
        jaeger_cpu=used["jaeger"],
        monitor_cpu=used["monitor"],
        machine_cpu=used["machine"],
        client_cpu=used["client"],
        postgres_cpu=used["postgres"],
        window_seconds=window,
        refused=reached.get("refused", 0.0),
        monitor_received=reached.get("monitor_received", 0.0),
    )


# ---------------------------------------------------------------------------------- report


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def jaeger_summary(rounds: Sequence[JaegerRound]) -> dict[str, dict[str, float]]:
    """Per mode: spans/s until stored and until the POSTs were answered (all rounds' spans
    over all rounds' seconds), Jaeger's CPU ms per 1000 spans, and the spread of the rounds."""
    summary = {}
    for mode in JAEGER_MODES:
        chosen = [r for r in rounds if r.mode == mode]
        if not chosen:
            continue
        spans = sum(r.spans for r in chosen)
        monitor_times = [r.monitor_seconds for r in chosen if r.monitor_seconds is not None]
        window = max(1e-9, sum(r.window_seconds for r in chosen))
        summary[mode] = {
            "rate": spans / sum(r.seconds for r in chosen),
            "posts_rate": spans / sum(r.posts_seconds for r in chosen),
            "cpu_per_1000": sum(r.jaeger_cpu for r in chosen) / spans * 1000 * 1000,
            "monitor_cpu_per_1000": sum(r.monitor_cpu for r in chosen) / spans * 1000 * 1000,
            "machine_cpu_per_1000": sum(r.machine_cpu for r in chosen) / spans * 1000 * 1000,
            "machine_cores": sum(r.machine_cpu for r in chosen) / window,
            "client_cores": sum(r.client_cpu for r in chosen) / window,
            "other_cores": sum(r.other_cpu for r in chosen) / window,
            "spread": spread(r.rate for r in chosen),
            "monitor_seconds": statistics.fmean(monitor_times) if monitor_times else 0.0,
            "seconds": statistics.fmean(r.seconds for r in chosen),
            "refused": sum(r.refused for r in chosen),
        }
    return summary


def report(results: Results) -> str:
    per_order, with_order, moves = spans_per_order()
    batch_spans = per_order * results.orders_per_batch
    lines = [
        "## The order-flow monitor: ingest, detection latency, and what it costs Jaeger",
        "",
        "Every figure in this section comes from one run of this benchmark "
        f"({results.seconds / 60:.1f} minutes in all); settings compared with each other were "
        "measured side by side in rounds that took turns.",
        "",
        f"- Run: {results.started.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {machine()}; PostgreSQL 15 and RabbitMQ on the same machine.",
        "- Spans: synthetic OTLP/protobuf shaped like the services' (`loupe.bench.journeys`, "
        f"after docs/tracing.md): a shop order's whole journey is {len(JOURNEY)} traces of "
        f"{per_order} spans, {with_order} with `order.id` ({moves} of them transitions) and "
        f"{per_order - with_order} without (database statements, people's HTTP requests, the "
        "model download), as counted in a real run of the pipeline. A request holds one "
        f"journey step of each of {len(JOURNEY) * results.orders_per_batch} orders at "
        f"different stages: {batch_spans} spans, {results.request_bytes / 1024:.0f} KiB, "
        "all encoded before the timing starts.",
        "- Monitor: `loupe monitor` as a process of its own, in a sandbox (its own PostgreSQL "
        f"database and port), detection every {results.tick_seconds:g} s "
        "(`LOUPE_MONITOR_TICK_SECONDS`, the default).",
        "",
    ]
    summaries = ingest_summary(results.ingest)
    if summaries:
        best = max(summaries, key=lambda x: x.spans_per_second)
        counts = " and ".join(str(x.clients) for x in summaries)
        sent = sum(r.spans for r in results.ingest)
        lines += [
            "### Ingest",
            "",
            f"Rounds of {results.ingest_batches} requests each, taking turns between "
            f"{counts} concurrent clients (after {WARM_UP} untimed warm-up requests), sent "
            "straight to the monitor's `POST /v1/traces`: every span of the journeys, as a "
            "collector without the filter would send them. SLOs of a day leave detection "
            "nothing to find.",
            "",
            "| | "
            + " | ".join(f"{x.clients} client{'s' if x.clients > 1 else ''}" for x in summaries)
            + " |",
            "|---|" + "---:|" * len(summaries),
        ]
        for label, value in (
            ("spans received per second", lambda x: _rate(x.spans_per_second)),
            ("order spans kept per second", lambda x: _rate(x.kept_per_second)),
            (
                f"orders' whole journeys per second ({per_order} spans each)",
                lambda x: f"{x.spans_per_second / per_order:.0f}",
            ),
            (
                f"request latency p50 / p99 (ms, {batch_spans} spans a request)",
                lambda x: f"{_ms(x.p50)} / {_ms(x.p99)}",
            ),
            ("monitor process CPU (cores busy)", lambda x: f"{x.monitor_cores:.2f}"),
            ("PostgreSQL CPU, all backends (cores busy)", lambda x: f"{x.postgres_cores:.2f}"),
            ("benchmark client CPU (cores busy)", lambda x: f"{x.client_cores:.2f}"),
            ("any other process's CPU (cores busy)", lambda x: f"{x.other_cores:.2f}"),
            (
                "rounds; their spread around the mean",
                lambda x: f"{x.rounds}; ±{x.spread * 100:.0f}%",
            ),
        ):
            lines.append(f"| {label} | " + " | ".join(value(x) for x in summaries) + " |")
        scaling = ""
        if len(summaries) > 1:
            low, high = summaries[0], summaries[-1]
            gain = high.spans_per_second / low.spans_per_second
            scaling = (
                f" {high.clients} concurrent clients got {gain:.2f} times the rate of "
                f"{low.clients}, with requests waiting "
                f"{high.p50 / low.p50:.1f} times as long (p50)."
            )
        lines += [
            "",
            f"The monitor ingests **{_rate(best.spans_per_second)} spans per second** "
            f"({_rate(best.kept_per_second)} of them kept) on this machine. Each round's "
            "spans per second, in the order they ran: "
            + ", ".join(f"{r.clients}c {_rate(r.rate)}" for r in results.ingest)
            + ". The monitor counted "
            f"{sum(r.received_reported for r in results.ingest):,.0f} spans received and "
            f"{sum(r.kept_reported for r in results.ingest):,.0f} kept "
            "(`loupe_monitor_spans_received_total`, `_kept_total`); "
            f"{sent:,} were sent, {sum(r.kept for r in results.ingest):,} with `order.id`."
            + scaling,
            "",
        ]
    if results.detections:
        first = results.detections[0]
        lines += [
            "### Detection latency after an SLO deadline",
            "",
            f"SLO: SUBMITTED within {first.slo_seconds:g} s. {first.orders} orders were "
            f"submitted at random moments over {first.spread_seconds:g} s, each in a request of "
            f"its own with the shop's and CRM's spans of the submission ({len(SUBMISSION)} "
            "spans), and never priced. Latency is each finding's `detected_at - deadline`, "
            "read from the monitor's `findings` table; the aim is p99 ≤ "
            f"{DETECTION_AIM:g} s. First on a quiet monitor, then while it ingested other "
            "orders' journeys (a steady flow as above) paced at a share of the rate it took in "
            "the ingest rounds; the table has the rate it took meanwhile.",
            "",
            "| monitor | ingesting meanwhile (spans/s) | orders | found | p50 (ms) | p99 (ms) "
            f"| max (ms) | p99 ≤ {DETECTION_AIM:g} s |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for d in results.detections:
            found = d.latencies or [float("nan")]
            lines.append(
                f"| {d.phase} | {_rate(d.background_spans_per_second)} | {d.orders} | "
                f"{len(d.latencies)} | {_ms(percentile(found, 50))} | "
                f"{_ms(percentile(found, 99))} | {_ms(max(found))} | "
                f"{'**yes**' if d.meets_aim else '**no**'} |"
            )
        lines += [
            "",
            "Cross-check with `loupe_monitor_detection_latency_seconds`: "
            + "; ".join(
                f"{d.phase}: {d.histogram_count:.0f} observations, "
                f"{d.histogram_within_aim:.0f} of them ≤ {DETECTION_AIM:g} s"
                for d in results.detections
            )
            + ".",
            "",
        ]
    summary = jaeger_summary(results.rounds)
    if len(summary) == len(JAEGER_MODES):
        alone, attached = (summary[m] for m in JAEGER_MODES)
        per_round = results.rounds[0].spans
        kept = results.rounds[0].kept
        ratio = attached["rate"] / alone["rate"]
        largest = max(alone["spread"], attached["spread"])
        lines += [
            "### Jaeger's ingest with and without the monitor attached",
            "",
            f"{len(results.rounds)} rounds taking turns: Jaeger all-in-one (memory storage) "
            "alone, then with `deploy/jaeger/monitor-pipeline.yaml` forwarding the spans with "
            "`order.id` or status ERROR to a running monitor over OTLP/HTTP, and so on. Each "
            f"round starts a fresh Jaeger and sends {results.jaeger_batches} requests "
            f"({per_round:,} spans, {kept:,} of them for the monitor) from "
            f"{results.jaeger_clients} concurrent clients to its OTLP/HTTP receiver, after "
            f"{WARM_UP} untimed warm-up requests. The two rounds of a pair send the same spans. "
            "The monitor runs in both modes, so only the attachment differs. Jaeger's figures "
            "are its own metrics, polled every "
            f"{POLL_SECONDS * 1000:.0f} ms (the monitor's every "
            f"{MONITOR_POLL_SECONDS * 1000:.0f} ms).",
            "",
            "| | alone | with monitor | with / alone |",
            "|---|---:|---:|---:|",
            "| spans/s until stored (`otelcol_receiver_accepted_spans` and the storage "
            f"exporter's `otelcol_exporter_sent_spans` at the total) | {_rate(alone['rate'])} | "
            f"{_rate(attached['rate'])} | {ratio:.3f} |",
            f"| spans/s until every POST was answered | {_rate(alone['posts_rate'])} | "
            f"{_rate(attached['posts_rate'])} | "
            f"{attached['posts_rate'] / alone['posts_rate']:.3f} |",
            f"| Jaeger CPU per 1000 spans (ms) | {alone['cpu_per_1000']:.1f} | "
            f"{attached['cpu_per_1000']:.1f} | "
            f"{attached['cpu_per_1000'] / alone['cpu_per_1000']:.3f} |",
            f"| monitor CPU per 1000 spans sent to Jaeger (ms) | "
            f"{alone['monitor_cpu_per_1000']:.1f} | {attached['monitor_cpu_per_1000']:.1f} | |",
            f"| whole machine's CPU per 1000 spans (ms) | {alone['machine_cpu_per_1000']:.1f} | "
            f"{attached['machine_cpu_per_1000']:.1f} | "
            f"{attached['machine_cpu_per_1000'] / alone['machine_cpu_per_1000']:.3f} |",
            f"| whole machine's cores busy, until everything arrived | "
            f"{alone['machine_cores']:.2f} | {attached['machine_cores']:.2f} | |",
            f"| of them the benchmark client's | {alone['client_cores']:.2f} | "
            f"{attached['client_cores']:.2f} | |",
            f"| of them any other process's (not Jaeger, the monitor, PostgreSQL) | "
            f"{alone['other_cores']:.2f} | {attached['other_cores']:.2f} | |",
            f"| seconds per round until stored (mean) | {alone['seconds']:.2f} | "
            f"{attached['seconds']:.2f} | |",
            f"| seconds until the monitor had received its {kept:,} spans (mean) | — | "
            f"{attached['monitor_seconds']:.2f} | |",
            f"| spans refused, failed or dropped (all rounds) | {alone['refused']:.0f} | "
            f"{attached['refused']:.0f} | |",
            "",
            f"With the monitor attached, Jaeger stores **{ratio * 100:.1f}%** of the spans per "
            "second it stores alone. The machine was about as busy in both modes "
            f"({alone['machine_cores']:.2f} and {attached['machine_cores']:.2f} of "
            f"{os.cpu_count()} cores); attached, the monitor took "
            f"{attached['monitor_cpu_per_1000']:.1f} ms of CPU per 1000 spans sent to Jaeger "
            "and Jaeger itself "
            f"{(attached['cpu_per_1000'] / alone['cpu_per_1000'] - 1) * 100:+.0f}% CPU per span "
            "(the filter, a second batch, the OTLP export), from the same cores. "
            "Each round's spans per second until stored, in the order they ran: "
            + ", ".join(f"{r.mode} {_rate(r.rate)}" for r in results.rounds)
            + ".",
            "",
            f"Rounds of one mode differed by up to ±{largest * 100:.0f}% around their mean, so "
            "a difference between the modes smaller than that is within the noise.",
            "",
        ]
    lines += [
        "Noise: two cores are shared by the monitor, PostgreSQL, Jaeger, RabbitMQ (idle) and "
        "the benchmark's client (its CPU is in the tables, and so is any other process's). "
        "Times are wall-clock, from the first timed request.",
    ]
    if results.yardsticks:
        low, high = min(results.yardsticks), max(results.yardsticks)
        lines[-1] += (
            " The machine's own speed varied too: the same CPU-bound work (the monitor's "
            "decoder over the same 20 requests, in the benchmark's process, timed "
            f"{len(results.yardsticks)} times between parts and rounds) took {low:.1f} to "
            f"{high:.1f} µs per span (median {statistics.median(results.yardsticks):.1f}), "
            f"so absolute rates can move by up to {(high / low - 1) * 100:.0f}% from one "
            "moment to the next; ratios between settings measured in alternating rounds "
            "move less."
        )
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- main


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("monitor benchmark")
    group.add_argument(
        "--orders-per-batch",
        type=int,
        default=4,
        help="orders per journey step in a request, 95 spans an order (default 4: 380 spans)",
    )
    group.add_argument(
        "--ingest-clients",
        default="1,4",
        help="concurrent senders to compare, comma-separated (default 1,4)",
    )
    group.add_argument(
        "--ingest-rounds", type=int, default=2, help="ingest rounds per client count (2)"
    )
    group.add_argument(
        "--ingest-batches", type=int, default=400, help="requests per ingest round (400)"
    )
    group.add_argument(
        "--stuck-orders", type=int, default=300, help="orders left stuck per phase (300)"
    )
    group.add_argument(
        "--stuck-spread", type=float, default=15.0, help="seconds they arrive over (15)"
    )
    group.add_argument(
        "--slo-seconds", type=float, default=2.0, help="SUBMITTED's SLO in seconds (2)"
    )
    group.add_argument(
        "--load-shares",
        default="0.5,0.9",
        help="detection phases after the quiet one, each with other orders' spans flowing in "
        "at this share of the measured ingest rate, comma-separated (0.5,0.9; '' for none)",
    )
    group.add_argument(
        "--jaeger-rounds", type=int, default=3, help="rounds per Jaeger mode, ABAB (3)"
    )
    group.add_argument(
        "--jaeger-batches", type=int, default=600, help="requests per Jaeger round (600)"
    )
    group.add_argument("--jaeger-clients", type=int, default=4, help="concurrent senders (4)")


def run(args: argparse.Namespace, console: Console, output: Path) -> None:
    """Run the benchmark, print the results and write the `monitor` section of `output`."""
    started = time.perf_counter()
    results = _run(args, console)
    results.seconds = time.perf_counter() - started
    _print(results, console)
    write_section(output, SECTION, report(results))
    console.print(f"monitor section written to {output}")


def _flow(seed: int, batches: int, orders_per_batch: int) -> list[Batch]:
    """`WARM_UP` + `batches` requests of a steady flow, spans ending over the last minutes."""
    gap = 10_000_000
    start = time.time_ns() - (batches + WARM_UP) * gap - 60 * 10**9
    return list(steady_flow(seed, batches + WARM_UP, orders_per_batch, start, gap))


def _run(args: argparse.Namespace, console: Console) -> Results:
    clients = [int(c) for c in str(args.ingest_clients).split(",") if c.strip()]
    with console.status("making the spans (OTLP/protobuf)"):
        flow = _flow(
            1, args.ingest_batches * args.ingest_rounds * len(clients), args.orders_per_batch
        )
    request_bytes = round(statistics.fmean(len(b.body) for b in flow[WARM_UP:]))
    yard = flow[WARM_UP : WARM_UP + 20]
    yardsticks = [yardstick(yard)]
    ingest: list[IngestRound] = []
    with tempfile.TemporaryDirectory(prefix="loupe-bench-monitor-") as root:
        ports = JaegerPorts.pick_free()
        # Each part has a sandbox of its own: its own monitor database and port.
        with contextlib.ExitStack() as stack:
            sandbox = stack.enter_context(Sandbox(Path(root) / "ingest"))
            with console.status("starting the monitor (ingest)"):
                monitor = stack.enter_context(
                    running_monitor(sandbox, slo_toml(), ports.otlp_http_url)
                )
            asyncio.run(warm_up(monitor, flow[:WARM_UP]))
            total = args.ingest_rounds * len(clients)
            for n in range(total):
                count = clients[n % len(clients)]
                first = WARM_UP + n * args.ingest_batches
                label = f"ingest round {n + 1}/{total} ({count} clients)"
                batches = flow[first : first + args.ingest_batches]
                result = asyncio.run(ingest_round(monitor, batches, count, console, label))
                ingest.append(result)
                yardsticks.append(yardstick(yard))
                console.print(
                    f"{label}: {_rate(result.rate)} spans/s received, "
                    f"{_rate(result.kept_reported / result.seconds)} kept/s, request p50 "
                    f"{_ms(percentile(result.latencies, 50))} ms, p99 "
                    f"{_ms(percentile(result.latencies, 99))} ms"
                )
        del flow

        capacity = max(x.spans_per_second for x in ingest_summary(ingest))
        phases: list[tuple[str, list[Batch], float]] = [("quiet", [], 0.0)]
        per_batch = spans_per_order()[0] * args.orders_per_batch
        for n, share in enumerate(float(x) for x in str(args.load_shares).split(",") if x.strip()):
            rate = capacity * share
            duration = args.stuck_spread + args.slo_seconds + 5
            with console.status(f"making the spans for {share:.0%} load"):
                load = _flow(20 + n, int(rate * duration / per_batch) + 1, args.orders_per_batch)
            phases.append((f"{share:.0%} of that rate", load[WARM_UP:], rate))
        detections = []
        with contextlib.ExitStack() as stack:
            sandbox = stack.enter_context(Sandbox(Path(root) / "detect"))
            with console.status("starting the monitor (detection)"):
                slo = slo_toml(f"{args.slo_seconds:g}s")
                monitor = stack.enter_context(running_monitor(sandbox, slo, ports.otlp_http_url))
            for seed, (phase, load, rate) in enumerate(phases, start=10):
                detection = asyncio.run(
                    measure_detection(
                        monitor,
                        phase,
                        args.stuck_orders,
                        args.stuck_spread,
                        args.slo_seconds,
                        seed,
                        console,
                        load,
                        rate,
                    )
                )
                detections.append(detection)
                yardsticks.append(yardstick(yard))
                found = detection.latencies or [float("nan")]
                console.print(
                    f"detection ({phase}): {len(detection.latencies)}/{detection.orders} "
                    f"found, p50 {_ms(percentile(found, 50))} ms, p99 "
                    f"{_ms(percentile(found, 99))} ms, max {_ms(max(found))} ms"
                    + (
                        f", while ingesting {_rate(detection.background_spans_per_second)} spans/s"
                        if detection.background_spans_per_second
                        else ""
                    )
                )
        del phases

        rounds: list[JaegerRound] = []
        if args.jaeger_rounds:
            with console.status("making the spans for Jaeger's rounds"):
                sets = [
                    _flow(100 + n, args.jaeger_batches, args.orders_per_batch)
                    for n in range(args.jaeger_rounds)
                ]
            with contextlib.ExitStack() as stack:
                sandbox = stack.enter_context(Sandbox(Path(root) / "jaeger"))
                with console.status("starting the monitor (Jaeger rounds)"):
                    monitor = stack.enter_context(
                        running_monitor(sandbox, slo_toml(), ports.otlp_http_url)
                    )
                total = args.jaeger_rounds * len(JAEGER_MODES)
                for n in range(total):
                    mode = JAEGER_MODES[n % len(JAEGER_MODES)]
                    label = f"Jaeger round {n + 1}/{total} ({mode})"
                    result = jaeger_round(
                        mode,
                        ports,
                        monitor,
                        # Both modes of a pair send the same spans; each pair spans of its
                        # own, so the monitor never gets a span twice.
                        sets[n // len(JAEGER_MODES)],
                        args.jaeger_clients,
                        sandbox.logs,
                        console,
                        label,
                    )
                    rounds.append(result)
                    yardsticks.append(yardstick(yard))
                    extra = (
                        f"; the monitor had its {result.kept:,} after "
                        f"{result.monitor_seconds:.2f} s"
                        if result.monitor_seconds is not None
                        else ""
                    )
                    console.print(
                        f"{label}: {_rate(result.rate)} spans/s stored in {result.seconds:.2f} s "
                        f"(POSTs answered at {_rate(result.posts_rate)}/s){extra}"
                    )
    return Results(
        ingest=ingest,
        ingest_batches=args.ingest_batches,
        request_bytes=request_bytes,
        detections=detections,
        rounds=rounds,
        jaeger_batches=args.jaeger_batches,
        jaeger_clients=args.jaeger_clients,
        orders_per_batch=args.orders_per_batch,
        tick_seconds=MonitorSettings.from_env({}).tick_seconds,
        yardsticks=yardsticks,
    )


def _print(results: Results, console: Console) -> None:
    summaries = ingest_summary(results.ingest)
    if summaries:
        table = Table("monitor ingest", *(f"{x.clients} clients" for x in summaries))
        table.add_row("spans/s received", *(_rate(x.spans_per_second) for x in summaries))
        table.add_row("order spans/s kept", *(_rate(x.kept_per_second) for x in summaries))
        table.add_row(
            "request p50 / p99 (ms)", *(f"{_ms(x.p50)} / {_ms(x.p99)}" for x in summaries)
        )
        console.print(table)
    if results.detections:
        table = Table("detection", "p50 (ms)", "p99 (ms)", "max (ms)", "found", "p99 ≤ 2 s")
        for d in results.detections:
            found = d.latencies or [float("nan")]
            table.add_row(
                d.phase,
                _ms(percentile(found, 50)),
                _ms(percentile(found, 99)),
                _ms(max(found)),
                f"{len(d.latencies)}/{d.orders}",
                "yes" if d.meets_aim else "no",
            )
        console.print(table)
    summary = jaeger_summary(results.rounds)
    if len(summary) == len(JAEGER_MODES):
        table = Table("Jaeger", *JAEGER_MODES, "with / alone")
        alone, attached = (summary[m] for m in JAEGER_MODES)
        for label, key in (
            ("spans/s until stored", "rate"),
            ("spans/s POSTs answered", "posts_rate"),
            ("CPU ms per 1000 spans", "cpu_per_1000"),
        ):
            table.add_row(
                label,
                f"{alone[key]:,.1f}",
                f"{attached[key]:,.1f}",
                f"{attached[key] / alone[key]:.3f}",
            )
        console.print(table)
