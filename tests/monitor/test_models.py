"""The monitor's answers as JSON (loupe.monitor.models): the field names and values the API,
the console, `loupe ... --json` and the webhooks rely on, and what a wrong answer is refused
for. How the CLI and webhooks add console links is in tests/monitor/test_report.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from loupe.monitor.models import (
    Alert,
    AlertEvent,
    Durations,
    Finding,
    FindingKind,
    Incident,
    LinkedFinding,
    LinkedIncident,
    Move,
)
from tests.support.console_fakes import NOW, finding, incident

MOVE: dict[str, Any] = {
    "status": "PRICE_CALCULATED",
    "from": "SUBMITTED",
    "at": "2026-12-01T12:00:00Z",
    "service": "mes-api",
    "operation": "process loupe.orders",
    "trace_id": "1" * 32,
    "span_id": "2" * 16,
    "linked": [{"trace_id": "3" * 32, "span_id": "4" * 16}],
    "seen_by": [],
}


def test_a_move_reads_and_writes_from_as_its_json_name() -> None:
    # `from` is a Python keyword; the JSON keeps it (FastAPI answers by alias).
    move = Move.model_validate(MOVE)
    assert move.from_ == "SUBMITTED"
    assert move.at == datetime(2026, 12, 1, 12, tzinfo=UTC)
    dumped = move.model_dump(mode="json", by_alias=True)
    assert dumped["from"] == "SUBMITTED" and "from_" not in dumped
    assert (dumped["waited_seconds"], dumped["slo_seconds"], dumped["slo_met"]) == (None,) * 3
    # Built in code by the Python name too (populate_by_name), the same JSON comes out.
    by_name = Move.model_validate({k: v for k, v in MOVE.items() if k != "from"} | {"from_": "X"})
    assert by_name.model_dump(by_alias=True)["from"] == "X"


def test_a_finding_round_trips_with_its_kind_as_a_plain_string() -> None:
    sent = finding("o-1", NOW, state="broken")
    parsed = Finding.model_validate(sent)
    assert parsed.state is FindingKind.BROKEN
    again = parsed.model_dump(mode="json")
    assert again["state"] == "broken"
    assert Finding.model_validate(again) == parsed


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"state": "lost"}, "state"),
        ({"since": "yesterday"}, "since"),
        ({"incident_id": "first"}, "incident_id"),
        ({"where": None}, "where"),
    ],
)
def test_a_finding_that_breaks_the_contract_is_refused_naming_the_field(
    change: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        Finding.model_validate({**finding("o-1", NOW), **change})
    assert [error["loc"] for error in refused.value.errors()] == [(field,)]


def test_an_incidents_status_is_open_or_resolved() -> None:
    assert Incident.model_validate(incident(1, NOW)).status == "open"
    with pytest.raises(ValidationError, match="status"):
        Incident.model_validate(incident(1, NOW, status="closed"))


def test_a_console_link_quotes_the_order_id() -> None:
    # An order id is the client's text: a slash or a space must not change the path.
    odd = LinkedFinding.of(Finding.model_validate(finding("a/b c", NOW)), "https://x.org/")
    assert odd.console_url == "https://x.org/orders/a%2Fb%20c"


def test_a_webhook_alert_is_the_event_name_and_the_linked_incident() -> None:
    held = Incident.model_validate(incident(5, NOW, resolved_after=30.0))
    alert = Alert(event=AlertEvent.RESOLVED, incident=LinkedIncident.of(held, "https://x.org"))
    body = alert.model_dump(mode="json")
    assert list(body) == ["event", "incident"]
    assert body["event"] == "incident.resolved"
    assert body["incident"]["status"] == "resolved"
    assert body["incident"]["console_url"] == "https://x.org/incidents/5"
    assert Alert.model_validate_json(alert.model_dump_json()) == alert


def test_durations_give_the_median_beside_the_mean_so_an_outlier_shows() -> None:
    # Four incidents found in about 30 s and a forged test order found after 600 s.
    usual = [28.0, 31.0, 30.0, 33.0]
    figures = Durations.of([*usual, 600.0])
    assert figures.count == 5
    assert figures.median_seconds == 31.0, "the usual case"
    assert figures.mean_seconds == pytest.approx((sum(usual) + 600.0) / 5)
    assert Durations.of(usual).median_seconds == 30.5, "an even count: the middle two's mean"
    assert Durations.of([]) == Durations(count=0, median_seconds=None, mean_seconds=None)
