"""The `loupe` command."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import typer

from loupe.config import ACTOR_RATE, SERVICES

app = typer.Typer(
    help="loupe: trace orders across the shop, CRM and MES services and RabbitMQ.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def serve(
    service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}."),
    port: int | None = typer.Option(
        None, help="Port to listen on (default: from LOUPE_<SERVICE>_URL)."
    ),
) -> None:
    """Run one order service (shop, crm or mes) in the foreground."""
    if service not in SERVICES:
        raise typer.BadParameter(
            f"unknown service {service!r}; choose one of {', '.join(SERVICES)}"
        )
    from loupe.service.http import run_service

    run_service(service, port)


@app.command()
def actors(
    rate: float = typer.Option(
        ACTOR_RATE.default, envvar=ACTOR_RATE.name, help="New orders per second."
    ),
    orders: int = typer.Option(
        0, help="Stop after this many orders reach CLOSED (0: run until stopped)."
    ),
) -> None:
    """Simulate customers, a B2B partner, sellers and operators driving orders."""
    from loupe.actors import run_actors

    run_actors(rate=rate, orders=orders)


@app.command()
def portal() -> None:
    """Run loupe-portal (behind the sign-in gateway) in the foreground; see LOUPE_PORTAL_URL."""
    from loupe.portal.app import run_portal

    run_portal()


@app.command()
def monitor() -> None:
    """Run loupe-monitor (OTLP intake, detection, API) in the foreground; see LOUPE_MONITOR_*."""
    from loupe.monitor.app import run_monitor

    run_monitor()


def _report(
    action: Callable[[Any, str], Awaitable[Any]],
    render: Callable[[Any, Any, str], None],
    as_json: bool,
) -> None:
    """Reads the monitor's database with `action(pool, console_url)` and prints the answer as
    JSON or, through `render(data, console, console_url)`, as text that fits the terminal."""
    from loupe.monitor.report import ReportError, dump, read, stdout_console
    from loupe.monitor.settings import MonitorSettings

    settings = MonitorSettings.from_env()
    console_url = settings.base.console_url
    try:
        data = read(settings, lambda pool: action(pool, console_url))
    except ReportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if data is None:
        raise typer.Exit(1)
    if as_json:
        typer.echo(dump(data))
    else:
        render(data, stdout_console(), console_url)


JSON_OPTION = typer.Option(
    False, "--json", help="Print JSON (the API's contract, plus console_url links) instead."
)


@app.command()
def stuck(
    as_json: bool = JSON_OPTION,
    state: str = typer.Option(
        "",
        help="Only `stuck`, `broken`, `unroutable` or `telemetry-gap` (default: all).",
    ),
) -> None:
    """Orders stuck or broken now, queues nobody consumes, unroutable messages and services
    the monitor hears nothing from: where, since when, the evidence; the trace and the console
    link when the terminal is wide enough."""
    from loupe.monitor import report, store
    from loupe.monitor.models import FindingKind

    if state not in ("", *FindingKind):
        raise typer.BadParameter(f"--state must be one of {', '.join(FindingKind)}")

    async def action(pool: Any, console_url: str) -> Any:
        found = await store.findings(pool, FindingKind(state) if state else None)
        return report.findings_json(console_url, found)

    _report(
        action, lambda data, console, _: report.print_findings(data["findings"], console), as_json
    )


@app.command()
def journey(
    order_id: str = typer.Argument(
        ..., help="The order's id (order.id in the traces), or its first characters."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """One order's transitions in order: when, which service, which trace."""
    from loupe.monitor import report, store

    async def action(pool: Any, _: str) -> Any:
        found = await store.journey(pool, order_id)
        if found is None:
            # A short id, as `loupe stuck` shows in a narrow terminal.
            matches = await report.orders_starting_with(pool, order_id)
            if len(matches) == 1:
                found = await store.journey(pool, matches[0])
            elif matches:
                typer.echo(
                    f"several orders start with {order_id}: {', '.join(matches)}; give more "
                    "of the id",
                    err=True,
                )
            else:
                typer.echo(f"no spans of order {order_id} have reached the monitor", err=True)
        return report.journey_json(found) if found else None

    _report(
        action,
        lambda data, console, console_url: report.print_journey(
            data, console, console_url=console_url
        ),
        as_json,
    )


