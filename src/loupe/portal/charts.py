"""Chart geometry for the incidents page, drawn as inline SVG by the template: the time to
resolve of incidents over the chosen window, one bar per time bucket: its median, with a
mark at its mean (one slow incident moves the mark, not the bar)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from loupe.monitor.models import Durations, Incident
from loupe.portal.render import seconds

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
"""The windows people choose between on the incidents page, by the name in the URL."""
DEFAULT_WINDOW = "24h"


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    mean_y: float  # where the mark of the mean is
    title: str


@dataclass(frozen=True)
class MttrChart:
    width: int
    height: int
    bars: list[Bar]
    top_seconds: float  # the value at the top of the y axis
    start: datetime
    end: datetime
    resolved: int


def mttr_chart(
    incidents: list[Incident],
    window: timedelta,
    now: datetime,
    *,
    buckets: int = 24,
    width: int = 640,
    height: int = 140,
) -> MttrChart:
    """Time to resolve of the incidents resolved in each of `buckets` slices of the window
    ending `now`: the median's bar and the mean's mark; an empty slice has no bar."""
    start = now - window
    size = window / buckets
    totals: list[list[float]] = [[] for _ in range(buckets)]
    for incident in incidents:
        if incident.resolved_at is None or incident.time_to_resolve_seconds is None:
            continue
        if not start <= incident.resolved_at <= now:
            continue
        slot = min(int((incident.resolved_at - start) / size), buckets - 1)
        totals[slot].append(incident.time_to_resolve_seconds)
    # (slot, count, median, mean) of each slice with a resolution
    timed = [
        (slot, f.count, f.median_seconds, f.mean_seconds)
        for slot, f in enumerate(Durations.of(t) for t in totals)
        if f.median_seconds is not None and f.mean_seconds is not None
    ]
    # A median can be above its mean, too: the axis reaches the higher of the two.
    top = max((max(median, mean) for _, _, median, mean in timed), default=0.0) or 1.0
    slot_width = width / buckets
    bars = []
    for slot, count, median, mean in timed:
        bar_height = max(height * median / top, 2.0)
        began = start + size * slot
        bars.append(
            Bar(
                x=round(slot * slot_width + 1, 2),
                y=round(height - bar_height, 2),
                width=round(slot_width - 2, 2),
                height=round(bar_height, 2),
                mean_y=round(height - height * mean / top, 2),
                title=(
                    f"{count} resolved from {began:%Y-%m-%d %H:%M} UTC: time to resolve"
                    f" median {seconds(median)}, mean {seconds(mean)}"
                ),
            )
        )
    return MttrChart(width, height, bars, top, start, now, sum(len(t) for t in totals))
