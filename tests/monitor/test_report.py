"""`loupe stuck`, `loupe incidents` and `loupe journey` as people read them: the columns chosen
for the width (one row per line, nothing folded, the evidence last), the times and durations
in words, and the console links added to the JSON and to webhook alerts."""

from __future__ import annotations

import io
import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from loupe import cli
from loupe.monitor import detection, report, rows
from loupe.monitor.models import (
    AlertEvent,
    Durations,
    Finding,
    Incident,
    IncidentList,
    Journey,
)
from loupe.monitor.report import (
    Column,
    ago,
    choose,
    clip,
    duration,
    open_hint,
    short_id,
    stdout_console,
    utc,
    window,
)

NOW = datetime(2026, 11, 24, 10, 20, 0, tzinfo=UTC)
BASE = "https://loupe.example.com"
WIDTHS = (80, 120, 200)


def at(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


_FINDING_IDS = itertools.count(1)


def finding(
    order_id: str | None,
    state: str,
    status: str | None,
    seconds_ago: float,
    service: str,
    where: str,
    evidence: str,
    incident_id: int,
) -> dict[str, Any]:
    """A finding as the API and `loupe stuck --json` show it."""
    return {
        "id": next(_FINDING_IDS),
        "order_id": order_id,
        "state": state,
        "status": status,
        "since": at(seconds_ago),
        "deadline": at(seconds_ago - 30),
        "service": service,
        "where": where,
        "trace_id": f"{incident_id:032x}",
        "evidence": evidence,
        "last_step": None,
        "detected_at": at(seconds_ago - 31),
        "incident_id": incident_id,
        "cleared_at": None,
        "cleared_reason": None,
    }


FINDINGS = [
    finding(
        "5c7248a5-8c54-46c5-a75c-da138afe577b",
        "stuck",
        "SUBMITTED",
        298,
        "mes-api",
        "queue mes.order-submitted",
        "no move from SUBMITTED for 4 min 58 s (SLO 30 s); last step by shop-api (POST /orders);"
        " queue mes.order-submitted: 4 ready, 8 unacknowledged, 1 consumer(s)",
        3,
    ),
    finding(
        "9e1f03c2-77aa-4b1e-9a55-0c2d8d1e4f10",
        "stuck",
        "PRICE_CALCULATED",
        3900,
        "crm-api",
        "seller approval (POST /orders/{order_id}/approve)",
        "no move from PRICE_CALCULATED for 1 h 5 min (SLO 30 s); waiting for seller approval",
        4,
    ),
    finding(
        "c0ffee00-1234-4abc-8def-000000000042",
        "broken",
        "FAILED",
        41,
        "mes-api",
        "queue mes.order-submitted",
        "FAILED: model file is not a valid STL",
        5,
    ),
    finding(
        None,
        "broken",
        None,
        7,
        "crm-api",
        "queue crm.order-status",
        "dead-lettered: message body is not JSON",
        6,
    ),
]


def incident(
    id_: int,
    state: str,
    service: str,
    where: str,
    seconds_ago: float,
    orders: int,
    resolved_after: float | None = None,
    acknowledged_by: str | None = None,
) -> dict[str, Any]:
    """An incident as the API shows it."""
    return {
        "id": id_,
        "state": state,
        "service": service,
        "where": where,
        "status": "open" if resolved_after is None else "resolved",
        "started_at": at(seconds_ago),
        "detected_at": at(seconds_ago - 31),
        "resolved_at": None if resolved_after is None else at(seconds_ago - resolved_after),
        "orders": orders,
        "time_to_detect_seconds": 31.2,
        "detection_delay_seconds": 0.2,
        "time_to_resolve_seconds": resolved_after,
        "acknowledged_by": acknowledged_by,
        "acknowledged_at": None,
        "dismissed": False,
    }


INCIDENTS = {
    "window_seconds": 7 * 86400,
    "open": 3,
    "resolved": 1,
    # One incident found late (a forged test order) pulls the mean far from the median.
    "mttd_seconds": 181.4,
    "mttr_seconds": 443.0,
    "time_to_detect": {"count": 4, "median_seconds": 31.0, "mean_seconds": 181.4},
    "time_to_resolve": {"count": 1, "median_seconds": 443.0, "mean_seconds": 443.0},
    "incidents": [
        incident(6, "broken", "crm-api", "queue crm.order-status", 7, 1),
        incident(
            4,
            "stuck",
            "crm-api",
            "seller approval (POST /orders/{order_id}/approve)",
            3900,
            12,
            acknowledged_by="devops@example.com",
        ),
        incident(3, "stuck", "mes-api", "queue mes.order-submitted", 298, 2),
        incident(2, "stuck", "mes-api", "queue mes.order-submitted", 90000, 7, 443.0),
    ],
}


def move(status: str, from_: str, seconds_ago: float, service: str, operation: str) -> Any:
    return {
        "status": status,
        "from": from_,
        "at": at(seconds_ago),
        "service": service,
        "operation": operation,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "linked": [],
        "seen_by": [{"service": "crm-api", "at": at(seconds_ago - 1), "trace_id": "4bf9"}],
    }


JOURNEY = {
    "order_id": FINDINGS[0]["order_id"],
    "status": "SUBMITTED",
    "source": "shop",
    "transitions": [
        move("SUBMITTED", "NEW", 400, "shop-api", "POST /orders"),
        move("PRICE_CALCULATED", "SUBMITTED", 390, "mes-api", "mes.order-submitted process"),
    ],
    "errors": [
        {
            "at": at(395),
            "service": "mes-api",
            "where": "queue mes.order-submitted",
            "message": "ConnectionError: the object store did not answer while fetching the model",
            "dead_lettered": False,
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "span_id": "00f067aa0ba902b8",
        }
    ],
    "finding": FINDINGS[0],
}


def rendered(width: int, print_: Any, *args: Any, **kwargs: Any) -> list[str]:
    """The lines `print_` writes to a console `width` cells wide."""
    console = Console(width=width, file=io.StringIO(), color_system=None)
    print_(*args, console, **kwargs)
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined]


