"""The pipeline benchmark: what tracing costs the order pipeline, measured side by side in
one run.

The same stack runs in rounds that cycle through the modes: tracing off
(OTEL_SDK_DISABLED=true); on at 100% sampling exported to Jaeger all-in-one on the same
machine; on at 100% exported to a sink that accepts and discards OTLP (`loupe.bench.sink`),
so that what is left is loupe's instrumentation rather than Jaeger competing for the same
cores; and on at 10% exported to Jaeger. In each round a fixed number of orders goes through
the whole lifecycle, a few at a time; every step's latency is the time from a person's action
to the status it causes being visible where the next person looks, and every process's CPU
time is read from /proc. Each cycle of rounds gives one ratio per traced mode against tracing
off, and the ratios of all cycles give each figure's 95% interval (`measure.paired_ratio`).

The driver waits for a status by reading it from the service's database, one query per
service for all the orders waiting there, rather than by polling the services' HTTP API: a
poll would cost the service a traced request and a traced query, as much CPU as a good part
of an order's, and be counted as the order's. What the queries cost PostgreSQL is measured
and reported.

Results go to the console and to the `pipeline` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table

from loupe.actors import Workshop
from loupe.bench.measure import (
    CLIENT_CPU,
    MACHINE_CPU,
    Ratio,
    cpu_by_group,
    cpu_used,
    machine,
    paired_ratio,
    percentile,
    spread,
)
from loupe.bench.report import markdown_table, write_section
from loupe.bench.sink import sink_process
from loupe.config import SERVICES, Settings
from loupe.orders import OrderStatus
from loupe.stack.components import JaegerPorts, jaeger_process, service_process
from loupe.stack.process import Process, free_port
from loupe.stack.sandbox import Sandbox
from loupe.stack.supervisor import Stack

SECTION = "pipeline"

# How often the driver reads the statuses it waits for: the resolution of a step's latency.
POLL_SECONDS = 0.01
STEP_TIMEOUT = 60.0
# Warm-up orders before each round's timed ones: connections, caches and plans.
WARM_UP_ORDERS = 1
# The batch span processor exports when it has a full batch or when OTEL_BSP_SCHEDULE_DELAY
# (5 s by default) has passed: the spans of a round's last orders leave up to that long after
# them. A round's CPU is counted until they have (not its time: throughput is the orders'
# own), and the warm-up's spans are let go before it starts; the margin is the export itself.
BSP_SCHEDULE_DELAY_DEFAULT_MS = 5000
EXPORT_MARGIN_SECONDS = 1.0


class Receiver(StrEnum):
    """Where a traced mode's services export their spans."""

    JAEGER = "Jaeger"
    SINK = "sink"


@dataclass(frozen=True)
class Mode:
    name: str
    env: dict[str, str]
    receiver: Receiver | None
    """None: tracing off, nothing is exported."""


_ALWAYS_ON = {"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_SAMPLER": "always_on"}
OFF = Mode("off", {"OTEL_SDK_DISABLED": "true"}, None)
MODES = (
    OFF,
    Mode("100% → Jaeger", _ALWAYS_ON, Receiver.JAEGER),
    Mode("100% → sink", _ALWAYS_ON, Receiver.SINK),
    Mode(
        "10% → Jaeger",
        {
            "OTEL_SDK_DISABLED": "false",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        },
        Receiver.JAEGER,
    ),
)
TRACED = MODES[1:]

# CPU groups measured in each round, besides measure's CLIENT_CPU (the driver) and
# MACHINE_CPU.
SERVICES_CPU = "services"
JAEGER_CPU = "Jaeger"
SINK_CPU = "sink"
WAITING_CPU = "status queries"


@dataclass(frozen=True)
class Receivers:
    """The two places spans can go, both running for the whole benchmark."""

    jaeger: Process
    jaeger_url: str
    sink: Process
    sink_url: str

    def url(self, receiver: Receiver | None) -> str:
        # With tracing off nothing is sent; the sink is where it would go.
        return self.jaeger_url if receiver is Receiver.JAEGER else self.sink_url

    def pids(self) -> dict[str, list[int]]:
        return {
            JAEGER_CPU: [p for p in (self.jaeger.pid,) if p is not None],
            SINK_CPU: [p for p in (self.sink.pid,) if p is not None],
        }


