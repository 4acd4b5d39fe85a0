"""The results of one run of the monitor benchmark: the terminal's tables and the `monitor`
section of docs/benchmarks.md, one piece per part, rendered from the figures alone."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from loupe.bench import measure
from loupe.bench.journeys import JOURNEY, SUBMISSION, WARM_UP, spans_per_order
from loupe.bench.measure import percentile
from loupe.bench.monitor.detection import DETECTION_AIM, Detection
from loupe.bench.monitor.harness import ms, thousands
from loupe.bench.monitor.ingest import IngestRound, IngestSummary, ingest_summary
from loupe.bench.monitor.jaeger import (
    JAEGER_MODES,
    MONITOR_POLL_SECONDS,
    POLL_SECONDS,
    JaegerRound,
    jaeger_summary,
)

TITLE = "## The order-flow monitor: ingest, detection latency, and what it costs Jaeger"


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
    machine: str = field(default_factory=measure.machine)
    cores: int | None = field(default_factory=os.cpu_count)


def report(results: Results) -> str:
    """The `monitor` section: what ran where, then each part that ran, then the noise."""
    lines = _intro(results)
    lines += _ingest(results)
    lines += _detection(results)
    lines += _jaeger(results)
    lines += _noise(results)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- tables


def _row(*cells: str) -> str:
    """A Markdown table row; an empty cell is written `| |`."""
    return "|" + "".join(f" {cell} |" if cell else " |" for cell in cells)


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], text_last: bool = False
) -> list[str]:
    """A Markdown table: the first column text, the others numbers (the last text too when
    `text_last`)."""
    numbers = len(header) - 1 - text_last
    rule = "|---|" + "---:|" * numbers + "---|" * text_last
    return [_row(*header), rule, *(_row(*row) for row in rows)]


# ---------------------------------------------------------------------------------- intro


def _intro(results: Results) -> list[str]:
    per_order, with_order, moves = spans_per_order()
    return [
        TITLE,
        "",
        "Every figure in this section comes from one run of this benchmark "
        f"({results.seconds / 60:.1f} minutes in all); settings compared with each other were "
        "measured side by side in rounds that took turns.",
        "",
        f"- Run: {results.started.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {results.machine}; PostgreSQL 15 and RabbitMQ on the same machine.",
        "- Spans: synthetic OTLP/protobuf shaped like the services' (`loupe.bench.journeys`, "
        f"after docs/tracing.md): a shop order's whole journey is {len(JOURNEY)} traces of "
        f"{per_order} spans, {with_order} with `order.id` ({moves} of them transitions) and "
        f"{per_order - with_order} without (database statements, people's HTTP requests, the "
        "model download), as counted in a real run of the pipeline. A request holds one "
        f"journey step of each of {len(JOURNEY) * results.orders_per_batch} orders at "
        f"different stages: {_batch_spans(results)} spans, "
        f"{results.request_bytes / 1024:.0f} KiB, all encoded before the timing starts.",
        "- Monitor: `loupe monitor` as a process of its own, in a sandbox (its own PostgreSQL "
        f"database and port), detection every {results.tick_seconds:g} s "
        "(`LOUPE_MONITOR_TICK_SECONDS`, the default).",
        "",
    ]


def _batch_spans(results: Results) -> int:
    return spans_per_order()[0] * results.orders_per_batch


# ---------------------------------------------------------------------------------- 1. ingest


def _ingest(results: Results) -> list[str]:
    summaries = ingest_summary(results.ingest)
    if not summaries:
        return []
    counts = " and ".join(str(x.clients) for x in summaries)
    return [
        "### Ingest",
        "",
        f"Rounds of {results.ingest_batches} requests each, taking turns between "
        f"{counts} concurrent clients (after {WARM_UP} untimed warm-up requests), sent "
        "straight to the monitor's `POST /v1/traces`: every span of the journeys, as a "
        "collector without the filter would send them. SLOs of a day leave detection "
        "nothing to find.",
        "",
        *_ingest_table(results, summaries),
        "",
        _ingest_findings(results, summaries),
        "",
    ]


def _ingest_table(results: Results, summaries: Sequence[IngestSummary]) -> list[str]:
    per_order = spans_per_order()[0]
    figures: list[tuple[str, Callable[[IngestSummary], str]]] = [
        ("spans received per second", lambda x: thousands(x.spans_per_second)),
        ("order spans kept per second", lambda x: thousands(x.kept_per_second)),
        (
            f"orders' whole journeys per second ({per_order} spans each)",
            lambda x: f"{x.spans_per_second / per_order:.0f}",
        ),
        (
            f"request latency p50 / p99 (ms, {_batch_spans(results)} spans a request)",
            lambda x: f"{ms(x.p50)} / {ms(x.p99)}",
        ),
        ("monitor process CPU (cores busy)", lambda x: f"{x.monitor_cores:.2f}"),
        ("PostgreSQL CPU, all backends (cores busy)", lambda x: f"{x.postgres_cores:.2f}"),
        ("benchmark client CPU (cores busy)", lambda x: f"{x.client_cores:.2f}"),
        ("any other process's CPU (cores busy)", lambda x: f"{x.other_cores:.2f}"),
        ("rounds; their spread around the mean", lambda x: f"{x.rounds}; ±{x.spread * 100:.0f}%"),
    ]
    header = ["", *(f"{x.clients} client{'s' if x.clients > 1 else ''}" for x in summaries)]
    rows = [(label, *(value(x) for x in summaries)) for label, value in figures]
    return _table(header, rows)


def _ingest_findings(results: Results, summaries: Sequence[IngestSummary]) -> str:
    best = max(summaries, key=lambda x: x.spans_per_second)
    ingest = results.ingest
    return (
        f"The monitor ingests **{thousands(best.spans_per_second)} spans per second** "
        f"({thousands(best.kept_per_second)} of them kept) on this machine. Each round's "
        "spans per second, in the order they ran: "
        + ", ".join(f"{r.clients}c {thousands(r.rate)}" for r in ingest)
        + ". The monitor counted "
        f"{sum(r.received_reported for r in ingest):,.0f} spans received and "
        f"{sum(r.kept_reported for r in ingest):,.0f} kept "
        "(`loupe_monitor_spans_received_total`, `_kept_total`); "
        f"{sum(r.spans for r in ingest):,} were sent, "
        f"{sum(r.kept for r in ingest):,} with `order.id`." + _scaling(summaries)
    )


def _scaling(summaries: Sequence[IngestSummary]) -> str:
    """How the most concurrent clients compare with the fewest ('' with one number only)."""
    if len(summaries) < 2:
        return ""
    low, high = summaries[0], summaries[-1]
    gain = high.spans_per_second / low.spans_per_second
    return (
        f" {high.clients} concurrent clients got {gain:.2f} times the rate of "
        f"{low.clients}, with requests waiting {high.p50 / low.p50:.1f} times as long (p50)."
    )


# ---------------------------------------------------------------------------------- 2. detection


def _detection(results: Results) -> list[str]:
    if not results.detections:
        return []
    first = results.detections[0]
    return [
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
        *_detection_table(results.detections),
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


def _detection_table(detections: Sequence[Detection]) -> list[str]:
    header = (
        *("monitor", "ingesting meanwhile (spans/s)", "orders", "found"),
        *("p50 (ms)", "p99 (ms)", "max (ms)", f"p99 ≤ {DETECTION_AIM:g} s"),
    )
    rows = []
    for d in detections:
        found = d.latencies or [float("nan")]
        rows.append(
            (
                d.phase,
                thousands(d.background_spans_per_second),
                str(d.orders),
                str(len(d.latencies)),
                ms(percentile(found, 50)),
                ms(percentile(found, 99)),
                ms(max(found)),
                "**yes**" if d.meets_aim else "**no**",
            )
        )
    return _table(header, rows, text_last=True)


# ---------------------------------------------------------------------------------- 3. jaeger


def _jaeger(results: Results) -> list[str]:
    summary = jaeger_summary(results.rounds)
    if len(summary) != len(JAEGER_MODES):
        return []
    alone, attached = (summary[m] for m in JAEGER_MODES)
    largest = max(alone["spread"], attached["spread"])
    return [
        "### Jaeger's ingest with and without the monitor attached",
        "",
        _jaeger_setup(results),
        "",
        *_jaeger_table(results.rounds[0].kept, alone, attached),
        "",
        _jaeger_findings(results, alone, attached),
        "",
        f"Rounds of one mode differed by up to ±{largest * 100:.0f}% around their mean, so "
        "a difference between the modes smaller than that is within the noise.",
        "",
    ]


def _jaeger_setup(results: Results) -> str:
    first = results.rounds[0]
    return (
        f"{len(results.rounds)} rounds taking turns: Jaeger all-in-one (memory storage) "
        "alone, then with `deploy/jaeger/monitor-pipeline.yaml` forwarding the spans with "
        "`order.id` or status ERROR to a running monitor over OTLP/HTTP, and so on. Each "
        f"round starts a fresh Jaeger and sends {results.jaeger_batches} requests "
        f"({first.spans:,} spans, {first.kept:,} of them for the monitor) from "
        f"{results.jaeger_clients} concurrent clients to its OTLP/HTTP receiver, after "
        f"{WARM_UP} untimed warm-up requests. The two rounds of a pair send the same spans. "
        "The monitor runs in both modes, so only the attachment differs. Jaeger's figures "
        "are its own metrics, polled every "
        f"{POLL_SECONDS * 1000:.0f} ms (the monitor's every "
        f"{MONITOR_POLL_SECONDS * 1000:.0f} ms)."
    )


# Each row of Jaeger's table: its label, the figure's key in jaeger_summary, its format,
# and whether the row has the ratio of attached to alone.
_JAEGER_FIGURES = (
    (
        "spans/s until stored (`otelcol_receiver_accepted_spans` and the storage exporter's "
        "`otelcol_exporter_sent_spans` at the total)",
        "rate",
        "{:,.0f}",
        True,
    ),
    ("spans/s until every POST was answered", "posts_rate", "{:,.0f}", True),
    ("Jaeger CPU per 1000 spans (ms)", "cpu_per_1000", "{:.1f}", True),
    ("monitor CPU per 1000 spans sent to Jaeger (ms)", "monitor_cpu_per_1000", "{:.1f}", False),
    ("whole machine's CPU per 1000 spans (ms)", "machine_cpu_per_1000", "{:.1f}", True),
    ("whole machine's cores busy, until everything arrived", "machine_cores", "{:.2f}", False),
    ("of them the benchmark client's", "client_cores", "{:.2f}", False),
    (
        "of them any other process's (not Jaeger, the monitor, PostgreSQL)",
        "other_cores",
        "{:.2f}",
        False,
    ),
    ("seconds per round until stored (mean)", "seconds", "{:.2f}", False),
)


def _jaeger_table(kept: int, alone: dict[str, float], attached: dict[str, float]) -> list[str]:
    rows = [
        (
            label,
            fmt.format(alone[key]),
            fmt.format(attached[key]),
            f"{attached[key] / alone[key]:.3f}" if ratio else "",
        )
        for label, key, fmt, ratio in _JAEGER_FIGURES
    ]
    rows += [
        (
            f"seconds until the monitor had received its {kept:,} spans (mean)",
            "—",
            f"{attached['monitor_seconds']:.2f}",
            "",
        ),
        (
            "spans refused, failed or dropped (all rounds)",
            f"{alone['refused']:.0f}",
            f"{attached['refused']:.0f}",
            "",
        ),
    ]
    return _table(("", *JAEGER_MODES, "with / alone"), rows)


def _jaeger_findings(results: Results, alone: dict[str, float], attached: dict[str, float]) -> str:
    ratio = attached["rate"] / alone["rate"]
    return (
        f"With the monitor attached, Jaeger stores **{ratio * 100:.1f}%** of the spans per "
        "second it stores alone. The machine was about as busy in both modes "
        f"({alone['machine_cores']:.2f} and {attached['machine_cores']:.2f} of "
        f"{results.cores} cores); attached, the monitor took "
        f"{attached['monitor_cpu_per_1000']:.1f} ms of CPU per 1000 spans sent to Jaeger "
        "and Jaeger itself "
        f"{(attached['cpu_per_1000'] / alone['cpu_per_1000'] - 1) * 100:+.0f}% CPU per span "
        "(the filter, a second batch, the OTLP export), from the same cores. "
        "Each round's spans per second until stored, in the order they ran: "
        + ", ".join(f"{r.mode} {thousands(r.rate)}" for r in results.rounds)
        + "."
    )


# ---------------------------------------------------------------------------------- noise


def _noise(results: Results) -> list[str]:
    text = (
        "Noise: two cores are shared by the monitor, PostgreSQL, Jaeger, RabbitMQ (idle) and "
        "the benchmark's client (its CPU is in the tables, and so is any other process's). "
        "Times are wall-clock, from the first timed request."
    )
    if results.yardsticks:
        low, high = min(results.yardsticks), max(results.yardsticks)
        text += (
            " The machine's own speed varied too: the same CPU-bound work (the monitor's "
            "decoder over the same 20 requests, in the benchmark's process, timed "
            f"{len(results.yardsticks)} times between parts and rounds) took {low:.1f} to "
            f"{high:.1f} µs per span (median {statistics.median(results.yardsticks):.1f}), "
            f"so absolute rates can move by up to {(high / low - 1) * 100:.0f}% from one "
            "moment to the next; ratios between settings measured in alternating rounds "
            "move less."
        )
    return [text, ""]


# ---------------------------------------------------------------------------------- terminal


def print_tables(results: Results, console: Console) -> None:
    """The headline figures of each part that ran, as tables in the terminal."""
    summaries = ingest_summary(results.ingest)
    if summaries:
        table = Table("monitor ingest", *(f"{x.clients} clients" for x in summaries))
        table.add_row("spans/s received", *(thousands(x.spans_per_second) for x in summaries))
        table.add_row("order spans/s kept", *(thousands(x.kept_per_second) for x in summaries))
        table.add_row("request p50 / p99 (ms)", *(f"{ms(x.p50)} / {ms(x.p99)}" for x in summaries))
        console.print(table)
    if results.detections:
        table = Table("detection", "p50 (ms)", "p99 (ms)", "max (ms)", "found", "p99 ≤ 2 s")
        for d in results.detections:
            found = d.latencies or [float("nan")]
            table.add_row(
                d.phase,
                ms(percentile(found, 50)),
                ms(percentile(found, 99)),
                ms(max(found)),
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