def linked_findings(console_url: str = BASE) -> list[dict[str, Any]]:
    """FINDINGS as `loupe stuck --json` prints them."""
    found = [Finding.model_validate(f) for f in FINDINGS]
    return list(report.findings_json(console_url, found)["findings"])


def linked_incidents(console_url: str = BASE) -> dict[str, Any]:
    """INCIDENTS as `loupe incidents --json` prints them."""
    return report.incidents_json(console_url, IncidentList.model_validate(INCIDENTS))


def findings_lines(width: int) -> list[str]:
    return rendered(width, report.print_findings, linked_findings(), now=NOW)


def incidents_lines(width: int) -> list[str]:
    return rendered(width, report.print_incidents, linked_incidents(), now=NOW)


def journey_lines(width: int) -> list[str]:
    return rendered(width, report.print_journey, JOURNEY, now=NOW, console_url=BASE)


# -- times and ids in words ------------------------------------------------------------------


def test_times_are_relative_to_now_in_their_largest_unit() -> None:
    assert ago(at(0.4), NOW) == "just now"
    assert ago(at(41), NOW) == "41 s ago"
    assert ago(at(4 * 60 + 59), NOW) == "4 min ago"
    assert ago(at(3 * 3600 + 1800), NOW) == "3 h ago"
    assert ago(at(47 * 3600), NOW) == "47 h ago"
    assert ago(at(3 * 86400 + 5), NOW) == "3 d ago"
    # A clock a little ahead of ours is not "-2 s ago".
    assert ago(at(-2), NOW) == "just now"
    assert ago(None, NOW) == "-"
    assert utc("2026-11-24T10:15:02.118Z") == "2026-11-24 10:15:02"
    assert utc("2026-11-24T11:15:02+01:00") == "2026-11-24 10:15:02"


def test_durations_and_windows_in_words() -> None:
    assert [duration(s) for s in (None, 0.6, 59.94, 60, 443, 3600, 5 * 3600 + 125, 2 * 86400)] == [
        "-",
        "0.6 s",
        "59.9 s",
        "1 min 0 s",
        "7 min 23 s",
        "1 h 0 min",
        "5 h 2 min",
        "2 d 0 h",
    ]
    assert [window(s) for s in (7 * 86400, 86400, 36 * 3600, 3600, 5400, 600)] == [
        "7 days",
        "1 day",
        "36 hours",
        "1 hour",
        "1.5 hours",
        "10 min",
    ]


