"""Part 1, ingest: the monitor takes requests of whole journeys' spans (orders' spans mixed
with spans that name no order, in the proportions the services emit) straight at its
`POST /v1/traces`, in rounds that take turns between numbers of concurrent clients; SLOs of a
day leave detection idle. Its rate, request latency and the CPU it and PostgreSQL use."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console

from loupe.bench.journeys import WARM_UP, Batch
from loupe.bench.measure import (
    CLIENT_CPU,
    MACHINE_CPU,
    cpu_by_group,
    cpu_used,
    percentile,
    pids_named,
    spread,
)
from loupe.bench.monitor.harness import (
    Part,
    RunningMonitor,
    http_client,
    ms,
    progress,
    send_all,
    slo_toml,
    thousands,
)


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


async def ingest_round(
    monitor: RunningMonitor, batches: Sequence[Batch], clients: int, console: Console, label: str
) -> IngestRound:
    assert monitor.process.pid is not None
    async with http_client(monitor.authorization) as client:
        received_before, kept_before = await monitor.received(client)
        groups = {"monitor": [monitor.process.pid], "postgres": pids_named("postgres")}
        cpu_before = cpu_by_group(groups)
        with progress(console) as bar:
            task = bar.add_task(f"{label}: POST /v1/traces", total=len(batches))
            started = time.perf_counter()
            latencies = await send_all(
                client, monitor.intake, batches, clients, lambda: bar.advance(task)
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
        client_cpu=used[CLIENT_CPU],
        machine_cpu=used[MACHINE_CPU],
    )


async def warm_up(monitor: RunningMonitor, batches: Sequence[Batch]) -> None:
    async with http_client(monitor.authorization) as client:
        await send_all(client, monitor.intake, batches, 1)


def measure(part: Part, args: argparse.Namespace, flow: Sequence[Batch]) -> list[IngestRound]:
    """`--ingest-rounds` rounds per number of `--ingest-clients`, taking turns, each sending
    the next `--ingest-batches` requests of `flow` after its `WARM_UP` untimed ones."""
    clients = client_counts(args)
    rounds: list[IngestRound] = []
    with part.monitor("ingest", "ingest", slo_toml()) as monitor:
        asyncio.run(warm_up(monitor, flow[:WARM_UP]))
        total = args.ingest_rounds * len(clients)
        for n in range(total):
            count = clients[n % len(clients)]
            first = WARM_UP + n * args.ingest_batches
            label = f"ingest round {n + 1}/{total} ({count} clients)"
            batches = flow[first : first + args.ingest_batches]
            result = asyncio.run(ingest_round(monitor, batches, count, part.console, label))
            rounds.append(result)
            part.time_yardstick()
            part.console.print(
                f"{label}: {thousands(result.rate)} spans/s received, "
                f"{thousands(result.kept_reported / result.seconds)} kept/s, request p50 "
                f"{ms(percentile(result.latencies, 50))} ms, p99 "
                f"{ms(percentile(result.latencies, 99))} ms"
            )
    return rounds


def client_counts(args: argparse.Namespace) -> list[int]:
    """`--ingest-clients`: the numbers of concurrent senders to compare."""
    return [int(c) for c in str(args.ingest_clients).split(",") if c.strip()]
