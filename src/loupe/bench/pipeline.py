"""The pipeline benchmark: what tracing costs the order pipeline, measured side by side in
one run.

The same stack runs in rounds that cycle through three modes: tracing off
(OTEL_SDK_DISABLED=true), on at 100% sampling and on at 10% (both exported to Jaeger
all-in-one); cycling spreads machine noise over all of them. In each round a fixed number of
orders goes through the whole lifecycle, a few at a time; every step's latency is the time
from a person's action to the status it causes being visible where the next person looks, and
the services' CPU time is read from /proc. Results go to the console and to the `pipeline`
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from loupe.actors import Workshop
from loupe.bench.measure import cpu_seconds, machine, percentile, spread
from loupe.bench.report import write_section
from loupe.config import SERVICES
from loupe.stack.components import JaegerPorts, jaeger_process, service_process
from loupe.stack.sandbox import Sandbox
from loupe.stack.supervisor import Stack

SECTION = "pipeline"

POLL_SECONDS = 0.02
STEP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Mode:
    name: str
    env: dict[str, str]


MODES = (
    Mode("off", {"OTEL_SDK_DISABLED": "true"}),
    Mode("100%", {"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_SAMPLER": "always_on"}),
    Mode(
        "10%",
        {
            "OTEL_SDK_DISABLED": "false",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        },
    ),
)


@dataclass
class Round:
    mode: str
    orders: int
    seconds: float
    cpu_seconds: float
    steps: dict[str, list[float]] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.orders / self.seconds

    def all_steps(self) -> list[float]:
        return [latency for latencies in self.steps.values() for latency in latencies]


async def _wait_status(client: httpx.AsyncClient, url: str, status: str) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        response = await client.get(url)
        if response.status_code == 200 and response.json()["status"] == status:
            return
        await asyncio.sleep(POLL_SECONDS)
    raise TimeoutError(f"{url} did not reach {status} within {STEP_TIMEOUT:.0f} s")


async def _one_order(workshop: Workshop, steps: dict[str, list[float]]) -> None:
    client = workshop.client
    crm, mes, shop = (workshop.settings.service_urls[s] for s in ("crm", "mes", "shop"))

    async def step(name: str, action: Callable[[], Awaitable[object]]) -> object:
        started = time.perf_counter()
        result = await action()
        steps.setdefault(name, []).append(time.perf_counter() - started)
        return result

    async def post(url: str, payload: dict[str, str]) -> None:
        (await client.post(url, json=payload)).raise_for_status()

    async def submit() -> str:
        order_id = await workshop.place_order()
        await _wait_status(client, f"{crm}/orders/{order_id}", "PRICE_CALCULATED")
        return order_id

    order_id = str(await step("submit → priced (shop → MES → CRM)", submit))

    async def approve() -> None:
        await post(f"{crm}/orders/{order_id}/approve", {"seller": "bench.seller"})
        await _wait_status(client, f"{mes}/orders/{order_id}", "MANUFACTURING_APPROVED")

    async def take() -> None:
        await post(f"{mes}/operator/orders/{order_id}/take", {"operator": "bench.operator"})

    async def complete() -> None:
        await post(f"{mes}/operator/orders/{order_id}/complete", {"operator": "bench.operator"})
        await _wait_status(client, f"{crm}/orders/{order_id}", "MANUFACTURING_COMPLETED")

    async def ship() -> None:
        await post(
            f"{crm}/orders/{order_id}/ship", {"seller": "bench.seller", "tracking_number": "B1"}
        )

    async def close() -> None:
        await post(f"{crm}/orders/{order_id}/close", {"seller": "bench.seller"})
        await _wait_status(client, f"{shop}/orders/{order_id}", "CLOSED")

    await step("approve → in MES queue (CRM → MES)", approve)
    await step("take (MES)", take)
    await step("complete → seen by CRM (MES → CRM)", complete)
    await step("ship (CRM)", ship)
    await step("close → seen by shop (CRM → shop)", close)


async def _drive(
    sandbox: Sandbox, orders: int, concurrency: int
) -> tuple[float, dict[str, list[float]]]:
    steps: dict[str, list[float]] = {}
    workshop = Workshop(sandbox.settings, seed=1)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(orders):
        queue.put_nowait(n)

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            await _one_order(workshop, steps)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await workshop.close()
    return time.perf_counter() - started, steps


def run_round(
    sandbox: Sandbox, jaeger: JaegerPorts, mode: Mode, orders: int, concurrency: int
) -> Round:
    env = {**sandbox.env, "LOUPE_PRICING_SECONDS": "0", "LOUPE_LOG_LEVEL": "WARNING", **mode.env}
    stack = Stack(
        service_process(s, env, otlp_endpoint=jaeger.otlp_http_url, logs_dir=sandbox.logs)
        for s in SERVICES
    )
    with stack:
        # One untimed order first: connections, caches and the database's plans warm up.
        asyncio.run(_drive(sandbox, 1, 1))
        pids = [p.pid for p in stack if p.pid is not None]
        cpu_before = cpu_seconds(pids)
        seconds, steps = asyncio.run(_drive(sandbox, orders, concurrency))
        cpu = cpu_seconds(pids) - cpu_before
    return Round(mode.name, orders, seconds, cpu, steps)


@dataclass(frozen=True)
class Summary:
    throughput: float
    p50: float
    p99: float
    cpu_per_order: float


def summarize(rounds: list[Round], mode: str) -> Summary:
    chosen = [r for r in rounds if r.mode == mode]
    latencies = [latency for r in chosen for latency in r.all_steps()]
    orders = sum(r.orders for r in chosen)
    return Summary(
        orders / sum(r.seconds for r in chosen),
        percentile(latencies, 50),
        percentile(latencies, 99),
        sum(r.cpu_seconds for r in chosen) / orders,
    )


def _rows(rounds: list[Round]) -> list[tuple[str, ...]]:
    """Each figure per mode, and each traced mode's ratio to tracing off."""
    summaries = {mode.name: summarize(rounds, mode.name) for mode in MODES}
    off = summaries["off"]
    rows = []
    for label, value, fmt in (
        ("orders per second", lambda s: s.throughput, "{:.2f}"),
        ("step latency p50 (ms)", lambda s: s.p50 * 1000, "{:.1f}"),
        ("step latency p99 (ms)", lambda s: s.p99 * 1000, "{:.1f}"),
        ("services' CPU per order (ms)", lambda s: s.cpu_per_order * 1000, "{:.1f}"),
    ):
        cells = [fmt.format(value(summaries[m.name])) for m in MODES]
        ratios = [f"{value(summaries[m.name]) / value(off):.3f}" for m in MODES[1:]]
        rows.append((label, *cells, *ratios))
    return rows