@app.command()
def incidents(
    as_json: bool = JSON_OPTION,
    status: str = typer.Option("all", help="open, resolved or all."),
    window_hours: float = typer.Option(168.0, help="Resolved incidents of this many hours."),
) -> None:
    """Incidents (findings sharing a place), with MTTD and MTTR."""
    from datetime import timedelta

    from loupe.monitor import report, store
    from loupe.monitor.models import IncidentState

    if status not in (*IncidentState, store.ALL):
        raise typer.BadParameter("--status must be open, resolved or all")

    async def action(pool: Any, console_url: str) -> Any:
        found = await store.incidents(pool, status, timedelta(hours=window_hours))
        return report.incidents_json(console_url, found)

    _report(action, lambda data, console, _: report.print_incidents(data, console), as_json)


@app.command()
def up(
    storage: str = typer.Option(
        "badger", help="Jaeger storage: badger (on disk, kept 72 h) or memory (lost on exit)."
    ),
    rate: float = typer.Option(0.5, help="New orders per second from the simulated actors."),
    no_actors: bool = typer.Option(False, "--no-actors", help="Do not start the actors."),
) -> None:
    """Start Jaeger, Dex, the gateway, the portal, the monitor, the services and the actors;
    Ctrl-C stops them."""
    from loupe.stack.components import STORAGES
    from loupe.stack.up import run_up

    if storage not in STORAGES:
        choices = ", ".join(STORAGES)
        raise typer.BadParameter(f"unknown storage {storage!r}; choose one of {choices}")
    raise typer.Exit(run_up(storage=storage, rate=rate, actors=not no_actors))


@app.command()
def openapi(
    out: str = typer.Option(
        "docs/openapi",
        "--out",
        help="Folder for shop-api.json, crm-api.json, mes-api.json, loupe-monitor.json.",
    ),
) -> None:
    """Write the services' and the monitor's OpenAPI documents (nothing needs to run)."""
    from pathlib import Path

    from loupe.openapi import export_openapi

    for path in export_openapi(Path(out)):
        typer.echo(str(path))


@app.command()
def provision(
    delete_guest: bool = typer.Option(
        False, "--delete-guest", help="Then delete RabbitMQ's guest user (`make setup` does)."
    ),
) -> None:
    """Set up each process's RabbitMQ user and PostgreSQL role, the topology and the databases
    (idempotent; as the administrators of LOUPE_RABBITMQ_ADMIN_USER, LOUPE_POSTGRES_ADMIN_DSN)."""
    import asyncio

    from loupe.config import DATABASE_OWNERS
    from loupe.provision import GUEST, ProvisionError, ProvisionSettings, provision

    settings = ProvisionSettings.from_env()
    try:
        done = asyncio.run(provision(settings, retire=(GUEST,) if delete_guest else ()))
    except ProvisionError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    changed = ", ".join(done.broker_users) or "none changed"
    typer.echo(f"RabbitMQ vhost {settings.vhost}: users {changed}")
    for user in done.deleted:
        typer.echo(f"RabbitMQ: {user} deleted")
    databases = ", ".join(settings.base.database_name(o) for o in DATABASE_OWNERS)
    typer.echo(
        f"PostgreSQL: databases {databases}, each owned by its own role;"
        f" {settings.base.reader_role} reads the monitor's"
    )


@app.command()
def settings(
    component: str = typer.Argument(
        "", help="loupe, provision, jaeger, gateway, portal, access or monitor (default: all)."
    ),
) -> None:
    """Print the LOUPE_* variables as docs/runbook.md's Markdown tables: name, default, meaning."""
    from loupe.environment import runbook_tables

    tables = runbook_tables()
    if component and component not in tables:
        choices = ", ".join(tables)
        raise typer.BadParameter(f"unknown component {component!r}; choose one of {choices}")
    for name, table in tables.items():
        if component in ("", name):
            typer.echo(table)
