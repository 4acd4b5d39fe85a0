"""`make bench`: what tracing costs the order pipeline, measured side by side in one run.

The same stack runs in rounds alternating tracing off (OTEL_SDK_DISABLED=true) and on (100%
sampling, exported to Jaeger all-in-one); alternating spreads machine noise over both. In
each round a fixed number of orders goes through the whole lifecycle, a few at a time, and
every step's latency is the time from a person's action to the status it causes being
visible where the next person looks. Results go to the console and to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
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
from loupe.config import SERVICES
from loupe.stack import Stack
from loupe.stack.components import REPO_ROOT, JaegerPorts, jaeger_process, service_process
from loupe.stack.sandbox import Sandbox

POLL_SECONDS = 0.02
STEP_TIMEOUT = 60.0


@dataclass
class Round:
    tracing: bool
    orders: int
    seconds: float
    steps: dict[str, list[float]] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.orders / self.seconds

    def all_steps(self) -> list[float]:
        return [latency for latencies in self.steps.values() for latency in latencies]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


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
    sandbox: Sandbox, jaeger: JaegerPorts, tracing: bool, orders: int, concurrency: int
) -> Round:
    env = {**sandbox.env, "LOUPE_PRICING_SECONDS": "0", "LOUPE_LOG_LEVEL": "WARNING"}
    if tracing:
        env |= {"OTEL_TRACES_SAMPLER": "always_on", "OTEL_SDK_DISABLED": "false"}
    else:
        env["OTEL_SDK_DISABLED"] = "true"
    stack = Stack(
        service_process(s, env, otlp_endpoint=jaeger.otlp_http_url, logs_dir=sandbox.logs)
        for s in SERVICES
    )
    with stack:
        # One untimed order first: connections, caches and the database's plans warm up.
        asyncio.run(_drive(sandbox, 1, 1))
        seconds, steps = asyncio.run(_drive(sandbox, orders, concurrency))
    return Round(tracing, orders, seconds, steps)


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration, ValueError):
        memory_kb = 0
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory_kb / 1024 / 1024:.0f} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def _summary(rounds: list[Round], tracing: bool) -> tuple[float, float, float]:
    chosen = [r for r in rounds if r.tracing is tracing]
    throughput = sum(r.orders for r in chosen) / sum(r.seconds for r in chosen)
    latencies = [latency for r in chosen for latency in r.all_steps()]
    return throughput, percentile(latencies, 50), percentile(latencies, 99)


def report(rounds: list[Round], orders: int, concurrency: int) -> str:
    off, on = _summary(rounds, False), _summary(rounds, True)
    ratio = on[0] / off[0]
    step_names = list(rounds[0].steps)
    lines = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`uv run python -m loupe.bench`); every figure below comes",
        "from one run, tracing off and on measured side by side in alternating rounds.",
        "",
        "## What tracing costs the order pipeline",
        "",
        f"- Run: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {_machine()}",
        f"- Workload: {len(rounds) // 2} rounds each way, {orders} orders a round, "
        f"{concurrency} in flight, pricing time 0 s; each order goes through all seven "
        "statuses (shop, MES, CRM, RabbitMQ, PostgreSQL, all real processes).",
        "- Tracing on: OpenTelemetry SDK in every service, 100% sampling (`always_on`), "
        "batch export over OTLP/HTTP to Jaeger all-in-one (memory storage) on the same machine.",
        "- Tracing off: `OTEL_SDK_DISABLED=true` (no-op tracer; the instrumentation stays in "
        "place).",
        "",
        "| | tracing off | tracing on | on / off |",
        "|---|---:|---:|---:|",
        f"| orders per second | {off[0]:.2f} | {on[0]:.2f} | {ratio:.3f} |",
        f"| step latency p50 (ms) | {off[1] * 1000:.1f} | {on[1] * 1000:.1f} | "
        f"{on[1] / off[1]:.3f} |",
        f"| step latency p99 (ms) | {off[2] * 1000:.1f} | {on[2] * 1000:.1f} | "
        f"{on[2] / off[2]:.3f} |",
        "",
        f"Throughput with tracing is **{ratio * 100:.1f}%** of throughput without it "
        f"(cost {max(0.0, (1 - ratio) * 100):.1f}%; the aim is at most 5%).",
        "",
        "Median latency per step (ms), off → on:",
        "",
        "| step | off | on |",
        "|---|---:|---:|",
    ]
    for name in step_names:
        off_values = [v for r in rounds if not r.tracing for v in r.steps.get(name, [])]
        on_values = [v for r in rounds if r.tracing for v in r.steps.get(name, [])]
        lines.append(
            f"| {name} | {statistics.median(off_values) * 1000:.1f} | "
            f"{statistics.median(on_values) * 1000:.1f} |"
        )
    lines += [
        "",
        "Each round's throughput (orders per second), in the order they ran:",
        "",
        ", ".join(f"{'on' if r.tracing else 'off'} {r.throughput:.2f}" for r in rounds),
        "",
        "A step's latency runs from a person's action (an HTTP call) to the status it causes "
        f"being visible where the next person looks, polled every {POLL_SECONDS * 1000:.0f} ms;"
        " both modes poll alike. With two cores shared by RabbitMQ, PostgreSQL, Jaeger, three "
        "services and the driver, expect a few percent of noise between runs.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=40, help="orders per round (default 40)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds each way (default 2)")
    parser.add_argument("--concurrency", type=int, default=8, help="orders in flight (8)")
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO_ROOT / "docs" / "benchmarks.md",
        help="where to write the report (default docs/benchmarks.md)",
    )
    args = parser.parse_args()
    console = Console()
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="loupe-bench-") as root, Sandbox(Path(root)) as sandbox:
        jaeger = JaegerPorts.pick_free()
        with Stack([jaeger_process("memory", jaeger, logs_dir=sandbox.logs)]):
            for n in range(args.rounds * 2):
                tracing = n % 2 == 1
                label = "on" if tracing else "off"
                with console.status(f"round {n + 1}/{args.rounds * 2}: tracing {label}"):
                    result = run_round(sandbox, jaeger, tracing, args.orders, args.concurrency)
                rounds.append(result)
                console.print(f"round {n + 1}: tracing {label:3} {result.throughput:6.2f} orders/s")
    text = report(rounds, args.orders, args.concurrency)
    table = Table("", "tracing off", "tracing on", "on / off")
    off, on = _summary(rounds, False), _summary(rounds, True)
    table.add_row("orders/s", f"{off[0]:.2f}", f"{on[0]:.2f}", f"{on[0] / off[0]:.3f}")
    table.add_row("p50 ms", f"{off[1] * 1000:.1f}", f"{on[1] * 1000:.1f}", f"{on[1] / off[1]:.3f}")
    table.add_row("p99 ms", f"{off[2] * 1000:.1f}", f"{on[2] * 1000:.1f}", f"{on[2] / off[2]:.3f}")
    console.print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    console.print(f"written to {args.output}")


if __name__ == "__main__":
    main()
