"""`loupe stuck`, `loupe journey`, `loupe incidents`: the monitor's answers on the host.

They read the monitor's database directly. That is their authorisation: PostgreSQL lets in
only OS users it has a role for (peer authentication over the Unix socket, as set up by
scripts/setup-infra.sh), so whoever can run them could read the database anyway. Away from
the host, use the API behind the gateway, which checks the role.

The tables fit the width they are printed in, one row per line, like `kubectl get`: as the
width shrinks, columns are dropped or shortened in a stated order (`drop` and `short` steps,
1 first), and the last column (the evidence, or where an incident is) takes what is left and
ends in "…" when it is longer. Nothing is folded onto a second line.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import asyncpg
from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.table import Table
from rich.text import Text

from loupe.monitor.models import (
    Finding,
    FindingKind,
    IncidentList,
    IncidentState,
    Journey,
    LinkedFinding,
    LinkedFindingList,
    LinkedIncident,
    LinkedIncidentList,
)
from loupe.monitor.settings import MonitorSettings
from loupe.portal.links import absolute, order_path

Row = dict[str, Any]

PIPE_WIDTH = 120
"""The width when stdout is not a terminal and COLUMNS is not set."""
GAP = 2
"""Spaces between two columns."""
LAST_MIN = 24
"""The last column gets at least this many cells, and a quarter of the width, before more
columns are dropped or shortened."""
SHORT_ID = 8
"""An order id's first characters, shown when the full id does not fit."""


class ReportError(Exception):
    """The monitor's database cannot be read; the text says why and what to do."""


async def _with_pool(
    settings: MonitorSettings, read: Callable[[asyncpg.Pool], Awaitable[Any]]
) -> Any:
    try:
        pool = await asyncpg.create_pool(
            settings.base.postgres_dsn_of(settings.database, settings.base.reader_role),
            min_size=1,
            max_size=2,
        )
    except asyncpg.InvalidCatalogNameError:
        raise ReportError(
            f"the monitor's database {settings.database} does not exist yet: run `make setup`"
            " (or `uv run loupe provision`) first"
        ) from None
    except (OSError, asyncpg.PostgresError) as exc:
        raise ReportError(
            f"cannot open the monitor's database {settings.database}: {exc}. Is PostgreSQL "
            "running, and has `make setup` made the read-only role and its password in"
            f" {settings.base.secrets_dir}? (`make setup` does both)"
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


async def orders_starting_with(pool: asyncpg.Pool, prefix: str, limit: int = 5) -> list[str]:
    """The ids of the orders the monitor knows that start with `prefix` (a short id)."""
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT order_id FROM orders WHERE starts_with(order_id, $1) ORDER BY order_id"
            " LIMIT $2",
            prefix,
            limit,
        )
    return [r["order_id"] for r in rows]


# -- the JSON (`--json`), which the tables are printed from too --------------------------------

# The CLI's journey is the stored one: the API's judgement of each move against the SLO (which
# the CLI does not load) is left out.
_UNJUDGED = {"transitions": {"__all__": {"waited_seconds", "slo_seconds", "slo_met"}}}


def findings_json(console_url: str, found: Sequence[Finding]) -> Row:
    """`loupe stuck --json`: the API's findings, each with `console_url`, its page in the
    console (LinkedFinding)."""
    linked = [LinkedFinding.of(f, console_url) for f in found]
    return LinkedFindingList(count=len(linked), findings=linked).model_dump(mode="json")


def incidents_json(console_url: str, report: IncidentList) -> Row:
    """`loupe incidents --json`: the API's report, each incident with `console_url`."""
    linked = [LinkedIncident.of(i, console_url) for i in report.incidents]
    return LinkedIncidentList(**{**dict(report), "incidents": linked}).model_dump(mode="json")


def journey_json(journey: Journey) -> Row:
    """`loupe journey --json`: the order's moves, errors and open finding."""
    return journey.model_dump(mode="json", by_alias=True, exclude=_UNJUDGED)


# -- text of the cells -----------------------------------------------------------------------


def ago(when: str | None, now: datetime) -> str:
    """`when` (ISO 8601) relative to `now`, in its largest unit: "41 s ago", "4 min ago"."""
    if not when:
        return "-"
    seconds = int((now - datetime.fromisoformat(when)).total_seconds())
    if seconds < 1:
        return "just now"
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 48 * 3600:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


