"""The `loupe` command."""

from __future__ import annotations

import typer

from loupe.config import SERVICES

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
    from loupe.runtime import run_service

    run_service(service, port)


@app.command()
def actors(
    rate: float = typer.Option(0.5, envvar="LOUPE_ACTOR_RATE", help="New orders per second."),
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
def up(
    storage: str = typer.Option(
        "badger", help="Jaeger storage: badger (on disk, kept 72 h) or memory (lost on exit)."
    ),
    rate: float = typer.Option(0.5, help="New orders per second from the simulated actors."),
    no_actors: bool = typer.Option(False, "--no-actors", help="Do not start the actors."),
) -> None:
    """Start Jaeger, Dex, the sign-in gateway, the services and the actors; Ctrl-C stops them."""
    from loupe.stack import STORAGES
    from loupe.stack.up import run_up

    if storage not in STORAGES:
        choices = ", ".join(STORAGES)
        raise typer.BadParameter(f"unknown storage {storage!r}; choose one of {choices}")
    raise typer.Exit(run_up(storage=storage, rate=rate, actors=not no_actors))


@app.command()
def openapi(
    out: str = typer.Option(
        "docs/openapi", "--out", help="Folder to write shop-api.json, crm-api.json, mes-api.json."
    ),
) -> None:
    """Write the shop, CRM and MES services' OpenAPI documents (no service needs to run)."""
    from pathlib import Path

    from loupe.openapi import export_openapi

    for path in export_openapi(Path(out)):
        typer.echo(str(path))