@contextmanager
def receivers(logs: Path) -> Iterator[Receivers]:
    """Jaeger all-in-one (memory storage) and the discarding sink, each a process."""
    ports = JaegerPorts.pick_free()
    jaeger = jaeger_process("memory", ports, logs_dir=logs)
    sink_port = free_port()
    sink = sink_process(sink_port, logs)
    with Stack([jaeger, sink]):
        yield Receivers(jaeger, ports.otlp_http_url, sink, f"http://127.0.0.1:{sink_port}")


def sink_counts(sink_url: str) -> tuple[int, int]:
    """Requests and body bytes the sink has taken so far."""
    counts = httpx.get(f"{sink_url}/", timeout=5.0, trust_env=False).json()
    return int(counts["requests"]), int(counts["body_bytes"])


@dataclass
class Round:
    mode: str
    cycle: int
    orders: int
    seconds: float
    cpu: dict[str, float]
    """CPU seconds each group used during the timed orders."""
    steps: dict[str, list[float]] = field(default_factory=dict)
    status_queries: int = 0
    exported_requests: int = 0
    exported_bytes: int = 0

    @property
    def throughput(self) -> float:
        return self.orders / self.seconds

    def cpu_per_order(self, group: str = SERVICES_CPU) -> float:
        return self.cpu.get(group, 0.0) / self.orders

    def all_steps(self) -> list[float]:
        return [latency for latencies in self.steps.values() for latency in latencies]


# ------------------------------------------------------------------------------ the driver

_STATUS_QUERY = "SELECT id, status FROM orders WHERE id = ANY($1::text[])"