def test_short_ids_and_clipped_text() -> None:
    assert short_id("5c7248a5-8c54-46c5-a75c-da138afe577b") == "5c7248a5"
    assert short_id(None) == "(none)"
    assert clip("queue mes.order-submitted", 20) == "queue mes.order-sub…"
    assert clip("queue crm", 20) == "queue crm"
    assert clip("anything", 0) == ""


# -- choosing the columns --------------------------------------------------------------------

COLUMNS = [
    Column("id", lambda r: r["id"]),
    Column("wide", lambda r: "w" * 30, drop=1),
    Column("name", lambda r: r["name"], short=2, short_text=lambda r: r["name"][:4]),
    Column("rest", lambda r: r["rest"]),
]
ROWS = [{"id": "1", "name": "abcdefghij", "rest": "x" * 50}]


@pytest.mark.parametrize(
    ("width", "headers", "widths", "step"),
    [
        # Everything fits: the last column gets all it needs.
        (2 + 2 + 30 + 2 + 10 + 2 + 50, ("id", "wide", "name", "rest"), (2, 30, 10, 50), 0),
        # The last column shrinks down to LAST_MIN (24) before anything is dropped.
        (2 + 2 + 30 + 2 + 10 + 2 + 24, ("id", "wide", "name", "rest"), (2, 30, 10, 24), 0),
        # Step 1: the wide column goes; the last column takes what is left.
        (2 + 2 + 30 + 2 + 10 + 2 + 23, ("id", "name", "rest"), (2, 10, 50), 1),
        (2 + 2 + 10 + 2 + 24, ("id", "name", "rest"), (2, 10, 24), 1),
        # Step 2: the name is shortened.
        (2 + 2 + 10 + 2 + 23, ("id", "name", "rest"), (2, 4, 29), 2),
        # Narrower than the narrowest layout: the widest columns give up cells.
        (20, ("id", "name", "rest"), (2, 4, 10), 2),
    ],
)
def test_steps_are_applied_in_order_until_the_last_column_has_room(
    width: int, headers: tuple[str, ...], widths: tuple[int, ...], step: int
) -> None:
    layout = choose(COLUMNS, ROWS, width)
    assert (layout.headers, layout.widths, layout.step) == (headers, widths, step)
    assert layout.total <= width


def test_on_wide_screens_the_last_column_keeps_a_quarter_of_the_width() -> None:
    columns = [COLUMNS[0], Column("wide", lambda r: "w" * 160, drop=1), *COLUMNS[2:]]
    rows = [{"id": "1", "name": "abcdefghij", "rest": "x" * 200}]
    # 2 + 160 + 10 + gaps 6 = 178 cells before the last column.
    assert choose(columns, rows, 240).widths == (2, 160, 10, 240 - 178)
    # At 210, 32 cells would be left: more than LAST_MIN, less than a quarter (52).
    assert choose(columns, rows, 210).headers == ("id", "name", "rest")


# -- the reports at 80, 120 and 200 columns --------------------------------------------------


@pytest.mark.parametrize("width", WIDTHS)
def test_findings_fit_one_per_line_with_whole_ids_and_the_evidence_last(width: int) -> None:
    lines = findings_lines(width)
    assert all(len(line) <= width for line in lines), lines
    title, header, *rows, hint = lines
    assert title == "4 order(s) stuck or broken"
    assert header.split()[-1] == "evidence"
    assert len(rows) == len(FINDINGS)
    evidence_at = header.index("evidence")
    for line, f in zip(rows, FINDINGS, strict=True):
        # The id, whole or its first 8 characters, at the start of its own row.
        shown = line.split()[0]
        assert shown in (f["order_id"] or "(none)", short_id(f["order_id"]))
        # The evidence is the last cell: all of it, or its start and "…".
        evidence = line[evidence_at:].rstrip()
        assert evidence == f["evidence"] or (
            evidence.endswith("…") and f["evidence"].startswith(evidence[:-1])
        )
    assert hint.startswith(f"open: {BASE}/orders/{FINDINGS[0]['order_id']}")


