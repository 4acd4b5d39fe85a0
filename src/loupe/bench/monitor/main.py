"""`python -m loupe.bench --only monitor`: the benchmark's flags, its three parts in order,
and the results printed and written to the `monitor` section of the report."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console

from loupe.bench.journeys import WARM_UP
from loupe.bench.monitor import detection, ingest, jaeger
from loupe.bench.monitor.harness import Part, flow, yardstick
from loupe.bench.monitor.report import Results, print_tables, report
from loupe.bench.report import write_section
from loupe.monitor.settings import MonitorSettings
from loupe.stack.components import JaegerPorts

SECTION = "monitor"


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
    results = measure(args, console)
    results.seconds = time.perf_counter() - started
    print_tables(results, console)
    write_section(output, SECTION, report(results))
    console.print(f"monitor section written to {output}")


def measure(args: argparse.Namespace, console: Console) -> Results:
    """The three parts, one after the other, each on a monitor of its own."""
    with console.status("making the spans (OTLP/protobuf)"):
        spans = flow(
            1,
            args.ingest_batches * args.ingest_rounds * len(ingest.client_counts(args)),
            args.orders_per_batch,
        )
    request_bytes = round(statistics.fmean(len(b.body) for b in spans[WARM_UP:]))
    yard = spans[WARM_UP : WARM_UP + 20]
    yardsticks = [yardstick(yard)]
    with tempfile.TemporaryDirectory(prefix="loupe-bench-monitor-") as root:
        part = Part(console, Path(root), JaegerPorts.pick_free(), yard, yardsticks)
        ingested = ingest.measure(part, args, spans)
        del spans
        capacity = max(x.spans_per_second for x in ingest.ingest_summary(ingested))
        detections = detection.measure(part, args, capacity)
        rounds = jaeger.measure(part, args) if args.jaeger_rounds else []
    return Results(
        ingest=ingested,
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
