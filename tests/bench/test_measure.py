"""The benchmarks' numbers (loupe.bench.measure): percentiles, spread, Prometheus text, CPU by
group. (The measurements themselves are `make bench`.)"""

from __future__ import annotations

import os

import pytest

from loupe.bench.measure import cpu_by_group, cpu_used, metric_sum, percentile, spread


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