def columns(lines: list[str]) -> list[str]:
    """A table's column names, read off its header as the table sets them apart (two spaces
    or more), so that a name of two words is one column."""
    return re.split(r" {2,}", lines[1].strip())


# Each table's columns in their order when all are shown; a width drops some of them.
FINDING_COLUMNS = (
    "order",
    "state",
    "status",
    "since",
    "since (UTC)",
    "service",
    "where",
    "trace",
    "link",
    "evidence",
)
INCIDENT_COLUMNS = (
    "id",
    "status",
    "state",
    "started",
    "started (UTC)",
    "TTD",
    "TTR",
    "orders",
    "service",
    "acknowledged by",
    "link",
    "where",
)


@pytest.mark.parametrize(
    ("width", "dropped"),
    [
        (80, {"status", "since (UTC)", "service", "trace", "link"}),
        (120, {"since (UTC)", "trace", "link"}),
        (200, {"trace", "link"}),
        (260, {"link"}),
        (330, set()),
    ],
)
def test_findings_columns_by_width(width: int, dropped: set[str]) -> None:
    assert columns(findings_lines(width)) == [c for c in FINDING_COLUMNS if c not in dropped]


def test_findings_ids_are_short_when_narrow_whole_when_wide() -> None:
    # Relative times always, UTC when wide.
    assert findings_lines(120)[2].startswith("5c7248a5  stuck   SUBMITTED         4 min ago  ")
    assert findings_lines(200)[2].startswith(
        "5c7248a5-8c54-46c5-a75c-da138afe577b  stuck   SUBMITTED         4 min ago  "
        "2026-11-24 10:15:02  mes-api"
    )


def test_columns_are_dropped_in_one_order_as_the_width_shrinks() -> None:
    """A column dropped at one width never comes back at a narrower one."""
    linked = linked_findings()
    previous: set[str] | None = None
    for width in range(400, 39, -1):
        lines = findings_lines(width)
        shown = set(choose(report.finding_columns(NOW), linked, width).headers)
        table = lines if "link" in shown else lines[:-1]
        assert len(table) == 2 + len(FINDINGS), width
        assert all(len(line) <= width for line in table), (width, lines)
        # Ids are never cut: the first 8 characters at least.
        assert [line.split()[0] for line in table[2:]] in (
            [f["order_id"] or "(none)" for f in FINDINGS],
            [short_id(f["order_id"]) for f in FINDINGS],
        ), width
        # The link under the table is whole, however narrow: a cut link does not open.
        assert table == lines or lines[-1].startswith(f"open: {linked[0]['console_url']}")
        assert "evidence" in shown and "order" in shown
        if previous is not None:
            assert shown <= previous, width
        previous = shown


def test_the_link_column_when_wide_a_hint_line_when_not() -> None:
    wide = findings_lines(330)
    assert len(wide) == 2 + len(FINDINGS)  # no hint: every row has its link
    for line, f in zip(wide[2:], linked_findings(), strict=True):
        assert f["console_url"] in line
    assert findings_lines(120)[-1] == (
        f"open: {BASE}/orders/{FINDINGS[0]['order_id']}  (first row; every row's link: --json)"
    )
    assert findings_lines(80)[-1] == f"open: {BASE}/orders/{FINDINGS[0]['order_id']}"
    assert open_hint(None, 80) is None


def test_figures_name_their_count_and_say_when_there_is_none() -> None:
    assert report.figures("TTR", Durations.of([]).model_dump()) == "TTR: no incident"
    one = Durations.of([90.0]).model_dump()
    assert report.figures("TTR", one) == "TTR: median 1 min 30 s, mean 1 min 30 s, over 1 incident"