class StatusWatch:
    """Tells the driver when orders reach a status in a service, reading the service's
    `orders` table (what its API answers from) every POLL_SECONDS: one query per service for
    all the orders waiting there, and none while nothing waits."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connections: dict[str, asyncpg.Connection] = {}
        self.waiting: dict[str, dict[str, tuple[str, asyncio.Future[None]]]] = {
            service: {} for service in SERVICES
        }
        self.pollers: dict[str, asyncio.Task[None]] = {}
        self.queries = 0

    async def open(self) -> None:
        for service in SERVICES:
            # As the service's own role: the only one that may read its database.
            dsn = self.settings.postgres_dsn_of(self.settings.database_name(service))
            self.connections[service] = await asyncpg.connect(dsn)

    async def close(self) -> None:
        for task in self.pollers.values():
            task.cancel()
        for connection in self.connections.values():
            await connection.close()

    def backend_pids(self) -> list[int]:
        """The PostgreSQL processes answering the queries, to read their CPU time."""
        return [connection.get_server_pid() for connection in self.connections.values()]

    async def wait(self, service: str, order_id: str, status: OrderStatus) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self.waiting[service]
        waiting[order_id] = (status.value, future)
        poller = self.pollers.get(service)
        if poller is None or poller.done():
            self.pollers[service] = asyncio.create_task(self._poll(service))
        try:
            await asyncio.wait_for(future, STEP_TIMEOUT)
        except TimeoutError:
            raise TimeoutError(
                f"order {order_id} did not reach {status} in {service} within {STEP_TIMEOUT:.0f} s"
            ) from None
        finally:
            waiting.pop(order_id, None)

    async def _poll(self, service: str) -> None:
        waiting = self.waiting[service]
        connection = self.connections[service]
        while waiting:
            rows = await connection.fetch(_STATUS_QUERY, list(waiting))
            self.queries += 1
            for row in rows:
                wanted = waiting.get(row["id"])
                if wanted is not None and wanted[0] == row["status"] and not wanted[1].done():
                    wanted[1].set_result(None)
            await asyncio.sleep(POLL_SECONDS)


async def _one_order(workshop: Workshop, watch: StatusWatch, steps: dict[str, list[float]]) -> None:
    client = workshop.client
    crm, mes = (workshop.settings.service_urls[s] for s in ("crm", "mes"))

    async def step(name: str, action: Callable[[], Awaitable[object]]) -> object:
        started = time.perf_counter()
        result = await action()
        steps.setdefault(name, []).append(time.perf_counter() - started)
        return result

    async def post(url: str, payload: dict[str, str]) -> None:
        (await client.post(url, json=payload)).raise_for_status()

    async def submit() -> str:
        order_id = await workshop.place_order()
        await watch.wait("crm", order_id, OrderStatus.PRICE_CALCULATED)
        return order_id

    order_id = str(await step("submit → priced (shop → MES → CRM)", submit))

    async def approve() -> None:
        await post(f"{crm}/orders/{order_id}/approve", {"seller": "bench.seller"})
        await watch.wait("mes", order_id, OrderStatus.MANUFACTURING_APPROVED)

    async def take() -> None:
        await post(f"{mes}/operator/orders/{order_id}/take", {"operator": "bench.operator"})

    async def complete() -> None:
        await post(f"{mes}/operator/orders/{order_id}/complete", {"operator": "bench.operator"})
        await watch.wait("crm", order_id, OrderStatus.MANUFACTURING_COMPLETED)

    async def ship() -> None:
        await post(
            f"{crm}/orders/{order_id}/ship", {"seller": "bench.seller", "tracking_number": "B1"}
        )

    async def close() -> None:
        await post(f"{crm}/orders/{order_id}/close", {"seller": "bench.seller"})
        await watch.wait("shop", order_id, OrderStatus.CLOSED)

    await step("approve → in MES queue (CRM → MES)", approve)
    await step("take (MES)", take)
    await step("complete → seen by CRM (MES → CRM)", complete)
    await step("ship (CRM)", ship)
    await step("close → seen by shop (CRM → shop)", close)


@dataclass
class Driven:
    seconds: float
    steps: dict[str, list[float]]
    cpu: dict[str, float]
    status_queries: int


async def drive(
    settings: Settings,
    orders: int,
    concurrency: int,
    groups: Mapping[str, Sequence[int]],
    tail: float = 0.0,
) -> Driven:
    """Drive `orders` orders through, `concurrency` at a time; the CPU each group of processes
    used meanwhile and for `tail` seconds after (the status queries' PostgreSQL backends,
    WAITING_CPU, included)."""
    steps: dict[str, list[float]] = {}
    workshop = Workshop(settings, seed=1)
    watch = StatusWatch(settings)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(orders):
        queue.put_nowait(n)

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            await _one_order(workshop, watch, steps)

    try:
        await watch.open()
        measured = {**groups, WAITING_CPU: watch.backend_pids()}
        before = cpu_by_group(measured)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        await asyncio.sleep(tail)
        used = cpu_used(before, cpu_by_group(measured))
    finally:
        await watch.close()
        await workshop.close()
    return Driven(seconds, steps, used, watch.queries)


def export_settle_seconds(env: Mapping[str, str]) -> float:
    """How long after its last span a service has surely exported it."""
    configured = env.get("OTEL_BSP_SCHEDULE_DELAY", "").strip()
    delay_ms = max(BSP_SCHEDULE_DELAY_DEFAULT_MS, int(configured) if configured.isdigit() else 0)
    return delay_ms / 1000 + EXPORT_MARGIN_SECONDS


@contextmanager
def services(
    sandbox: Sandbox, mode: Mode, sending: Receivers, warm_up: int = WARM_UP_ORDERS
) -> Iterator[tuple[list[int], float]]:
    """The three services in `mode`, warmed up and their warm-up's spans exported; yields
    their pids and how long a span takes to leave (export_settle_seconds)."""
    env = {**sandbox.env, "LOUPE_PRICING_SECONDS": "0", "LOUPE_LOG_LEVEL": "WARNING", **mode.env}
    endpoint = sending.url(mode.receiver)
    stack = Stack(
        service_process(s, env, otlp_endpoint=endpoint, logs_dir=sandbox.logs) for s in SERVICES
    )
    settle = export_settle_seconds({**os.environ, **env})
    with stack:
        pids = [p.pid for p in stack if p.pid is not None]
        asyncio.run(drive(sandbox.settings, warm_up, 1, {}, tail=settle))
        yield pids, settle


def run_round(
    sandbox: Sandbox, sending: Receivers, mode: Mode, cycle: int, orders: int, concurrency: int
) -> Round:
    with services(sandbox, mode, sending) as (pids, settle):
        requests_before, bytes_before = sink_counts(sending.sink_url)
        groups = {SERVICES_CPU: pids, **sending.pids()}
        driven = asyncio.run(drive(sandbox.settings, orders, concurrency, groups, tail=settle))
        requests_after, bytes_after = sink_counts(sending.sink_url)
    return Round(
        mode.name,
        cycle,
        orders,
        driven.seconds,
        driven.cpu,
        driven.steps,
        driven.status_queries,
        requests_after - requests_before,
        bytes_after - bytes_before,
    )


# ------------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Figure:
    """One figure of a round, shown per mode and as a ratio to tracing off; `aim` is issue 12's
    bound on that ratio (at most, or at least when `more_is_better`), None for none."""

    label: str
    short: str
    of_round: Callable[[Round], float]
    fmt: str
    aim: float | None = None
    more_is_better: bool = False

    def verdict(self, found: Ratio) -> str:
        """Whether the ratio meets the aim: only when its whole interval does."""
        if self.aim is None:
            return ""
        sign = "≥" if self.more_is_better else "≤"
        inside = [x >= self.aim if self.more_is_better else x <= self.aim for x in found.bounds]
        outcome = (
            "met"
            if all(inside)
            else "**not met**"
            if not any(inside)
            else "undecided (the interval straddles the aim)"
        )
        return f"aim {sign} {self.aim:.2f}: {outcome}"


FIGURES = (
    Figure("orders per second", "throughput", lambda r: r.throughput, "{:.2f}", 0.95, True),
    Figure(
        "services' CPU per order (ms)",
        "CPU per order",
        lambda r: r.cpu_per_order() * 1000,
        "{:.1f}",
        1.10,
    ),
    Figure(
        "step latency p50 (ms)",
        "p50 step latency",
        lambda r: percentile(r.all_steps(), 50) * 1000,
        "{:.1f}",
    ),
    Figure(
        "step latency p99 (ms)",
        "p99 step latency",
        lambda r: percentile(r.all_steps(), 99) * 1000,
        "{:.1f}",
        1.05,
    ),
)
THROUGHPUT, CPU, P50, P99 = FIGURES


def of_mode(rounds: Sequence[Round], mode: Mode) -> list[Round]:
    return [r for r in rounds if r.mode == mode.name]


@dataclass(frozen=True)
class Pooled:
    """A mode's figures over all its rounds together: every order, every step's latency."""

    figures: dict[str, float]
    """By Figure.label."""
    cpu_ms: dict[str, float]
    """CPU per order (ms) by group."""
    status_queries: float
    exported_requests: float
    exported_kib: float


def pooled(rounds: Sequence[Round], mode: Mode) -> Pooled:
    chosen = of_mode(rounds, mode)
    orders = sum(r.orders for r in chosen)
    latencies = [latency for r in chosen for latency in r.all_steps()]
    cpu_ms = {
        group: sum(r.cpu.get(group, 0.0) for r in chosen) / orders * 1000 for group in chosen[0].cpu
    }
    return Pooled(
        {
            THROUGHPUT.label: orders / sum(r.seconds for r in chosen),
            CPU.label: cpu_ms[SERVICES_CPU],
            P50.label: percentile(latencies, 50) * 1000,
            P99.label: percentile(latencies, 99) * 1000,
        },
        cpu_ms,
        sum(r.status_queries for r in chosen) / orders,
        sum(r.exported_requests for r in chosen) / orders,
        sum(r.exported_bytes for r in chosen) / orders / 1024,
    )


def ratio(rounds: Sequence[Round], mode: Mode, figure: Figure) -> Ratio:
    """`figure` in `mode` against tracing off, one ratio per cycle that ran both."""
    off = {r.cycle: figure.of_round(r) for r in of_mode(rounds, OFF)}
    pairs = [(off[r.cycle], figure.of_round(r)) for r in of_mode(rounds, mode) if r.cycle in off]
    return paired_ratio(pairs)


def ratio_text(value: Ratio) -> str:
    if math.isnan(value.low):
        return f"{value.value:.3f}"
    return f"{value.value:.3f} [{value.low:.3f}, {value.high:.3f}]"


def _rows(rounds: Sequence[Round]) -> list[tuple[str, ...]]:
    """Each figure per mode (all rounds pooled), then each traced mode's ratio to tracing off
    with its 95% interval."""
    figures = {mode.name: pooled(rounds, mode) for mode in MODES}
    rows = []
    for figure in FIGURES:
        cells = [figure.fmt.format(figures[m.name].figures[figure.label]) for m in MODES]
        ratios = [ratio_text(ratio(rounds, m, figure)) for m in TRACED]
        rows.append((figure.label, *cells, *ratios))
    return rows


HEADERS = ("", *(m.name for m in MODES), *(f"{m.name} / off" for m in TRACED))


def _spread(rounds: Sequence[Round], of_round: Callable[[Round], float]) -> float:
    """The largest half-range of one mode's rounds, relative to their mean."""
    return max(spread(of_round(r) for r in of_mode(rounds, mode)) for mode in MODES)


