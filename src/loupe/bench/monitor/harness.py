"""What the monitor benchmark's three parts share: the monitor as a process in a sandbox of
its own, sending OTLP requests and scraping metrics, the flow of spans, the yardstick of the
machine's own speed, and how figures are written."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from loupe.bench.journeys import WARM_UP, Batch, steady_flow
from loupe.bench.measure import metric_sum
from loupe.bench.slo import slo_toml as demo_slo_toml
from loupe.monitor.settings import MonitorSettings
from loupe.monitor.spans import decode
from loupe.stack.components import JaegerPorts, monitor_process
from loupe.stack.gateway import Secrets
from loupe.stack.process import Process
from loupe.stack.sandbox import Sandbox
from loupe.stack.supervisor import Stack

PROTOBUF = {"Content-Type": "application/x-protobuf"}
LONG_SLO = "1d"
ERROR_GRACE = "1h"


def slo_toml(submitted_within: str = LONG_SLO) -> str:
    """The benchmark's SLO file: SUBMITTED within `submitted_within`, every other step a day
    (detection finds nothing there), the steps themselves as in the demo file."""
    return demo_slo_toml(LONG_SLO, ERROR_GRACE, {"SUBMITTED": submitted_within})


# ---------------------------------------------------------------------------------- figures


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def thousands(value: float) -> str:
    """A whole number with thousands separated: spans, spans per second."""
    return f"{value:,.0f}"


# ---------------------------------------------------------------------------------- sending


def http_client(headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=60.0,
        trust_env=False,
        limits=httpx.Limits(max_connections=32),
        headers=headers,
    )


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


def progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        refresh_per_second=4,
    )


def flow(seed: int, batches: int, orders_per_batch: int) -> list[Batch]:
    """`WARM_UP` + `batches` requests of a steady flow, spans ending over the last minutes."""
    gap = 10_000_000
    start = time.time_ns() - (batches + WARM_UP) * gap - 60 * 10**9
    return list(steady_flow(seed, batches + WARM_UP, orders_per_batch, start, gap))


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
    logs: Path  # its sandbox's logs folder, where a part's Jaeger writes too
    token: str = field(repr=False)  # its intake token

    @property
    def authorization(self) -> dict[str, str]:
        """The header its intake asks of senders."""
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def intake(self) -> str:
        return f"{self.settings.url}/v1/traces"

    @property
    def metrics_url(self) -> str:
        return f"{self.settings.url}/metrics"

    @property
    def dsn(self) -> str:
        return self.settings.base.postgres_dsn_of(self.settings.database)

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
    keys = Secrets.ensure(sandbox.root / "secrets")
    env = {
        **sandbox.env,
        **keys.monitor_env(),
        "LOUPE_MONITOR_SLO_FILE": str(slo_file),
        "LOUPE_LOG_LEVEL": "WARNING",
    }
    process = monitor_process(env, otlp_endpoint=otlp_endpoint, logs_dir=sandbox.logs)
    settings = MonitorSettings.from_env({**os.environ, **env})
    with Stack([process]):
        yield RunningMonitor(process, settings, sandbox.logs, keys.monitor_intake_token)


@dataclass
class Part:
    """What each part of a run is given: the terminal, the run's folder (each part a sandbox
    of its own in it: its own monitor database and port), Jaeger's ports, and the yardstick
    timed between parts and rounds."""

    console: Console
    root: Path
    ports: JaegerPorts
    yard: Sequence[Batch]
    yardsticks: list[float]

    def time_yardstick(self) -> None:
        self.yardsticks.append(yardstick(self.yard))

    @contextlib.contextmanager
    def monitor(self, folder: str, what: str, slo: str) -> Iterator[RunningMonitor]:
        """The monitor running with `slo` in the sandbox `folder`, for the part `what`."""
        with Sandbox(self.root / folder) as sandbox, contextlib.ExitStack() as stack:
            with self.console.status(f"starting the monitor ({what})"):
                monitor = stack.enter_context(
                    running_monitor(sandbox, slo, self.ports.otlp_http_url)
                )
            yield monitor