@pytest.mark.parametrize("width", WIDTHS)
def test_incidents_fit_one_per_line(width: int) -> None:
    lines = incidents_lines(width)
    assert all(len(line) <= width for line in lines), lines
    summary, detect, resolve, header, *rows = lines
    assert summary == "Incidents (last 7 days): 3 open, 1 resolved"
    assert [detect, resolve] == [
        clip("Time to detect (TTD): median 31.0 s, mean 3 min 1 s, over 4 incidents", width),
        clip("Time to resolve (TTR): median 7 min 23 s, mean 7 min 23 s, over 1 incident", width),
    ]
    assert header.split()[-1] == "where"
    link_shown = "link" in header.split()
    assert len(rows) == len(INCIDENTS["incidents"]) + (0 if link_shown else 1)
    for line, i in zip(rows, INCIDENTS["incidents"], strict=False):
        assert line.split()[:3] == [str(i["id"]), i["status"], i["state"]]
        assert (f"{BASE}/incidents/{i['id']}" in line) == link_shown
    if not link_shown:
        assert rows[-1].startswith(f"open: {BASE}/incidents/6")


@pytest.mark.parametrize(
    ("width", "dropped"),
    [
        (80, {"started (UTC)", "TTD", "TTR", "acknowledged by", "link"}),
        (120, {"started (UTC)", "acknowledged by", "link"}),
        (200, set()),
    ],
)
def test_incidents_columns_by_width(width: int, dropped: set[str]) -> None:
    # Under the summary and its two lines of figures.
    assert columns(incidents_lines(width)[2:]) == [c for c in INCIDENT_COLUMNS if c not in dropped]


@pytest.mark.parametrize("width", WIDTHS)
def test_a_journey_fits_one_move_per_line(width: int) -> None:
    lines = journey_lines(width)
    assert all(len(line) <= width for line in lines), lines
    title, header, first, second, error, found, link = lines
    assert title == f"Order {JOURNEY['order_id']}: SUBMITTED (shop)"
    assert header.split()[-1] == "operation"
    assert first.startswith("6 min ago  ") and first.rstrip().endswith("POST /orders")
    assert "SUBMITTED → PRICE_CALCULATED" in second
    assert ("4bf92f3577b34da6a3ce929d0e0e4736" in first) == (width >= 200)
    assert error.startswith("error 6 min ago mes-api queue mes.order-submitted: ConnectionError")
    assert found.startswith("stuck since 4 min ago at mes-api / queue mes.order-submitted: ")
    assert link == f"open: {BASE}/orders/{JOURNEY['order_id']}"
    # Lines under the table are cut, not folded.
    full = "error 6 min ago mes-api queue mes.order-submitted: " + JOURNEY["errors"][0]["message"]
    assert error == full if width >= len(full) else error == full[: width - 1] + "…"


@pytest.mark.parametrize("width", WIDTHS)
def test_a_journey_shows_the_statuses_it_passed_unseen_in_their_place(width: int) -> None:
    # PRICE_CALCULATED's and MANUFACTURING_APPROVED's spans never arrived.
    transitions = [
        move("SUBMITTED", "NEW", 400, "shop-api", "POST /orders"),
        move("MANUFACTURING_STARTED", "MANUFACTURING_APPROVED", 300, "mes-api", "take order"),
    ]
    journey = Journey.model_validate(
        {**JOURNEY, "transitions": transitions, "not_seen": [], "finding": None}
    )
    journey.not_seen = rows.not_seen(journey.transitions)
    lines = rendered(width, report.print_journey, report.journey_json(journey), now=NOW)
    _, _, submitted, priced, approved, started = lines[:6]
    assert submitted.startswith("6 min ago ") and "NEW → SUBMITTED" in submitted
    for line, status in ((priced, "PRICE_CALCULATED"), (approved, "MANUFACTURING_APPROVED")):
        assert line.startswith("not seen ") and f"? → {status} " in line, line
    assert started.startswith("5 min ago ") and "MANUFACTURING_APPROVED → M" in started
    assert all(len(line) <= width for line in lines), lines


def test_nothing_stuck_says_so() -> None:
    assert rendered(80, report.print_findings, [], now=NOW) == ["No order is stuck or broken."]


# -- where the CLI prints ---------------------------------------------------------------------


def test_piped_output_is_120_wide_or_columns_wide_without_colour() -> None:
    piped = stdout_console({}, io.StringIO())
    assert (piped.width, piped.color_system, piped.is_terminal) == (120, None, False)
    assert stdout_console({"COLUMNS": "80"}, io.StringIO()).width == 80
    assert stdout_console({"COLUMNS": "wide"}, io.StringIO()).width == 120


