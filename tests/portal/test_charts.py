"""The incidents page's MTTR chart (loupe.portal.charts) at its edges: an empty window, a tiny
median, an incident resolved right at either end. The common case is in
tests/portal/test_waterfall.py."""

from __future__ import annotations

from datetime import timedelta

from loupe.monitor.models import Incident
from loupe.portal.charts import DEFAULT_WINDOW, WINDOWS, mttr_chart
from tests.support.console_fakes import NOW, incident

DAY = timedelta(hours=24)


def resolved(at: timedelta, after: float) -> Incident:
    """An incident resolved `at` before NOW, `after` seconds after it started."""
    started = NOW - at - timedelta(seconds=after)
    return Incident.model_validate(incident(1, started, resolved_after=after))


def test_an_empty_window_has_no_bars_and_a_usable_axis() -> None:
    chart = mttr_chart([], DAY, NOW)
    assert (chart.bars, chart.resolved) == ([], 0)
    assert chart.top_seconds == 1.0, "the template divides by it"
    assert (chart.start, chart.end) == (NOW - DAY, NOW)


def test_incidents_resolved_at_either_end_of_the_window_count() -> None:
    chart = mttr_chart([resolved(DAY, 60), resolved(timedelta(0), 60)], DAY, NOW, buckets=4)
    assert chart.resolved == 2
    slot_width = chart.width / 4
    # The first slice and the last: one resolved at NOW is not pushed past the end.
    assert [bar.x for bar in chart.bars] == [1.0, 3 * slot_width + 1]
    assert all(bar.width == slot_width - 2 for bar in chart.bars)


def test_a_tiny_time_beside_a_long_one_still_shows() -> None:
    chart = mttr_chart([resolved(timedelta(hours=1), 0.5), resolved(DAY / 2, 7200)], DAY, NOW)
    heights = sorted(bar.height for bar in chart.bars)
    assert heights == [2.0, chart.height]
    assert all(bar.y == chart.height - bar.height for bar in chart.bars), "bars stand on the axis"
    assert "1 resolved from " in chart.bars[0].title
    assert " UTC: time to resolve median " in chart.bars[0].title


def test_the_default_window_is_one_people_can_choose() -> None:
    assert DEFAULT_WINDOW in WINDOWS
    assert sorted(WINDOWS.values()) == list(WINDOWS.values()), (
        "the page links them in this order, shortest first"
    )
