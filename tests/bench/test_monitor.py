"""The monitor benchmark's pure parts (loupe.bench.monitor): its SLO file, the yardstick, the
summaries of each part and the report's section, rendered from fixed figures. (The
measurements themselves are `make bench ONLY=monitor`.)"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from loupe.bench import monitor
from loupe.bench.journeys import WARM_UP, steady_flow
from loupe.bench.measure import spread
from loupe.bench.monitor.detection import Detection
from loupe.bench.monitor.harness import slo_toml, yardstick
from loupe.bench.monitor.ingest import IngestRound, ingest_summary
from loupe.bench.monitor.jaeger import JAEGER_MODES, JaegerRound, jaeger_summary
from loupe.bench.monitor.report import Results, report
from loupe.bench.report import markers, replace_section
from loupe.monitor.settings import DEMO_SLO_FILE
from loupe.monitor.slo import Slo

# The section rendered from `_results()` by the report() of the single-module benchmark this
# package was split from: the same figures must make the same text.
SECTION = Path(__file__).parent / "data" / "bench_monitor_section.md"

# ---------------------------------------------------------------------------------- harness


def test_the_yardstick_times_the_monitors_decoder() -> None:
    batches = list(steady_flow(3, WARM_UP + 2, 1, 10**18, 1))
    assert 0 < yardstick(batches) < 10_000


def test_the_benchmark_slo_files_are_valid() -> None:
    short = Slo.parse(tomllib.loads(slo_toml("2s")))
    assert short.step("SUBMITTED").within.total_seconds() == 2  # type: ignore[union-attr]
    assert short.step("SHIPPED").within.total_seconds() == 86400  # type: ignore[union-attr]
    assert len(short.steps) == 6
    assert short.error_grace.total_seconds() == 3600
    assert Slo.parse(tomllib.loads(slo_toml())).step("SUBMITTED").within.days == 1  # type: ignore[union-attr]


def test_the_benchmark_slo_file_has_the_demo_files_steps() -> None:
    demo = Slo.load(DEMO_SLO_FILE)
    bench = Slo.parse(tomllib.loads(slo_toml("2s")))
    assert list(bench.steps) == list(demo.steps)
    for status, step in bench.steps.items():
        expected = demo.steps[status]
        assert (step.service, step.queue, step.then) == (
            expected.service,
            expected.queue,
            expected.then,
        )


# ---------------------------------------------------------------------------------- figures


def _ingest(clients: int, seconds: float) -> IngestRound:
    return IngestRound(
        clients=clients,
        spans=38_000,
        kept=12_000,
        seconds=seconds,
        latencies=[0.01 * (i + 1) for i in range(100)],
        received_reported=38_000,
        kept_reported=12_000,
        monitor_cpu=0.7 * seconds,
        postgres_cpu=0.2 * seconds,
        client_cpu=0.1 * seconds,
        machine_cpu=1.1 * seconds,
    )


def _round(mode: str, seconds: float) -> JaegerRound:
    return JaegerRound(
        mode=mode,
        spans=60_000,
        kept=19_000,
        posts_seconds=seconds - 0.1,
        accepted_seconds=seconds - 0.1,
        stored_seconds=seconds,
        monitor_seconds=seconds + 1.0 if mode == "with monitor" else None,
        jaeger_cpu=seconds * 0.9,
        monitor_cpu=seconds * 0.5,
        machine_cpu=seconds * 1.8,
        client_cpu=seconds * 0.2,
        postgres_cpu=seconds * 0.1,
        window_seconds=seconds,
    )


def _results() -> Results:
    return Results(
        ingest=[_ingest(1, 2.0), _ingest(4, 1.9), _ingest(1, 2.2), _ingest(4, 2.1)],
        ingest_batches=100,
        request_bytes=160_000,
        detections=[
            Detection("quiet", 300, 15.0, 2.0, [i / 600 for i in range(300)], 0, 300, 300),
            Detection("busy", 300, 15.0, 2.0, [2.5] * 299, 9000.0, 299, 0),
        ],
        rounds=[
            _round(mode, seconds)
            for mode, seconds in zip(JAEGER_MODES * 2, (2.0, 2.5, 2.2, 2.4), strict=True)
        ],
        jaeger_batches=150,
        jaeger_clients=4,
        orders_per_batch=4,
        tick_seconds=0.5,
        started=datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
        seconds=200.0,
        yardsticks=[12.0, 13.5, 18.0],
        machine="AMD EPYC, 2 cores, 24 GiB, Linux 6.18, Python 3.11.7",
        cores=2,
    )


def test_ingest_is_summarised_per_number_of_clients() -> None:
    one, four = ingest_summary(_results().ingest)
    assert (one.clients, four.clients) == (1, 4)
    assert one.spans_per_second == pytest.approx(76_000 / 4.2)
    assert one.kept_per_second == pytest.approx(24_000 / 4.2)
    assert one.monitor_cores == pytest.approx(0.7)
    assert one.other_cores == pytest.approx(0.1)
    assert (one.p50, one.p99) == (pytest.approx(0.51), pytest.approx(0.99))
    assert one.spread == pytest.approx(spread([19_000, 38_000 / 2.2]))


def test_detection_meets_the_aim_only_with_every_order_found_in_time() -> None:
    quiet, busy = _results().detections
    assert quiet.meets_aim and quiet.missing == 0
    assert not busy.meets_aim and busy.missing == 1
    fast_but_one_missing = Detection("x", 3, 1.0, 2.0, [0.1, 0.2])
    assert not fast_but_one_missing.meets_aim


def test_jaeger_rounds_compare_the_modes() -> None:
    summary = jaeger_summary(_results().rounds)
    alone, attached = summary["alone"], summary["with monitor"]
    assert alone["rate"] == pytest.approx(120_000 / 4.2)
    assert attached["rate"] == pytest.approx(120_000 / 4.9)
    assert attached["monitor_seconds"] == pytest.approx(3.45)
    assert alone["cpu_per_1000"] == pytest.approx(4.2 * 0.9 / 120_000 * 1e6)
    assert alone["machine_cores"] == pytest.approx(1.8)
    assert attached["client_cores"] == pytest.approx(0.2)
    assert attached["other_cores"] == pytest.approx(1.8 - 0.9 - 0.5 - 0.1 - 0.2)
    round_ = _round("alone", 2.0)
    assert round_.seconds == 2.0 and round_.rate == 30_000


# ---------------------------------------------------------------------------------- report


def test_the_monitor_section_says_what_was_measured() -> None:
    text = report(_results())
    assert text.startswith("## The order-flow monitor")
    assert "- Run: 2026-11-24 12:00 UTC" in text
    assert "95 spans, 30 with `order.id` (18 of them transitions)" in text
    assert "| 1 client | 4 clients |" in text
    assert "taking turns between 1 and 4 concurrent clients" in text
    assert "| quiet | 0 | 300 | 300 | 250 | 493 | 498 | **yes** |" in text
    assert "| busy | 9,000 | 300 | 299 | 2500 | 2500 | 2500 | **no** |" in text
    ratio = (120_000 / 4.9) / (120_000 / 4.2)
    assert f"Jaeger stores **{ratio * 100:.1f}%**" in text
    assert "alone 30,000, with monitor 24,000, alone 27,273, with monitor 25,000" in text
    assert "±" in text
    assert "took 12.0 to 18.0 µs per span (median 13.5)" in text and "up to 50%" in text


def test_the_monitor_section_is_the_same_text_from_the_same_figures() -> None:
    text = report(_results())
    assert text == SECTION.read_text(encoding="utf-8")
    assert "- Machine: AMD EPYC, 2 cores, 24 GiB, Linux 6.18, Python 3.11.7; PostgreSQL" in text
    assert "(1.80 and 1.80 of 2 cores)" in text
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == [
        "## The order-flow monitor: ingest, detection latency, and what it costs Jaeger",
        "### Ingest",
        "### Detection latency after an SLO deadline",
        "### Jaeger's ingest with and without the monitor attached",
    ]
    # Every table has a rule under its header and rows of the header's width.
    lines = text.splitlines()
    for n, line in enumerate(lines):
        if line.startswith("|---"):
            width = lines[n - 1].count("|")
            assert line.count("|") == width
            for row in lines[n + 1 :]:
                if not row.startswith("|"):
                    break
                assert row.count("|") == width, row


def test_a_part_that_did_not_run_has_no_subsection() -> None:
    results = _results()
    results.ingest, results.detections, results.rounds = [], [], results.rounds[:1]
    text = report(results)
    assert "###" not in text and "|" not in text
    assert text.startswith("## The order-flow monitor")
    assert text.endswith("ratios between settings measured in alternating rounds move less.\n")
    results.yardsticks = []
    assert report(results).endswith("Times are wall-clock, from the first timed request.\n")


def test_the_section_goes_between_the_monitors_markers() -> None:
    document = replace_section("", "pipeline", "## Pipeline\n\nfigures")
    document = replace_section(document, monitor.SECTION, report(_results()))
    begin, end = markers("monitor")
    inside = document[document.index(begin) + len(begin) : document.index(end)]
    assert inside.strip() == SECTION.read_text(encoding="utf-8").strip()
    assert "## Pipeline\n\nfigures" in document
