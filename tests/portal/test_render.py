"""The console's shared filters and page rendering (loupe.portal.render): times in UTC,
durations as people say them, and templates that escape what they show and refuse what they
were not given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from jinja2 import UndefinedError

from loupe.portal.render import ago, iso, microseconds, page, parse_time, seconds, short, utc

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BERLIN = timezone(timedelta(hours=1))
VIEWER = SimpleNamespace(csrf_token="t", name="dev@example.com", can_act=False)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (None, "-"),
        (0.85, "850 ms"),
        (9.46, "9.5 s"),
        (42, "42 s"),
        (119, "119 s"),
        (120, "2 min"),
        (7199, "120 min"),
        (7200, "2.0 h"),
        (48 * 3600 - 1, "48.0 h"),
        (48 * 3600, "2.0 d"),
    ],
)
def test_durations_in_the_largest_unit_that_reads_well(value: float | None, said: str) -> None:
    assert seconds(value) == said


def test_times_are_shown_in_utc_whatever_zone_they_come_in() -> None:
    evening = datetime(2026, 12, 1, 13, 0, tzinfo=BERLIN)
    assert utc(evening) == "2026-12-01 12:00:00 UTC"
    assert iso(evening) == "2026-12-01T12:00:00Z"
    assert (utc(None), iso(None)) == ("-", "")


@pytest.mark.parametrize(
    ("offset", "said"),
    [(0.5, "just now"), (-0.5, "just now"), (90, "90 s ago"), (-5, "in 5.0 s"), (None, "-")],
)
def test_ago_says_past_and_future(offset: float | None, said: str) -> None:
    value = None if offset is None else T0 - timedelta(seconds=offset)
    assert ago(value, now=T0) == said


def test_header_values_parse_or_are_nothing() -> None:
    assert parse_time("2026-12-01T12:00:00+00:00") == T0
    assert [parse_time(v) for v in (None, "", "yesterday")] == [None, None, None]
    assert (microseconds(250_000), short("0123456789abcdef"), short(None)) == (
        "250 ms",
        "01234567",
        "",
    )


def test_a_page_escapes_what_it_shows() -> None:
    response = page("unavailable.html", 503, viewer=VIEWER, active="now", problem="<b>x</b> & y")
    assert response.status_code == 503
    html = bytes(response.body).decode()
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in html and "<b>x</b>" not in html


def test_a_page_missing_a_value_fails_instead_of_showing_a_blank() -> None:
    with pytest.raises(UndefinedError, match="problem"):
        page("unavailable.html", viewer=VIEWER, active="now")