# -- console links ---------------------------------------------------------------------------


def test_findings_and_incidents_get_their_console_url() -> None:
    found = linked_findings(BASE + "/")
    assert [f["console_url"] for f in found] == [
        f"{BASE}/orders/5c7248a5-8c54-46c5-a75c-da138afe577b",
        f"{BASE}/orders/9e1f03c2-77aa-4b1e-9a55-0c2d8d1e4f10",
        f"{BASE}/orders/c0ffee00-1234-4abc-8def-000000000042",
        # A dead letter that names no order: its incident.
        f"{BASE}/incidents/6",
    ]
    # Nothing else changes: the API's fields stay as they are.
    assert [{k: v for k, v in f.items() if k != "console_url"} for f in found] == FINDINGS
    linked = linked_incidents()
    assert [i["console_url"] for i in linked["incidents"]] == [
        f"{BASE}/incidents/{n}" for n in (6, 4, 3, 2)
    ]
    assert {k: v for k, v in linked.items() if k != "incidents"} == {
        k: v for k, v in INCIDENTS.items() if k != "incidents"
    }
    assert "console_url" not in INCIDENTS["incidents"][0]  # not changed in place


def test_a_webhook_alert_links_to_its_incident() -> None:
    opened = INCIDENTS["incidents"][0]
    alert = detection.webhook_body(AlertEvent.OPENED, Incident.model_validate(opened), BASE)
    assert alert.model_dump(mode="json") == {
        "event": "incident.opened",
        "incident": {**opened, "console_url": f"{BASE}/incidents/6"},
    }


@pytest.fixture
def stored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads FINDINGS and INCIDENTS instead of the monitor's database."""
    from loupe.monitor import store

    async def findings(pool: Any, state: str | None = None) -> list[Finding]:
        return [Finding.model_validate(f) for f in FINDINGS if state in (None, f["state"])]

    async def incidents(pool: Any, which: str, window: timedelta) -> IncidentList:
        return IncidentList.model_validate(INCIDENTS)

    def read(settings: Any, action: Any) -> Any:
        import asyncio

        return asyncio.run(action(None))

    monkeypatch.setattr(store, "findings", findings)
    monkeypatch.setattr(store, "incidents", incidents)
    monkeypatch.setattr(report, "read", read)


def test_the_cli_adds_console_urls_to_its_json(stored: None) -> None:
    runner = CliRunner()
    env = {"LOUPE_CONSOLE_URL": "https://console.example.org/"}
    done = runner.invoke(cli.app, ["stuck", "--json", "--state", "broken"], env=env)
    assert done.exit_code == 0, done.output
    answer = json.loads(done.stdout)
    assert answer["count"] == 2
    assert [f["console_url"] for f in answer["findings"]] == [
        "https://console.example.org/orders/c0ffee00-1234-4abc-8def-000000000042",
        "https://console.example.org/incidents/6",
    ]
    done = runner.invoke(cli.app, ["incidents", "--json"], env=env)
    assert [i["console_url"] for i in json.loads(done.stdout)["incidents"]] == [
        f"https://console.example.org/incidents/{n}" for n in (6, 4, 3, 2)
    ]


@pytest.mark.parametrize("columns", [None, "80"])
def test_the_cli_piped_prints_a_table_as_wide_as_columns_or_120(
    stored: None, columns: str | None
) -> None:
    env = {"LOUPE_CONSOLE_URL": None, "COLUMNS": columns}
    done = CliRunner().invoke(cli.app, ["stuck"], env=env)
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    width = int(columns or 120)
    assert all(len(line) <= width for line in lines)
    assert len(lines) == 2 + len(FINDINGS) + 1
    assert "\x1b[" not in done.stdout  # no colour
    assert lines[-1].startswith("open: http://127.0.0.1:4180/orders/5c7248a5-")
    done = CliRunner().invoke(cli.app, ["incidents"], env=env)
    assert done.exit_code == 0, done.output
    assert all(len(line) <= width for line in done.stdout.splitlines())
