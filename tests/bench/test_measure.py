"""The benchmarks' pure parts: percentiles, Prometheus text, the report's sections, the
synthetic spans and the rendering of results. (The measurements themselves are `make bench`.)"""

from __future__ import annotations

import os
import tomllib
from collections import Counter
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from loupe.bench import pipeline
from loupe.bench.__main__ import parse
from loupe.bench.journeys import (
    JOURNEY,
    SUBMISSION,
    WARM_UP,
    Journeys,
    spans_per_order,
    steady_flow,
    submissions,
)
from loupe.bench.measure import cpu_by_group, cpu_used, metric_sum, percentile, spread
from loupe.bench.report import HEADER, markers, replace_section, write_section
from loupe.bench.slo import slo_toml
from loupe.monitor.settings import DEMO_SLO_FILE
from loupe.monitor.slo import Slo
from loupe.monitor.spans import decode
from loupe.orders.lifecycle import HAPPY_PATH

# ---------------------------------------------------------------------------------- numbers


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1 … 100, shuffled order must not matter
    assert percentile(reversed(values), 50) == 51.0  # index round(0.5 * 99) = 50
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([0.3], 99) == 0.3
    with pytest.raises(ValueError):
        percentile([], 50)


def test_spread_is_half_the_range_over_the_mean() -> None:
    assert spread([90.0, 110.0, 100.0]) == pytest.approx(0.1)
    assert spread([5.0]) == 0.0


METRICS = """\
# HELP otelcol_receiver_accepted_spans_total Number of spans accepted.
# TYPE otelcol_receiver_accepted_spans_total counter
otelcol_receiver_accepted_spans_total{receiver="otlp",transport="http"} 1200
otelcol_receiver_accepted_spans_total{receiver="otlp",transport="grpc"} 30
otelcol_exporter_sent_spans_total{exporter="jaeger_storage_exporter",x="a b"} 1100
otelcol_exporter_sent_spans_total{exporter="otlphttp/monitor"} 3.5e2
loupe_monitor_detection_latency_seconds_bucket{le="2.0"} 299.0
loupe_monitor_detection_latency_seconds_bucket{le="+Inf"} 300.0
loupe_monitor_detection_latency_seconds_count 300.0
"""


def test_metric_sum_adds_the_samples_whose_labels_match() -> None:
    assert metric_sum(METRICS, "otelcol_receiver_accepted_spans_total") == 1230
    assert metric_sum(METRICS, "otelcol_receiver_accepted_spans_total", {"transport": "http"}) == (
        1200
    )
    storage = {"exporter": "jaeger_storage_exporter"}
    assert metric_sum(METRICS, "otelcol_exporter_sent_spans_total", storage) == 1100
    assert metric_sum(METRICS, "otelcol_exporter_sent_spans_total") == 1450
    name = "loupe_monitor_detection_latency_seconds"
    assert metric_sum(METRICS, f"{name}_bucket", {"le": "2.0"}) == 299
    assert metric_sum(METRICS, f"{name}_count") == 300
    # A name that is a prefix of another is not that other.
    assert metric_sum(METRICS, name) == 0
    assert metric_sum("", name) == 0


# ---------------------------------------------------------------------------------- report file


def test_cpu_by_group_counts_each_group_this_process_and_the_machine() -> None:
    groups = {"this": [os.getpid()], "gone": [4_194_305]}  # above Linux's largest pid
    before = cpu_by_group(groups)
    started = os.times()
    while os.times().user - started.user < 0.2:
        sum(range(10_000))
    used = cpu_used(before, cpu_by_group(groups))
    assert set(used) == {"this", "gone", "client", "machine"}
    assert used["gone"] == 0
    assert used["this"] >= 0.19 and used["client"] >= 0.19
    # /proc/stat counts whole clock ticks per core (10 ms each), and a busy machine's cores
    # tick apart: the machine's total may trail this process's by a few ticks, never more.
    assert used["machine"] >= used["client"] - 0.05