def _verdicts(rounds: Sequence[Round]) -> list[str]:
    lines = []
    for mode in (m for m in TRACED if m.env == _ALWAYS_ON):
        parts = []
        for figure in (THROUGHPUT, CPU, P99):
            found = ratio(rounds, mode, figure)
            noise = "" if found.resolved else " (its interval holds 1: no difference shown)"
            parts.append(
                f"{figure.short} {ratio_text(found)} of off's{noise}, {figure.verdict(found)}"
            )
        lines.append(f"- **{mode.name}**: " + "; ".join(parts) + ".")
    return lines


def _groups_table(rounds: Sequence[Round]) -> list[str]:
    figures = {mode.name: pooled(rounds, mode) for mode in MODES}
    rows = (
        ("the three services", SERVICES_CPU),
        ("Jaeger", JAEGER_CPU),
        ("the sink", SINK_CPU),
        ("PostgreSQL, answering the driver's status queries", WAITING_CPU),
        ("the driver (this benchmark's process)", CLIENT_CPU),
        ("the whole machine", MACHINE_CPU),
    )
    return markdown_table(
        ("CPU per order (ms)", *(m.name for m in MODES)),
        (
            (label, *(f"{figures[m.name].cpu_ms[group]:.1f}" for m in MODES))
            for label, group in rows
        ),
    )


