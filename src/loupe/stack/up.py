"""`loupe up`: run Jaeger, the services and the actors until Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loupe.config import SERVICES, Settings
from loupe.stack.components import (
    JaegerPorts,
    Storage,
    actors_process,
    jaeger_process,
    preflight,
    service_process,
    service_url,
)
from loupe.stack.process import StackError, indent
from loupe.stack.supervisor import Stack

RABBITMQ_MANAGEMENT_URL = "http://127.0.0.1:15672"


class StopRequested(Exception):
    """Raised from the signal handler so SIGTERM unwinds exactly like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


def _request_stop(signum: int, _frame: FrameType | None) -> None:
    raise StopRequested(signum)


def run_up(storage: Storage, rate: float, actors: bool, console: Console | None = None) -> int:
    """Returns the exit code: 0 after a requested stop, 1 when something failed."""
    console = console or Console()
    previous = {s: signal.signal(s, _request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    stack = Stack()
    try:
        return _run(stack, storage, rate, actors, console)
    except StopRequested as stop:
        console.print(f"[bold]==>[/] {stop} received, stopping")
        _stop(stack, console)
        return 0
    except StackError as exc:
        console.print(f"[red bold]error:[/] {escape(str(exc))}", highlight=False)
        _stop(stack, console)
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run(stack: Stack, storage: Storage, rate: float, actors: bool, console: Console) -> int:
    settings = Settings.from_env()
    data_dir = settings.data_dir.resolve()
    logs_dir = data_dir / "logs"
    ports = JaegerPorts.from_env()

    with console.status("Checking RabbitMQ and PostgreSQL"):
        preflight(settings)
    console.print("[green]✓[/] RabbitMQ and PostgreSQL are reachable")

    stack.add(jaeger_process(storage, ports, data_dir / "jaeger", logs_dir))
    for service in SERVICES:
        stack.add(service_process(service, otlp_endpoint=ports.otlp_http_url, logs_dir=logs_dir))
    if actors:
        stack.add(actors_process(rate=rate, otlp_endpoint=ports.otlp_http_url, logs_dir=logs_dir))

    for process in stack:
        began = time.monotonic()
        with console.status(f"Starting {process.name} (waiting for {process.readiness})"):
            process.start()
        took = time.monotonic() - began
        console.print(f"[green]✓[/] {process.name} is up in {took:.1f} s (pid {process.pid})")

    console.print(_urls(ports, storage, logs_dir))
    console.print("[bold]==>[/] running; press Ctrl-C to stop everything")

    while True:
        died = stack.died()
        if died:
            for process in died:
                console.print(
                    f"[red bold]error:[/] {process.name} exited unexpectedly with code "
                    f"{process.returncode} (log: {escape(str(process.log_path))}). "
                    f"Last lines of the log:\n{escape(indent(process.log_tail()))}",
                    highlight=False,
                )
            _stop(stack, console)
            return 1
        time.sleep(0.5)


def _stop(stack: Stack, console: Console) -> None:
    # A second Ctrl-C must not abandon children half-way; each stop is bounded anyway
    # (SIGKILL after the stack's timeout).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    with console.status("Stopping") as status:
        stopped = stack.stop(lambda p: status.update(f"Stopping {p.name}"))
    if stopped:
        console.print(f"[green]✓[/] stopped {', '.join(stopped)}")
    console.print("[bold]==>[/] everything is stopped")


def _urls(ports: JaegerPorts, storage: Storage, logs_dir: Path) -> Table:
    table = Table(title="loupe is running", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for service in SERVICES:
        url = service_url(service, os.environ)
        table.add_row(f"{service} API", url)
        table.add_row(f"{service} API docs", f"{url}/docs")
    table.add_row("Jaeger query API", f"{ports.query_url}/api/services")
    table.add_row("Jaeger OTLP/HTTP", ports.otlp_http_url)
    table.add_row("Jaeger storage", storage)
    table.add_row("RabbitMQ management", RABBITMQ_MANAGEMENT_URL)
    table.add_row("Logs", str(logs_dir))
    return table