def utc(when: str | None) -> str:
    """`when` (ISO 8601) to the second in UTC: "2026-11-24 10:15:02"."""
    if not when:
        return "-"
    return datetime.fromisoformat(when).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    """A time to detect or resolve in its two largest units: "4.2 s", "3 min 5 s", "2 d 4 h"."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def window(seconds: float) -> str:
    """A report's window: "7 days", "36 hours", "90 min"."""
    hours = seconds / 3600
    if hours >= 24 and hours % 24 == 0:
        return f"{hours / 24:g} day" + ("" if hours == 24 else "s")
    if hours >= 1:
        return f"{hours:g} hour" + ("" if hours == 1 else "s")
    return f"{seconds / 60:g} min"


def short_id(order_id: str | None) -> str:
    """The order id's first SHORT_ID characters (`loupe journey` takes them too)."""
    return order_id[:SHORT_ID] if order_id else "(none)"


def clip(text: str, width: int) -> str:
    """`text` in at most `width` cells, ending in "…" when it was longer."""
    if cell_len(text) <= width:
        return text
    return set_cell_size(text, max(width - 1, 0)) + "…" if width > 0 else ""


# -- choosing the columns --------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A column of a report table.

    `text` renders a row's cell. At its `drop` step the column goes; at its `short` step it
    shows `short_text` instead. `limit` is the widest it gets (longer cells end in "…"); the
    last column has none: it takes the width that is left. A `whole` column (an id) is never
    cut, however narrow the console.
    """

    header: str
    text: Callable[[Row], str]
    limit: int | None = None
    drop: int | None = None
    short: int | None = None
    short_text: Callable[[Row], str] | None = None
    style: Callable[[Row], str] | None = None
    whole: bool = False

    def shown(self, step: int) -> bool:
        return self.drop is None or step < self.drop

    def cell(self, row: Row, step: int) -> str:
        if self.short_text is not None and self.short is not None and step >= self.short:
            return self.short_text(row)
        return self.text(row)


@dataclass(frozen=True)
class Layout:
    """The columns chosen for a width, each cell's text, and each column's width."""

    columns: tuple[Column, ...]
    widths: tuple[int, ...]
    cells: tuple[tuple[str, ...], ...]  # one tuple per row
    step: int  # the steps applied: 0 when everything fits

    @property
    def headers(self) -> tuple[str, ...]:
        return tuple(c.header for c in self.columns)

    @property
    def total(self) -> int:
        return sum(self.widths) + GAP * (len(self.widths) - 1)


def _steps(columns: Sequence[Column]) -> list[int]:
    return sorted({s for c in columns for s in (c.drop, c.short) if s is not None})


def _measure(columns: Sequence[Column], rows: Sequence[Row], step: int) -> Layout:
    shown = tuple(c for c in columns if c.shown(step))
    cells = tuple(tuple(c.cell(row, step) for c in shown) for row in rows)
    widths = []
    for index, column in enumerate(shown):
        natural = max([cell_len(column.header), *(cell_len(r[index]) for r in cells)])
        widths.append(min(natural, column.limit) if column.limit else natural)
    return Layout(shown, tuple(widths), cells, step)


def choose(columns: Sequence[Column], rows: Sequence[Row], width: int) -> Layout:
    """The widest layout that fits `width`: steps are applied in order (1 first) until the
    columns before the last one leave it LAST_MIN cells and a quarter of the width (or all it
    needs). The last column then takes what is left. Past the last step, the widest columns
    give up cells."""
    last_min = max(LAST_MIN, width // 4)
    steps = [0, *_steps(columns)]
    for step in steps:
        layout = _measure(columns, rows, step)
        before = layout.total - layout.widths[-1]
        if before + min(layout.widths[-1], last_min) <= width:
            last = min(layout.widths[-1], width - before)
            return Layout(layout.columns, (*layout.widths[:-1], last), layout.cells, step)
    # Narrower than the narrowest layout: squeeze the widest columns but ids, a cell at a time.
    widths = list(layout.widths)
    cut = [i for i, c in enumerate(layout.columns) if not c.whole]
    while sum(widths) + GAP * (len(widths) - 1) > width and cut:
        widest = max(cut, key=lambda i: widths[i])
        if widths[widest] <= 1:
            break
        widths[widest] -= 1
    return Layout(layout.columns, tuple(widths), layout.cells, layout.step)


def table(layout: Layout, rows: Sequence[Row]) -> Table:
    """`layout` as a rich Table without borders, every cell on one line."""
    grid = Table(box=None, padding=(0, GAP // 2), pad_edge=False, header_style="bold")
    for column, width in zip(layout.columns, layout.widths, strict=True):
        grid.add_column(column.header, width=width, no_wrap=True, overflow="ellipsis")
    for row, cells in zip(rows, layout.cells, strict=True):
        grid.add_row(
            *(
                Text(cell, style=column.style(row) if column.style else "")
                for column, cell in zip(layout.columns, cells, strict=True)
            )
        )
    return grid


def line(console: Console, text: str | Text) -> None:
    """One line, cut with "…" at the console's width rather than folded."""
    console.print(text, no_wrap=True, overflow="ellipsis", crop=True)


