"""`loupe up`: run Jaeger, Dex, the sign-in gateway, the portal, the order-flow monitor, the
services and the actors until Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loupe import access
from loupe.config import CONSOLE_URL, RABBITMQ_MANAGEMENT_URL, SERVICES, Settings
from loupe.monitor.settings import MonitorSettings
from loupe.portal.settings import JAEGER_QUERY_URL, PortalSettings
from loupe.stack.components import (
    JaegerPorts,
    Storage,
    actors_process,
    dex_process,
    gateway_process,
    jaeger_process,
    monitor_process,
    portal_process,
    preflight,
    service_process,
    service_url,
)
from loupe.stack.gateway import (
    CLIENT_ID,
    DEMO_USERS,
    GatewayFiles,
    GatewaySettings,
    Secrets,
    render,
)
from loupe.stack.process import StackError, indent
from loupe.stack.supervisor import Death, Restarted, Stack, Supervisor


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
    except BaseException:
        # The children run in sessions of their own: they would outlive an unexpected error.
        _stop(stack, console)
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run(stack: Stack, storage: Storage, rate: float, actors: bool, console: Console) -> int:
    settings = Settings.from_env()
    data_dir = settings.data_dir.resolve()
    logs_dir = data_dir / "logs"
    ports = JaegerPorts.from_env()
    gateway = GatewaySettings.from_env()

    with console.status("Checking RabbitMQ and PostgreSQL"):
        preflight(settings)
    console.print("[green]✓[/] RabbitMQ and PostgreSQL are reachable")

    keys = Secrets.ensure(gateway.secrets_dir)
    # The portal and the monitor's API both check the ID tokens the gateway passes.
    access_env = access_environment(gateway)
    # The console reads Jaeger's traces for its order pages.
    access_env.setdefault(JAEGER_QUERY_URL.name, ports.query_url)
    portal_url = PortalSettings.from_env(access_env).url
    monitor_url = MonitorSettings.from_env(access_env).url
    files = render(
        gateway,
        ports.query_url,
        data_dir,
        logs_dir,
        keys,
        portal_url=portal_url,
        monitor_url=monitor_url,
    )

    # The stack stops in reverse: the actors and services first (each flushing its spans to
    # Jaeger), then Jaeger (flushing what it forwards to the monitor), the monitor last, so
    # no order's last moves are lost and reported stuck after the next start. The monitor's
    # own few spans wait in its exporter until Jaeger is up.
    monitor_env = access_env | keys.monitor_env()
    stack.add(monitor_process(monitor_env, otlp_endpoint=ports.otlp_http_url, logs_dir=logs_dir))
    stack.add(
        jaeger_process(
            storage,
            ports,
            data_dir / "jaeger",
            logs_dir,
            monitor_endpoint=monitor_url,
            monitor_token=keys.monitor_intake_token,
        )
    )
    if gateway.uses_dex:
        stack.add(dex_process(gateway, files, logs_dir))
    stack.add(gateway_process(gateway, files, logs_dir))
    stack.add(portal_process(access_env, otlp_endpoint=ports.otlp_http_url, logs_dir=logs_dir))
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

    console.print(
        _urls(
            ports,
            storage,
            logs_dir,
            gateway,
            files,
            monitor_url,
            management_url=settings.management_url,
        )
    )
    console.print(_sign_in(gateway, keys), highlight=False)
    console.print("[bold]==>[/] running; press Ctrl-C to stop everything")

    supervisor = Supervisor(stack)
    console.print(f"    a process that dies is {supervisor.policy.describe()}")
    status_file = data_dir / "supervisor.json"
    supervisor.write_status(status_file)
    while True:
        for event in supervisor.tick():
            _report(event, console)
            supervisor.write_status(status_file)
        time.sleep(0.5)


def _report(event: Death | Restarted, console: Console) -> None:
    process = event.process
    if isinstance(event, Restarted):
        console.print(
            f"[green]✓[/] {process.name} is back (pid {process.pid}); "
            f"restarted {event.restarts} time(s) since `loupe up` began"
        )
        return
    console.print(
        f"[red bold]error:[/] {process.name} {escape(event.problem)}; restarting it in "
        f"{event.delay:g} s (log: {escape(str(process.log_path))}). Last lines of the log:\n"
        f"{escape(indent(process.log_tail()))}",
        highlight=False,
    )


def access_environment(
    gateway: GatewaySettings, environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The portal's and the monitor's variables: they accept ID tokens from the gateway's issuer
    and client, let in the same groups as the gateway (unless set otherwise), and link to the
    console where the gateway serves it."""
    env = dict(environ)
    env[access.ISSUER_URL.name] = gateway.issuer
    env[access.CLIENT_ID.name] = gateway.oidc_client_id or CLIENT_ID
    env.setdefault(access.READ_GROUPS.name, ",".join(gateway.allowed_groups))
    if not CONSOLE_URL.raw(env):
        env[CONSOLE_URL.name] = gateway.url
    return env


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


