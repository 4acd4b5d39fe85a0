"""The benchmarks' numbers (loupe.bench.measure): percentiles, spread, ratios and their
intervals, Prometheus text, CPU by group. (The measurements themselves are `make bench`.)"""

from __future__ import annotations

import math
import os
import random
import statistics

import pytest

from loupe.bench.measure import (
    CLIENT_CPU,
    MACHINE_CPU,
    cpu_by_group,
    cpu_used,
    metric_sum,
    paired_ratio,
    percentile,
    spread,
    t_quantile,
)


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


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    # Student's t quantiles as printed in any statistics table.
    [
        (0.975, 1, 12.706),
        (0.975, 4, 2.776),
        (0.975, 9, 2.262),
        (0.975, 30, 2.042),
        (0.995, 5, 4.032),
    ],
)
def test_t_quantile_matches_the_tables(p: float, df: int, expected: float) -> None:
    assert t_quantile(p, df) == pytest.approx(expected, abs=0.001)


def test_t_quantile_tends_to_the_normal_one() -> None:
    normal = statistics.NormalDist().inv_cdf(0.975)
    assert t_quantile(0.975, 5000) == pytest.approx(normal, abs=0.001)
    with pytest.raises(ValueError):
        t_quantile(0.4, 3)


def test_a_paired_ratio_is_the_geometric_mean_with_a_t_interval() -> None:
    # Ratios 1.2, 1.25 and 1.3 from pairs whose own levels differ (the machine drifting).
    pairs = [(100.0, 120.0), (80.0, 100.0), (50.0, 65.0)]
    found = paired_ratio(pairs)
    logs = [math.log(1.2), math.log(1.25), math.log(1.3)]
    half = 4.303 * statistics.stdev(logs) / math.sqrt(3)  # t(0.975, 2)
    assert found.value == pytest.approx(math.exp(statistics.fmean(logs)))
    assert found.low == pytest.approx(math.exp(statistics.fmean(logs) - half), rel=1e-3)
    assert found.high == pytest.approx(math.exp(statistics.fmean(logs) + half), rel=1e-3)
    assert found.pairs == 3 and found.resolved
    # The same ratio every time: no doubt at all.
    exact = paired_ratio([(10.0, 13.0), (20.0, 26.0)])
    assert exact.low == pytest.approx(1.3) and exact.high == pytest.approx(1.3)


def test_a_paired_ratio_without_an_effect_is_not_resolved() -> None:
    rng = random.Random(7)
    pairs = [(a, a * rng.uniform(0.9, 1.1)) for a in (rng.uniform(50, 150) for _ in range(8))]
    found = paired_ratio(pairs)
    assert found.low < 1 < found.high and not found.resolved


def test_pairing_cancels_drift_that_pooling_would_not() -> None:
    # Each pair's b is exactly 1.1 times its a, while the level drifts by a factor of 3.
    pairs = [(level, level * 1.1) for level in (10.0, 20.0, 30.0)]
    found = paired_ratio(pairs)
    assert found.value == pytest.approx(1.1) and found.bounds == pytest.approx((1.1, 1.1))


def test_one_pair_has_a_ratio_and_no_interval() -> None:
    found = paired_ratio([(4.0, 5.0)])
    assert found.value == pytest.approx(1.25)
    assert math.isnan(found.low) and found.bounds == (1.25, 1.25)
    with pytest.raises(ValueError):
        paired_ratio([])
    with pytest.raises(ValueError):
        paired_ratio([(0.0, 1.0)])


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
    assert set(used) == {"this", "gone", CLIENT_CPU, MACHINE_CPU}
    assert used["gone"] == 0
    assert used["this"] >= 0.19 and used[CLIENT_CPU] >= 0.19
    # /proc/stat counts whole clock ticks per core (10 ms each), and a busy machine's cores
    # tick apart: the machine's total may trail this process's by a few ticks, never more.
    assert used[MACHINE_CPU] >= used[CLIENT_CPU] - 0.05