def _step_rows(rounds: Sequence[Round]) -> list[tuple[str, ...]]:
    """Each step's median latency (ms) per mode."""
    rows = []
    for name in rounds[0].steps:
        medians = (
            statistics.median(v for r in of_mode(rounds, m) for v in r.steps.get(name, []))
            for m in MODES
        )
        rows.append((name, *(f"{v * 1000:.1f}" for v in medians)))
    return rows


def report(rounds: Sequence[Round], orders: int, concurrency: int) -> str:
    off = pooled(rounds, OFF)
    sink = pooled(rounds, next(m for m in TRACED if m.receiver is Receiver.SINK))
    cycles = len({r.cycle for r in rounds})
    lines = [
        "## What tracing costs the order pipeline",
        "",
        "Every figure in this section comes from one run of this benchmark, the modes "
        "measured side by side in rounds that take turns (each cycle runs every mode once, "
        "every other cycle in reverse order, so a machine's drift over the run weighs on all "
        "modes alike).",
        "",
        f"- Run: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {machine()}",
        f"- Workload: {cycles} cycles of one round per mode, {orders} orders a round, "
        f"{concurrency} in flight, pricing time 0 s; each order goes through all seven "
        "statuses (shop, MES, CRM, RabbitMQ, PostgreSQL, all real processes). Each round "
        f"starts the services afresh and sends {WARM_UP_ORDERS} untimed order first.",
        "- Tracing on: OpenTelemetry SDK in every service, batch export over OTLP/HTTP, at 100% "
        "(`always_on`) or 10% (`parentbased_traceidratio`, 0.1) sampling, either to Jaeger "
        "all-in-one (memory storage) on the same machine or to a sink on the same machine that "
        "answers every export with 200 and discards it unread (`loupe.bench.sink`), so that "
        "Jaeger's work is not on the two cores.",
        "- Tracing off: `OTEL_SDK_DISABLED=true` (no-op tracer; the FastAPI and httpx "
        "instrumentations stay in place, loupe's statement spans (`telemetry/statements.py`) "
        "are only set up with tracing on).",
        "",
        *markdown_table(HEADERS, _rows(rounds)),
        "",
        "A mode's figures pool all its rounds (every order, every step's latency). A ratio is "
        "the geometric mean of the cycles' ratios (each cycle's round of that mode against its "
        "round with tracing off), in square brackets its 95% confidence interval: Student's t "
        f"over the logarithms of the {cycles} cycles' ratios. Against the aims of issue 12:",
        "",
        *_verdicts(rounds),
        "",
        *_groups_table(rounds),
        "",
        f"The benchmark's own load: the driver waits for a status by reading it from the "
        f"service's database every {POLL_SECONDS * 1000:.0f} ms, one query per service for all "
        "the orders waiting there; the services answer none of it. That took "
        f"{off.status_queries:.1f} queries and {off.cpu_ms[WAITING_CPU]:.2f} ms of "
        "PostgreSQL's CPU per order with tracing off, "
        f"{off.cpu_ms[WAITING_CPU] / off.cpu_ms[SERVICES_CPU] * 100:.1f}% of the services' CPU "
        "per order (they themselves spend none on it). The driver makes the six people's calls "
        "of an order (place, approve, take, complete, ship, close) and nothing else; its own "
        f"CPU is in the table. The sink took {sink.exported_requests:.2f} exports and "
        f"{sink.exported_kib:.1f} KiB of OTLP per order at 100%, for "
        f"{sink.cpu_ms[SINK_CPU]:.2f} ms of its CPU.",
        "",
        "Median latency per step (ms):",
        "",
        *markdown_table(("step", *(m.name for m in MODES)), _step_rows(rounds)),
        "",
        "Each round's orders per second and services' CPU per order (ms), in the order they ran:",
        "",
        ", ".join(f"{r.mode} {r.throughput:.2f} / {r.cpu_per_order() * 1000:.1f}" for r in rounds),
        "",
        "A step's latency runs from a person's action (an HTTP call) to the status it causes "
        "being in the database where the next person looks (what that service's API answers "
        f"from), read every {POLL_SECONDS * 1000:.0f} ms; all modes wait alike. CPU per order "
        "is each process's user and system time during the timed orders and the "
        f"{export_settle_seconds(os.environ):.0f} s after them in which the batch processors "
        "export their last spans (every mode alike, so the services' idle work in that time, "
        "heartbeats and the outbox's poll, counts in all), divided by the orders. Two cores "
        "are shared by RabbitMQ, PostgreSQL, Jaeger, the sink, three services and the driver: "
        "in this run, rounds of one mode differed by up to "
        f"±{_spread(rounds, THROUGHPUT.of_round) * 100:.0f}% in throughput and "
        f"±{_spread(rounds, CPU.of_round) * 100:.0f}% in CPU per order around their mean; "
        "the intervals above say what that leaves of each ratio.",
        "",
    ]
    return "\n".join(lines)