def _urls(
    ports: JaegerPorts,
    storage: Storage,
    logs_dir: Path,
    gateway: GatewaySettings,
    files: GatewayFiles,
    monitor_url: str,
    *,
    management_url: str = RABBITMQ_MANAGEMENT_URL.default,
) -> Table:
    table = Table(title="loupe is running", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("loupe console (sign in here)", f"{gateway.url}/")
    table.add_row("Jaeger UI, signed in", f"{gateway.url}/jaeger/search")
    table.add_row("Who am I, signed in", f"{gateway.url}/api/whoami")
    table.add_row("Jaeger API, signed in", f"{gateway.url}/jaeger/api/services")
    table.add_row("Order-flow monitor API, signed in", f"{gateway.url}/monitor/api/findings")
    table.add_row("Sign out", f"{gateway.url}/oauth2/sign_out")
    table.add_row(
        "Identity provider (Dex)" if gateway.uses_dex else "Identity provider", gateway.issuer
    )
    table.add_row("Audit log", str(files.audit_log))
    for service in SERVICES:
        url = service_url(service, os.environ)
        table.add_row(f"{service} API", url)
        table.add_row(f"{service} API docs", f"{url}/docs")
    table.add_row("Jaeger query API, direct", f"{ports.query_url}/api/services")
    table.add_row("Jaeger OTLP/HTTP", ports.otlp_http_url)
    table.add_row("Jaeger storage", storage)
    table.add_row("Monitor metrics, direct", f"{monitor_url}/metrics")
    table.add_row("RabbitMQ management", management_url)
    table.add_row("Logs", str(logs_dir))
    return table


def _sign_in(gateway: GatewaySettings, keys: Secrets) -> str:
    """Who can sign in, and with which password (shown only when it was just generated)."""
    if not gateway.uses_dex:
        allowed = ", ".join(gateway.allowed_groups)
        return (
            f"[bold]==>[/] sign in at [bold]{escape(gateway.url)}/[/] with "
            f"{escape(gateway.issuer)}\n"
            f"    only the groups {escape(allowed)} (claim {escape(gateway.oidc_groups_claim)})"
            " get in (LOUPE_ALLOWED_GROUPS)"
        )
    users = ", ".join(
        f"{email} ({', '.join(groups) or 'no group'})" for email, groups in DEMO_USERS.items()
    )
    allowed = ", ".join(gateway.allowed_groups)
    lines = [
        f"[bold]==>[/] sign in at [bold]{escape(gateway.url)}/[/] as one of: {escape(users)}",
        f"    only the groups {escape(allowed)} get in (LOUPE_ALLOWED_GROUPS)",
    ]
    if keys.demo_password_source == "environment":
        lines.append("    password: the value of LOUPE_DEMO_PASSWORD")
    elif keys.demo_password_source == "generated":
        lines.append(
            f"    password (generated now, kept in {escape(str(keys.demo_password_file))}): "
            f"[bold]{escape(keys.demo_password)}[/]"
        )
    else:
        lines.append(f"    password: in {escape(str(keys.demo_password_file))}")
    return "\n".join(lines)