def test_a_new_report_gets_the_header_and_the_section() -> None:
    text = replace_section("", "monitor", "## Monitor\n\nfigures\n")
    begin, end = markers("monitor")
    assert text.startswith(HEADER)
    assert f"{begin}\n## Monitor\n\nfigures\n{end}\n" in text


def test_each_benchmark_replaces_only_its_own_section() -> None:
    text = replace_section("", "pipeline", "## Pipeline\n\nold pipeline")
    text = replace_section(text, "monitor", "## Monitor\n\nold monitor")
    text = text.replace("## Pipeline", "Some words by hand.\n\n## Pipeline")

    text = replace_section(text, "monitor", "## Monitor\n\nnew monitor")
    assert "old monitor" not in text and "new monitor" in text
    assert "old pipeline" in text and "Some words by hand." in text
    assert text.index("## Pipeline") < text.index("## Monitor")

    again = replace_section(text, "monitor", "## Monitor\n\nnew monitor")
    assert again == text
    text = replace_section(text, "pipeline", "## Pipeline\n\nnew pipeline")
    assert "old pipeline" not in text and "new monitor" in text
    assert text.count(markers("pipeline")[0]) == 1 and text.count(markers("monitor")[1]) == 1


def test_a_section_is_added_to_a_report_written_before_sections(tmp_path: Path) -> None:
    report = tmp_path / "docs" / "benchmarks.md"
    write_section(report, "monitor", "## Monitor\n\nfirst")
    report.write_text(report.read_text() + "\nA note at the end.\n")
    write_section(report, "pipeline", "## Pipeline\n\nfigures")
    text = report.read_text()
    assert text.index("## Monitor") < text.index("A note at the end.") < text.index("## Pipeline")


def test_the_committed_report_has_both_sections() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md").read_text()
    for name in ("pipeline", "monitor"):
        begin, end = markers(name)
        assert text.count(begin) == 1 and text.count(end) == 1
        assert text.index(begin) < text.index(end)


# ---------------------------------------------------------------------------------- spans


def test_one_journey_has_the_services_proportions() -> None:
    # docs/tracing.md, counted in a real run: 95 spans, 30 naming the order, 18 moves.
    assert spans_per_order() == (95, 30, 18)
    assert len(JOURNEY) == 6
    # Every status of the happy path is reached, by the service that makes the move first.
    first_moves = {}
    for trace in JOURNEY:
        for spec in trace:
            if spec.move:
                first_moves.setdefault(spec.move[1], spec.service)
    assert list(first_moves) == [s.value for s in HAPPY_PATH]
    assert first_moves["PRICE_CALCULATED"] == "mes-api"


def test_a_submission_that_mes_never_prices_stops_at_submitted() -> None:
    moves = [spec.move for spec in SUBMISSION if spec.move]
    assert moves == [("NEW", "SUBMITTED"), ("NEW", "SUBMITTED")]
    assert {spec.service for spec in SUBMISSION} == {"shop-api", "crm-api"}
    batch, ids = submissions(Journeys(1), 3, 1_000_000_000_000)
    kept, total = decode(batch.body)
    assert total == batch.spans == 3 * len(SUBMISSION)
    assert len(kept) == batch.kept == 3 * sum(s.has_order for s in SUBMISSION)
    assert {f.order_id for f in kept} == set(ids)
    assert {f.status_to for f in kept if f.transition} == {"SUBMITTED"}


