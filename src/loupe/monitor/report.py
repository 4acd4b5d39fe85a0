"""`loupe stuck`, `loupe journey`, `loupe incidents`: the monitor's answers on the host.

They read the monitor's database directly. That is their authorisation: PostgreSQL lets in
only OS users it has a role for (peer authentication over the Unix socket, as set up by
scripts/setup-infra.sh), so whoever can run them could read the database anyway. Away from
the host, use the API behind the gateway, which checks the role.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loupe.database import dsn_for
from loupe.monitor.settings import MonitorSettings


class ReportError(Exception):
    """The monitor's database cannot be read; the text says why and what to do."""


async def _with_pool(
    settings: MonitorSettings, read: Callable[[asyncpg.Pool], Awaitable[Any]]
) -> Any:
    try:
        pool = await asyncpg.create_pool(
            dsn_for(settings.base.postgres_dsn, settings.database), min_size=1, max_size=2
        )
    except asyncpg.InvalidCatalogNameError:
        raise ReportError(
            f"the monitor's database {settings.database} does not exist yet: start the monitor "
            "(`make run`, or `uv run loupe monitor`) first"
        ) from None
    except (OSError, asyncpg.PostgresError) as exc:
        raise ReportError(
            f"cannot open the monitor's database {settings.database}: {exc}. Is PostgreSQL "
            "running (`make setup`), and does your OS user have a PostgreSQL role?"
        ) from None
    try:
        return await read(pool)
    except asyncpg.UndefinedTableError:
        raise ReportError(
            f"the database {settings.database} has no monitor tables yet: start the monitor "
            "once to create them"
        ) from None
    finally:
        await pool.close()


def read(settings: MonitorSettings, action: Callable[[asyncpg.Pool], Awaitable[Any]]) -> Any:
    return asyncio.run(_with_pool(settings, action))


def print_findings(found: list[dict[str, Any]], console: Console) -> None:
    if not found:
        console.print("[green]No order is stuck or broken.[/]")
        return
    table = Table(title=f"{len(found)} order(s) stuck or broken", title_justify="left")
    for column in ("order", "state", "status", "since", "service", "where", "trace", "evidence"):
        table.add_column(column, overflow="fold")
    for f in found:
        colour = "red" if f["state"] == "broken" else "yellow"
        table.add_row(
            escape(f["order_id"] or "(unknown order)"),
            f"[{colour}]{f['state']}[/]",
            escape(f["status"] or "-"),
            escape(f["since"]),
            escape(f["service"]),
            escape(f["where"]),
            escape(f["trace_id"] or "-"),
            escape(f["evidence"]),
        )
    console.print(table)


def print_journey(journey: dict[str, Any], console: Console) -> None:
    console.print(
        f"[bold]Order {escape(journey['order_id'])}[/]: {escape(journey['status'] or '?')}"
        f" ({escape(journey['source'] or 'source unknown')})"
    )
    table = Table(show_header=True)
    for column in ("at", "status", "service", "operation", "trace", "seen by"):
        table.add_column(column, overflow="fold")
    for move in journey["transitions"]:
        table.add_row(
            escape(move["at"]),
            escape(f"{move['from']} → {move['status']}"),
            escape(move["service"]),
            escape(move["operation"]),
            escape(move["trace_id"]),
            escape(", ".join(s["service"] for s in move["seen_by"]) or "-"),
        )
    console.print(table)
    for error in journey["errors"]:
        console.print(
            f"[red]error[/] {escape(error['at'])} {escape(error['service'])} "
            f"{escape(error['where'])}: {escape(error['message'])}"
            + (" (dead-lettered)" if error["dead_lettered"] else "")
        )
    finding = journey.get("finding")
    if finding:
        console.print(
            f"[bold]{finding['state']}[/] since {escape(finding['since'])} at "
            f"{escape(finding['service'])} / {escape(finding['where'])}: "
            f"{escape(finding['evidence'])}"
        )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def print_incidents(report: dict[str, Any], console: Console) -> None:
    console.print(
        f"Incidents in the last {timedelta(seconds=report['window_seconds'])}: "
        f"{report['open']} open, {report['resolved']} resolved; "
        f"MTTD {_seconds(report['mttd_seconds'])}, MTTR {_seconds(report['mttr_seconds'])}"
    )
    if not report["incidents"]:
        return
    table = Table(show_header=True)
    for column in ("id", "status", "state", "service", "where", "orders", "started", "TTD", "TTR"):
        table.add_column(column, overflow="fold")
    for i in report["incidents"]:
        table.add_row(
            str(i["id"]),
            i["status"],
            i["state"],
            escape(i["service"]),
            escape(i["where"]),
            str(i["orders"]),
            escape(i["started_at"]),
            _seconds(i["time_to_detect_seconds"]),
            _seconds(i["time_to_resolve_seconds"]),
        )
    console.print(table)


def dump(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)