def _spread(rounds: list[Round]) -> float:
    """The largest half-range of one mode's round throughputs, relative to their mean."""
    return max(spread(r.throughput for r in rounds if r.mode == mode.name) for mode in MODES)


HEADERS = ("", "off", "100%", "10%", "100% / off", "10% / off")


def report(rounds: list[Round], orders: int, concurrency: int) -> str:
    summaries = {mode.name: summarize(rounds, mode.name) for mode in MODES}
    ratio = summaries["100%"].throughput / summaries["off"].throughput
    ratio10 = summaries["10%"].throughput / summaries["off"].throughput
    lines = [
        "## What tracing costs the order pipeline",
        "",
        "Every figure in this section comes from one run of this benchmark, the modes "
        "measured side by side in rounds that take turns.",
        "",
        f"- Run: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {machine()}",
        f"- Workload: {len(rounds) // len(MODES)} rounds per mode, {orders} orders a round, "
        f"{concurrency} in flight, pricing time 0 s; each order goes through all seven "
        "statuses (shop, MES, CRM, RabbitMQ, PostgreSQL, all real processes).",
        "- Tracing on: OpenTelemetry SDK in every service, batch export over OTLP/HTTP to "
        "Jaeger all-in-one (memory storage) on the same machine; 100% (`always_on`) or 10% "
        "(`parentbased_traceidratio`, 0.1) sampling.",
        "- Tracing off: `OTEL_SDK_DISABLED=true` (no-op tracer; the instrumentation stays in "
        "place).",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|---|" + "---:|" * (len(HEADERS) - 1),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(rounds)]
    lines += [
        "",
        f"At 100% sampling, throughput is **{ratio * 100:.1f}%** of throughput without tracing "
        f"(cost {max(0.0, (1 - ratio) * 100):.1f}%; the aim is at most 5%); at 10% sampling "
        f"it is {ratio10 * 100:.1f}%.",
        "",
        "Median latency per step (ms):",
        "",
        "| step | " + " | ".join(m.name for m in MODES) + " |",
        "|---|" + "---:|" * len(MODES),
    ]
    for name in rounds[0].steps:
        medians = [
            statistics.median(v for r in rounds if r.mode == m.name for v in r.steps.get(name, []))
            for m in MODES
        ]
        lines.append(f"| {name} | " + " | ".join(f"{v * 1000:.1f}" for v in medians) + " |")
    lines += [
        "",
        "Each round's throughput (orders per second), in the order they ran:",
        "",
        ", ".join(f"{r.mode} {r.throughput:.2f}" for r in rounds),
        "",
        "A step's latency runs from a person's action (an HTTP call) to the status it causes "
        f"being visible where the next person looks, polled every {POLL_SECONDS * 1000:.0f} ms;"
        " all modes poll alike. CPU per order is the three services' user and system time "
        "during the timed orders, divided by their number. Two cores are shared by RabbitMQ, "
        "PostgreSQL, Jaeger, three services and the driver: in this run, rounds of one mode "
        f"differed by up to ±{_spread(rounds) * 100:.0f}% around their mean, so a difference "
        "between modes smaller than that is within the noise.",
        "",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pipeline benchmark")
    group.add_argument("--orders", type=int, default=40, help="orders per round (default 40)")
    group.add_argument("--rounds", type=int, default=5, help="rounds per mode (default 5)")
    group.add_argument("--concurrency", type=int, default=8, help="orders in flight (8)")


def run(args: argparse.Namespace, console: Console, output: Path) -> None:
    """Run the benchmark, print the results and write the `pipeline` section of `output`."""
    rounds: list[Round] = []
    total = args.rounds * len(MODES)
    with tempfile.TemporaryDirectory(prefix="loupe-bench-") as root, Sandbox(Path(root)) as sandbox:
        jaeger = JaegerPorts.pick_free()
        with Stack([jaeger_process("memory", jaeger, logs_dir=sandbox.logs)]):
            for n in range(total):
                mode = MODES[n % len(MODES)]
                with console.status(f"round {n + 1}/{total}: tracing {mode.name}"):
                    result = run_round(sandbox, jaeger, mode, args.orders, args.concurrency)
                rounds.append(result)
                console.print(
                    f"round {n + 1}/{total}: tracing {mode.name:4} "
                    f"{result.throughput:6.2f} orders/s, "
                    f"{result.cpu_seconds / result.orders * 1000:5.1f} ms CPU per order"
                )
    table = Table(*HEADERS)
    for row in _rows(rounds):
        table.add_row(*row)
    console.print(table)
    write_section(output, SECTION, report(rounds, args.orders, args.concurrency))
    console.print(f"pipeline section written to {output}")
