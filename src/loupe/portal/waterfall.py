"""One waterfall for a whole order: each of its traces a band, in time order, with the span
links between them drawn as arcs. No trace viewer stitches linked traces today (Jaeger UI
issues #662 and #1468); this is loupe's own view across them.

Pure layout: spans in, positions out. Each band has its own time scale (an order's traces are
milliseconds long but minutes or days apart), and the gap before it is written between bands.
Rows have a fixed height, so arcs are placed here and the page needs no script to draw them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from loupe.portal.jaeger_api import Span, Trace

ROW_HEIGHT = 24
BAND_HEADER = 30
BAND_GAP = 26
MAX_ROWS_PER_BAND = 150


@dataclass(frozen=True)
class Row:
    span: Span
    depth: int
    left: float  # percent of the band's width
    width: float
    top: int  # pixels from the waterfall's top

    @property
    def middle(self) -> int:
        return self.top + ROW_HEIGHT // 2


@dataclass
class Band:
    index: int
    trace: Trace
    top: int
    gap_before_us: int | None
    rows: list[Row] = field(default_factory=list)
    hidden: int = 0  # spans left out past MAX_ROWS_PER_BAND

    @property
    def root(self) -> Span:
        return self.rows[0].span

    @property
    def duration_us(self) -> int:
        return self.trace.end_us - self.trace.start_us

    @property
    def started_at(self) -> datetime:
        return datetime.fromtimestamp(self.trace.start_us / 1_000_000, UTC)

    @property
    def errors(self) -> int:
        return sum(1 for s in self.trace.spans if s.error)

    @property
    def height(self) -> int:
        return BAND_HEADER + ROW_HEIGHT * len(self.rows)


@dataclass(frozen=True)
class Arc:
    """A span link from the row at `source_y` (the earlier step) to the one at `target_y`."""

    source_y: int
    target_y: int
    lane: int  # how far left of the rows the arc bends, so arcs that cross stay apart
    target_span_id: str


@dataclass
class Waterfall:
    bands: list[Band]
    arcs: list[Arc]
    height: int

    @property
    def spans(self) -> int:
        return sum(len(b.trace.spans) for b in self.bands)


def _ordered(trace: Trace) -> list[tuple[Span, int]]:
    """Spans depth-first from their roots, children by start time; a span whose parent is
    missing (not yet arrived, or dropped) is shown as a root rather than hidden."""
    ids = {s.span_id for s in trace.spans}
    children: dict[str | None, list[Span]] = {}
    for span in trace.spans:
        parent = span.parent_id if span.parent_id in ids else None
        children.setdefault(parent, []).append(span)
    ordered: list[tuple[Span, int]] = []
    stack = [(s, 0) for s in reversed(children.get(None, []))]
    while stack:
        span, depth = stack.pop()
        ordered.append((span, depth))
        stack.extend((c, depth + 1) for c in reversed(children.get(span.span_id, [])))
    return ordered


def build(traces: list[Trace]) -> Waterfall:
    bands: list[Band] = []
    where: dict[tuple[str, str], Row] = {}
    top = 0
    previous_end: int | None = None
    for index, trace in enumerate(sorted((t for t in traces if t.spans), key=lambda t: t.start_us)):
        if bands:
            top += BAND_GAP
        gap = trace.start_us - previous_end if previous_end is not None else None
        band = Band(index, trace, top, gap)
        duration = max(trace.end_us - trace.start_us, 1)
        y = top + BAND_HEADER
        ordered = _ordered(trace)
        for span, depth in ordered[:MAX_ROWS_PER_BAND]:
            left = 100.0 * (span.start_us - trace.start_us) / duration
            width = max(100.0 * span.duration_us / duration, 0.3)
            row = Row(span, depth, round(left, 3), round(min(width, 100.0 - left), 3), y)
            band.rows.append(row)
            where[(span.trace_id, span.span_id)] = row
            y += ROW_HEIGHT
        band.hidden = len(ordered) - len(band.rows)
        bands.append(band)
        top += band.height
        previous_end = max(previous_end or trace.end_us, trace.end_us)

    arcs = []
    for band in bands:
        for row in band.rows:
            for link in row.span.links:
                source = where.get(link)
                if source is not None and source.span.trace_id != row.span.trace_id:
                    arcs.append(Arc(source.middle, row.middle, len(arcs) % 4, link[1]))
    return Waterfall(bands, arcs, top)