def link_line(console: Console, text: str) -> None:
    """A line ending in a link: never cut (a cut link does not open) nor folded by rich."""
    console.print(text, soft_wrap=True)


def open_hint(url: str | None, width: int) -> str | None:
    """The line printed under a table whose link column did not fit: the first row's link."""
    if not url:
        return None
    hint = f"open: {url}"
    more = f"{hint}  (first row; every row's link: --json)"
    return more if cell_len(more) <= width else hint


def stdout_console(environ: Mapping[str, str] = os.environ, file: IO[str] | None = None) -> Console:
    """A terminal's console at the terminal's width; piped, COLUMNS or PIPE_WIDTH, no colour."""
    console = Console(file=file, highlight=False)
    if console.is_terminal:
        return console
    columns = environ.get("COLUMNS", "")
    width = int(columns) if columns.isdigit() and int(columns) > 0 else PIPE_WIDTH
    return Console(file=file, width=width, highlight=False, no_color=True)


# -- the reports -----------------------------------------------------------------------------


def _state_style(row: Row) -> str:
    # An unroutable message is lost to the business until someone handles it, like a break;
    # a telemetry gap, like a wait, may turn out to be nothing.
    return "yellow" if row["state"] in (FindingKind.STUCK, FindingKind.TELEMETRY_GAP) else "red"


def _or_dash(key: str) -> Callable[[Row], str]:
    return lambda row: str(row[key]) if row.get(key) not in (None, "") else "-"


def finding_columns(now: datetime) -> list[Column]:
    """`loupe stuck`'s columns. As the width shrinks: the link goes first, then the trace id,
    the UTC time, the full order id (its first 8 characters stay), the status, the service,
    and `where` is cut to 20; the evidence is always last."""
    return [
        Column(
            "order",
            lambda f: f["order_id"] or "(none)",
            short=4,
            short_text=lambda f: short_id(f["order_id"]),
            whole=True,
        ),
        Column("state", _or_dash("state"), style=_state_style),
        Column("status", _or_dash("status"), drop=5),
        Column("since", lambda f: ago(f["since"], now)),
        Column("since (UTC)", lambda f: utc(f["since"]), drop=3),
        Column("service", _or_dash("service"), drop=6),
        Column(
            "where", _or_dash("where"), limit=28, short=7, short_text=lambda f: clip(f["where"], 20)
        ),
        Column("trace", _or_dash("trace_id"), drop=2),
        Column("link", _or_dash("console_url"), drop=1),
        Column("evidence", _or_dash("evidence")),
    ]


def _hint_if_dropped(layout: Layout, rows: Sequence[Row], console: Console) -> None:
    if rows and "link" not in layout.headers:
        hint = open_hint(rows[0].get("console_url"), console.width)
        if hint:
            link_line(console, hint)


def print_findings(found: list[Row], console: Console, now: datetime | None = None) -> None:
    if not found:
        console.print("[green]No order is stuck or broken.[/]")
        return
    layout = choose(finding_columns(now or datetime.now(UTC)), found, console.width)
    line(console, Text(f"{len(found)} order(s) stuck or broken", style="bold"))
    console.print(table(layout, found))
    _hint_if_dropped(layout, found, console)


NOT_SEEN = "not seen"
"""The `when` of a status the order passed that no span reported (Journey.not_seen)."""


def journey_rows(journey: Row) -> list[Row]:
    """The journey's moves, each status it passed unseen as a row of its own just before the
    first move seen after it (no time, service or trace: nothing reported it)."""
    rows: list[Row] = []
    for move in journey["transitions"]:
        for missing in journey.get("not_seen", ()):
            if missing["before"] == move["status"]:
                rows.append(
                    {
                        "at": None,
                        "from": "?",
                        "status": missing["status"],
                        "service": None,
                        "trace_id": None,
                        "seen_by": [],
                        "operation": "no span reported this move",
                    }
                )
        rows.append(move)
    return rows


