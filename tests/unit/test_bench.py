"""The benchmarks' pure parts: percentiles, Prometheus text, the report's sections, the
synthetic spans and the rendering of results. (The measurements themselves are `make bench`.)"""

from __future__ import annotations

import os
import tomllib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from loupe.bench import monitor, pipeline
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
    while os.times().user - started.user < 0.05:
        sum(range(10_000))
    used = cpu_used(before, cpu_by_group(groups))
    assert set(used) == {"this", "gone", "client", "machine"}
    assert used["gone"] == 0
    assert used["this"] >= 0.04 and used["client"] >= 0.04
    assert used["machine"] >= used["client"] - 0.02


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


def test_the_yardstick_times_the_monitors_decoder() -> None:
    batches = list(steady_flow(3, WARM_UP + 2, 1, 10**18, 1))
    assert 0 < monitor.yardstick(batches) < 10_000


def test_the_same_seed_makes_the_same_spans_and_another_seed_others() -> None:
    first = [b.body for b in steady_flow(1, WARM_UP + 1, 1, 10**18, 1)]
    again = [b.body for b in steady_flow(1, WARM_UP + 1, 1, 10**18, 1)]
    other = [b.body for b in steady_flow(2, WARM_UP + 1, 1, 10**18, 1)]
    assert first == again and first[-1] != other[-1]


def test_the_benchmark_slo_files_are_valid() -> None:
    short = Slo.parse(tomllib.loads(monitor.slo_toml("2s")))
    assert short.step("SUBMITTED").within.total_seconds() == 2  # type: ignore[union-attr]
    assert short.step("SHIPPED").within.total_seconds() == 86400  # type: ignore[union-attr]
    assert len(short.steps) == 6


# ---------------------------------------------------------------------------------- rendering


def _ingest(clients: int, seconds: float) -> monitor.IngestRound:
    return monitor.IngestRound(
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


def _round(mode: str, seconds: float) -> monitor.JaegerRound:
    return monitor.JaegerRound(
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


def _results() -> monitor.Results:
    return monitor.Results(
        ingest=[_ingest(1, 2.0), _ingest(4, 1.9), _ingest(1, 2.2), _ingest(4, 2.1)],
        ingest_batches=100,
        request_bytes=160_000,
        detections=[
            monitor.Detection("quiet", 300, 15.0, 2.0, [i / 600 for i in range(300)], 0, 300, 300),
            monitor.Detection("busy", 300, 15.0, 2.0, [2.5] * 299, 9000.0, 299, 0),
        ],
        rounds=[
            _round(mode, seconds)
            for mode, seconds in zip(monitor.JAEGER_MODES * 2, (2.0, 2.5, 2.2, 2.4), strict=True)
        ],
        jaeger_batches=150,
        jaeger_clients=4,
        orders_per_batch=4,
        tick_seconds=0.5,
        started=datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
        seconds=200.0,
        yardsticks=[12.0, 13.5, 18.0],
    )


def test_ingest_is_summarised_per_number_of_clients() -> None:
    one, four = monitor.ingest_summary(_results().ingest)
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
    fast_but_one_missing = monitor.Detection("x", 3, 1.0, 2.0, [0.1, 0.2])
    assert not fast_but_one_missing.meets_aim


def test_jaeger_rounds_compare_the_modes() -> None:
    summary = monitor.jaeger_summary(_results().rounds)
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


def test_the_monitor_section_says_what_was_measured() -> None:
    text = monitor.report(_results())
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