def schedule(cycles: int) -> list[tuple[int, Mode]]:
    """The rounds in the order they run: every mode once a cycle, the odd cycles in reverse
    (off first, then last, ...), so that a machine getting steadily faster or slower over the
    run weighs on every mode alike instead of favouring the ones that run after tracing off."""
    return [
        (cycle, mode)
        for cycle in range(cycles)
        for mode in (MODES if cycle % 2 == 0 else tuple(reversed(MODES)))
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pipeline benchmark")
    group.add_argument(
        "--orders",
        type=int,
        default=100,
        help="orders per round; more make a round's figures steadier (default 100)",
    )
    group.add_argument(
        "--rounds",
        type=int,
        default=10,
        help="cycles of rounds, one round per mode each; the ratios' intervals narrow with "
        "more (default 10)",
    )
    group.add_argument("--concurrency", type=int, default=8, help="orders in flight (8)")


def run(args: argparse.Namespace, console: Console, output: Path) -> None:
    """Run the benchmark, print the results and write the `pipeline` section of `output`."""
    rounds: list[Round] = []
    planned = schedule(args.rounds)
    total = len(planned)
    with (
        tempfile.TemporaryDirectory(prefix="loupe-bench-") as root,
        Sandbox(Path(root)) as sandbox,
        receivers(sandbox.logs) as sending,
    ):
        for n, (cycle, mode) in enumerate(planned):
            with console.status(f"round {n + 1}/{total}: tracing {mode.name}"):
                result = run_round(sandbox, sending, mode, cycle, args.orders, args.concurrency)
            rounds.append(result)
            console.print(
                f"round {n + 1}/{total}: tracing {mode.name:13} "
                f"{result.throughput:6.2f} orders/s, "
                f"{result.cpu_per_order() * 1000:5.1f} ms CPU per order"
            )
    table = Table(*HEADERS)
    for row in _rows(rounds):
        table.add_row(*row)
    console.print(table)
    write_section(output, SECTION, report(rounds, args.orders, args.concurrency))
    console.print(f"pipeline section written to {output}")
