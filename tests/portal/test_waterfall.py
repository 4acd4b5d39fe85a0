"""The stitched waterfall's layout and the MTTR chart's bars: pure code, spans and incidents
in, positions out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from loupe.monitor.models import Incident
from loupe.portal import charts, waterfall
from loupe.portal.jaeger_api import parse_trace
from tests.support.console_fakes import Span as FakeSpan
from tests.support.console_fakes import incident, jaeger_trace

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _trace(trace_id: str, at: datetime, **links: tuple[str, str]) -> waterfall.Trace:
    ms = timedelta(milliseconds=1)
    spans = [
        FakeSpan("shop-api", "root", at, 100, "a" * 16, links=list(links.values())),
        FakeSpan("shop-api", "child-late", at + 50 * ms, 10, "c" * 16, "a" * 16),
        FakeSpan("shop-api", "child-early", at + 10 * ms, 10, "b" * 16, "a" * 16),
        FakeSpan("mes-api", "grandchild", at + 12 * ms, 5, "d" * 16, "b" * 16),
        # Its parent never arrived: shown as a root, not hidden.
        FakeSpan("crm-api", "orphan", at + 60 * ms, 40, "e" * 16, "f" * 16),
    ]
    return parse_trace(jaeger_trace(trace_id, spans))


def test_spans_are_laid_out_depth_first_with_their_parents() -> None:
    built = waterfall.build([_trace("1" * 32, T0)])
    (band,) = built.bands
    assert [(r.span.name, r.depth) for r in band.rows] == [
        ("root", 0),
        ("child-early", 1),
        ("grandchild", 2),
        ("child-late", 1),
        ("orphan", 0),
    ]
    root, early = band.rows[0], band.rows[1]
    assert (root.left, root.width) == (0.0, 100.0)
    assert (early.left, early.width) == (10.0, 10.0)
    assert [r.top for r in band.rows] == [
        waterfall.BAND_HEADER + n * waterfall.ROW_HEIGHT for n in range(5)
    ]
    assert band.errors == 0 and band.gap_before_us is None
    assert built.height == band.height


def test_bands_in_time_order_with_the_gap_and_links_between_them_as_arcs() -> None:
    first = _trace("1" * 32, T0)
    second = _trace("2" * 32, T0 + timedelta(seconds=5), link=("1" * 32, "a" * 16))
    unknown = _trace("3" * 32, T0 + timedelta(seconds=9), link=("9" * 32, "a" * 16))
    built = waterfall.build([unknown, second, first])
    assert [b.trace.trace_id for b in built.bands] == ["1" * 32, "2" * 32, "3" * 32]
    assert built.bands[1].gap_before_us == 5_000_000 - 100_000
    assert built.bands[1].top == built.bands[0].height + waterfall.BAND_GAP
    # The link to a trace the page shows is an arc from its span to the linking one; the link
    # to a trace it does not show has nothing to point at.
    (arc,) = built.arcs
    assert arc.source_y == built.bands[0].rows[0].middle
    assert arc.target_y == built.bands[1].rows[0].middle


def test_a_huge_trace_is_cut_and_says_how_many_spans_are_left_out() -> None:
    many = [FakeSpan("shop-api", "root", T0, 1000, "0" * 16)] + [
        FakeSpan("shop-api", f"s{n}", T0 + timedelta(milliseconds=n), 1, f"{n + 1:016x}", "0" * 16)
        for n in range(waterfall.MAX_ROWS_PER_BAND + 20)
    ]
    (band,) = waterfall.build([parse_trace(jaeger_trace("4" * 32, many))]).bands
    assert len(band.rows) == waterfall.MAX_ROWS_PER_BAND
    assert band.hidden == 21


def test_mttr_chart_has_one_bar_per_period_its_median_with_a_mark_at_its_mean() -> None:
    now = T0
    # (hours ago it started, seconds to resolve): the first three resolved within one hour,
    # one of them after 50 min.
    timed = [(5.0, 60.0), (5.01, 120.0), (5.8, 3000.0), (1.0, 30.0), (30.0, 10.0)]
    resolved = [
        Incident.model_validate(incident(n, now - timedelta(hours=h), resolved_after=ttr))
        for n, (h, ttr) in enumerate(timed)
    ]
    still_open = Incident.model_validate(incident(9, now - timedelta(minutes=5)))
    chart = charts.mttr_chart([*resolved, still_open], timedelta(hours=24), now, buckets=24)
    assert chart.resolved == 4, "the one resolved before the window and the open one are out"
    slow, quick = sorted(chart.bars, key=lambda b: b.x)
    # The axis reaches the slow period's mean, (60 + 120 + 3000) / 3 s; its bar is its median.
    assert chart.top_seconds == 1060.0 and slow.mean_y == 0.0
    assert slow.height == round(chart.height * 120 / 1060, 2)
    assert "3 resolved" in slow.title and "median 2 min, mean 18 min" in slow.title
    assert quick.height == round(chart.height * 30 / 1060, 2)
    assert quick.mean_y == quick.y, "one incident: its median is its mean"