def journey_columns(now: datetime) -> list[Column]:
    """`loupe journey`'s columns. As the width shrinks: the trace id goes first, then who
    followed each move (seen by) and the UTC time; the operation is always last."""
    return [
        Column("when", lambda m: ago(m["at"], now) if m["at"] else NOT_SEEN),
        Column("at (UTC)", lambda m: utc(m["at"]), drop=3),
        Column("move", lambda m: f"{m['from']} → {m['status']}"),
        Column("service", _or_dash("service")),
        Column("trace", _or_dash("trace_id"), drop=1),
        Column("seen by", lambda m: ", ".join(s["service"] for s in m["seen_by"]) or "-", drop=2),
        Column("operation", _or_dash("operation")),
    ]


def print_journey(
    journey: Row, console: Console, now: datetime | None = None, console_url: str | None = None
) -> None:
    now = now or datetime.now(UTC)
    line(
        console,
        Text.assemble(
            (f"Order {journey['order_id']}", "bold"),
            f": {journey['status'] or '?'} ({journey['source'] or 'source unknown'})",
        ),
    )
    moves = journey_rows(journey)
    if moves:
        console.print(table(choose(journey_columns(now), moves, console.width), moves))
    for error in journey["errors"]:
        line(
            console,
            Text.assemble(
                ("error", "red"),
                f" {ago(error['at'], now)} {error['service']} {error['where']}: "
                f"{error['message']}" + (" (dead-lettered)" if error["dead_lettered"] else ""),
            ),
        )
    finding = journey.get("finding")
    if finding:
        line(
            console,
            Text.assemble(
                (finding["state"], _state_style(finding)),
                f" since {ago(finding['since'], now)} at {finding['service']} / "
                f"{finding['where']}: {finding['evidence']}",
            ),
        )
    if console_url:
        link_line(console, f"open: {absolute(console_url, order_path(journey['order_id']))}")


def incident_columns(now: datetime) -> list[Column]:
    """`loupe incidents`' columns. As the width shrinks: the link goes first, then who
    acknowledged it, the UTC time, the time to detect, the time to resolve and the number of
    orders; where it is is always last."""
    return [
        Column("id", lambda i: str(i["id"]), whole=True),
        Column(
            "status",
            _or_dash("status"),
            style=lambda i: "red" if i["status"] == IncidentState.OPEN else "green",
        ),
        Column("state", _or_dash("state"), style=_state_style),
        Column("started", lambda i: ago(i["started_at"], now)),
        Column("started (UTC)", lambda i: utc(i["started_at"]), drop=3),
        Column("TTD", lambda i: duration(i["time_to_detect_seconds"]), drop=4),
        Column("TTR", lambda i: duration(i["time_to_resolve_seconds"]), drop=5),
        Column("orders", lambda i: str(i["orders"]), drop=6),
        Column("service", _or_dash("service")),
        Column("acknowledged by", _or_dash("acknowledged_by"), limit=24, drop=2),
        Column("link", _or_dash("console_url"), drop=1),
        Column("where", _or_dash("where")),
    ]


def figures(name: str, durations: Row) -> str:
    """A line of `durations` (a Durations), the median first: "time to detect: median 31.0 s,
    mean 2 min 10 s, over 5 incidents". A mean alone would let one outlier hide the usual
    case."""
    count = durations["count"]
    if not count:
        return f"{name}: no incident"
    return (
        f"{name}: median {duration(durations['median_seconds'])},"
        f" mean {duration(durations['mean_seconds'])},"
        f" over {count} incident{'s' if count != 1 else ''}"
    )


def print_incidents(report: Row, console: Console, now: datetime | None = None) -> None:
    line(
        console,
        f"Incidents (last {window(report['window_seconds'])}): "
        f"{report['open']} open, {report['resolved']} resolved",
    )
    line(console, figures("Time to detect (TTD)", report["time_to_detect"]))
    line(console, figures("Time to resolve (TTR)", report["time_to_resolve"]))
    found = report["incidents"]
    if not found:
        return
    layout = choose(incident_columns(now or datetime.now(UTC)), found, console.width)
    console.print(table(layout, found))
    _hint_if_dropped(layout, found, console)


def dump(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)