def test_the_steady_flow_is_what_the_monitor_sees_in_the_services_spans() -> None:
    orders_per_batch = 2
    batches = list(steady_flow(7, WARM_UP + 8, orders_per_batch, 10**18, 10_000_000))
    assert len(batches) == WARM_UP + 8
    # Warm-up requests fill the flow; from then on each holds every step of the journey.
    full = 95 * orders_per_batch
    assert [b.spans for b in batches[: WARM_UP + 1]][-1] == full
    assert all(b.spans < full for b in batches[:WARM_UP])
    assert {(b.spans, b.kept) for b in batches[WARM_UP:]} == {(full, 30 * orders_per_batch)}

    moves: Counter[str] = Counter()
    statuses: dict[str, list[str]] = {}
    for batch in batches:
        kept, total = decode(batch.body)
        assert (total, len(kept)) == (batch.spans, batch.kept)
        assert {f.service for f in kept} == (
            {"shop-api", "crm-api", "mes-api"} if total >= full else {f.service for f in kept}
        )
        for facts in kept:
            if facts.transition and facts.status_to:
                moves[facts.order_id or ""] += 1
                statuses.setdefault(facts.order_id or "", []).append(facts.status_to)
    # The orders that started in the first 8 requests went the whole way: 18 moves, CLOSED.
    complete = [o for o, n in moves.items() if n == 18]
    assert len(complete) == 8 * orders_per_batch
    assert all(statuses[o][-1] == "CLOSED" for o in complete)

    request = ExportTraceServiceRequest.FromString(batches[-1].body)
    services = [
        next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
        for rs in request.resource_spans
    ]
    assert sorted(services) == ["crm-api", "mes-api", "shop-api"]
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len({s.span_id for s in spans}) == len(spans)
    assert all(len(s.trace_id) == 16 and len(s.span_id) == 8 for s in spans)
    linked = [s for s in spans if s.links]
    assert linked and all(s.name.endswith(("manufacturing", "order")) for s in linked)


def test_the_same_seed_makes_the_same_spans_and_another_seed_others() -> None:
    first = [b.body for b in steady_flow(1, WARM_UP + 1, 1, 10**18, 1)]
    again = [b.body for b in steady_flow(1, WARM_UP + 1, 1, 10**18, 1)]
    other = [b.body for b in steady_flow(2, WARM_UP + 1, 1, 10**18, 1)]
    assert first == again and first[-1] != other[-1]


# ---------------------------------------------------------------------------------- SLO files


def test_a_benchmark_slo_file_is_the_demo_files_steps_with_its_own_deadlines() -> None:
    demo = Slo.load(DEMO_SLO_FILE)
    slo = Slo.parse(tomllib.loads(slo_toml("1s", "90s", {"SHIPPED": "2h"})))
    assert slo.error_grace.total_seconds() == 90
    assert list(slo.steps) == list(demo.steps)
    for status, step in slo.steps.items():
        expected = 7200 if status == "SHIPPED" else 1
        assert step.within.total_seconds() == expected
        wanted = demo.steps[status]
        assert (step.service, step.queue, step.then) == (wanted.service, wanted.queue, wanted.then)


# ---------------------------------------------------------------------------------- rendering


def test_the_pipeline_section_keeps_its_shape() -> None:
    rounds = [
        pipeline.Round(mode.name, 10, 2.0 + n, 1.0, {"step a": [0.1, 0.2], "step b": [0.3]})
        for n, mode in enumerate(pipeline.MODES * 2)
    ]
    text = pipeline.report(rounds, 10, 4)
    assert text.startswith("## What tracing costs the order pipeline")
    assert "| " + " | ".join(pipeline.HEADERS) + " |" in text
    assert "| step a | 150.0 | 150.0 | 150.0 |" in text
    assert "2 rounds per mode, 10 orders a round, 4 in flight" in text


def test_the_command_line_runs_both_or_one() -> None:
    both = parse([])
    assert both.only is None and both.orders == 40 and both.jaeger_rounds == 3
    only = parse(["--only", "monitor", "--ingest-clients", "2", "--jaeger-rounds", "1"])
    assert (only.only, only.ingest_clients, only.jaeger_rounds) == ("monitor", "2", 1)
    with pytest.raises(SystemExit):
        parse(["--only", "everything"])
