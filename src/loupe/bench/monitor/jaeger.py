"""Part 3, what attaching the monitor costs Jaeger: rounds take turns (ABAB) between Jaeger
all-in-one alone and Jaeger with its monitor pipeline (the filter forwarding order spans to a
running monitor); the two rounds of a pair send the same spans, and each is timed until Jaeger
has stored them all and, attached, until the monitor has received its share."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console

from loupe.bench.journeys import WARM_UP, Batch
from loupe.bench.measure import (
    CLIENT_CPU,
    MACHINE_CPU,
    cpu_by_group,
    cpu_used,
    metric_sum,
    pids_named,
    spread,
)
from loupe.bench.monitor.harness import (
    Part,
    RunningMonitor,
    flow,
    http_client,
    progress,
    scrape,
    send_all,
    slo_toml,
    thousands,
    wait_until,
)
from loupe.stack.components import JaegerPorts, jaeger_process
from loupe.stack.process import Process
from loupe.stack.supervisor import Stack

JAEGER_MODES = ("alone", "with monitor")
POLL_SECONDS = 0.025
MONITOR_POLL_SECONDS = 0.1
SETTLE_TIMEOUT = 60.0


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
        monitor_token=monitor.token,
    )
    with Stack([process]):
        return asyncio.run(
            _jaeger_timed(process, mode, ports, monitor, batches, clients, console, label)
        )


async def _warm_up(
    client: httpx.AsyncClient,
    ports: JaegerPorts,
    monitor: RunningMonitor,
    warm: Sequence[Batch],
    attached: bool,
) -> None:
    """Send `warm` and wait until Jaeger has stored it and, attached, the monitor has its
    share."""
    jaeger_metrics = f"http://127.0.0.1:{ports.metrics}/metrics"
    monitor_base, _ = await monitor.received(client)
    await send_all(client, f"{ports.otlp_http_url}/v1/traces", warm, 1)
    warm_spans, warm_kept = sum(b.spans for b in warm), sum(b.kept for b in warm)

    async def warmed() -> bool:
        counters = _Counters.parse(await scrape(client, jaeger_metrics))
        if counters.stored < warm_spans:
            return False
        received, _ = await monitor.received(client)
        return not attached or received - monitor_base >= warm_kept

    await wait_until(warmed, SETTLE_TIMEOUT, "the warm-up spans arriving")


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
    async with http_client() as client:
        await _warm_up(client, ports, monitor, warm, attached)
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

        with progress(console) as bar:
            task = bar.add_task(f"{label}: POST to Jaeger", total=len(timed))
            started = time.perf_counter()
            watcher = asyncio.create_task(watch(started))
            await send_all(client, intake, timed, clients, lambda: bar.advance(task))
            posts_seconds = time.perf_counter() - started
            posts_done.set()
            bar.update(task, description=f"{label}: waiting for Jaeger and the monitor")
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
        machine_cpu=used[MACHINE_CPU],
        client_cpu=used[CLIENT_CPU],
        postgres_cpu=used["postgres"],
        window_seconds=window,
        refused=reached.get("refused", 0.0),
        monitor_received=reached.get("monitor_received", 0.0),
    )


def measure(part: Part, args: argparse.Namespace) -> list[JaegerRound]:
    """`--jaeger-rounds` pairs of rounds, alone then attached, on one running monitor."""
    with part.console.status("making the spans for Jaeger's rounds"):
        sets = [
            flow(100 + n, args.jaeger_batches, args.orders_per_batch)
            for n in range(args.jaeger_rounds)
        ]
    rounds: list[JaegerRound] = []
    with part.monitor("jaeger", "Jaeger rounds", slo_toml()) as monitor:
        total = args.jaeger_rounds * len(JAEGER_MODES)
        for n in range(total):
            mode = JAEGER_MODES[n % len(JAEGER_MODES)]
            label = f"Jaeger round {n + 1}/{total} ({mode})"
            result = jaeger_round(
                mode,
                part.ports,
                monitor,
                # Both modes of a pair send the same spans; each pair spans of its own, so
                # the monitor never gets a span twice.
                sets[n // len(JAEGER_MODES)],
                args.jaeger_clients,
                monitor.logs,
                part.console,
                label,
            )
            rounds.append(result)
            part.time_yardstick()
            extra = (
                f"; the monitor had its {result.kept:,} after {result.monitor_seconds:.2f} s"
                if result.monitor_seconds is not None
                else ""
            )
            part.console.print(
                f"{label}: {thousands(result.rate)} spans/s stored in {result.seconds:.2f} s "
                f"(POSTs answered at {thousands(result.posts_rate)}/s){extra}"
            )
    return rounds
