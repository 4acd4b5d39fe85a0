"""The pipeline benchmark's figures and rendering (loupe.bench.pipeline): each traced mode
against tracing off, cycle by cycle, with its interval and verdict."""

from __future__ import annotations

import math

import pytest

from loupe.bench import pipeline
from loupe.bench.measure import CLIENT_CPU, MACHINE_CPU, Ratio
from loupe.bench.pipeline import CPU, MODES, OFF, P99, THROUGHPUT, Round

SINK_MODE = next(m for m in MODES if m.receiver is pipeline.Receiver.SINK)
JAEGER_MODE = MODES[1]


def _round(mode: str, cycle: int, seconds: float, cpu: float, steps: list[float]) -> Round:
    used = {
        pipeline.SERVICES_CPU: cpu,
        pipeline.JAEGER_CPU: 0.5,
        pipeline.SINK_CPU: 0.02,
        pipeline.WAITING_CPU: 0.01,
        CLIENT_CPU: 0.3,
        MACHINE_CPU: 4.0,
    }
    return Round(mode, cycle, 10, seconds, used, {"step a": steps, "step b": [0.3]}, 40, 2, 51200)


def _rounds(slowdown: dict[str, list[float]]) -> list[Round]:
    """Cycles of one round per mode; a mode's round in cycle c takes slowdown[mode][c] times
    the off round's time and CPU, and the machine's speed drifts from cycle to cycle."""
    rounds = []
    for cycle, drift in enumerate((1.0, 1.5, 0.8)):
        for mode in MODES:
            factor = 1.0 if mode is OFF else slowdown[mode.name][cycle]
            latencies = [0.1 * drift * factor * (n + 1) for n in range(10)]
            rounds.append(_round(mode.name, cycle, 2.0 * drift * factor, drift * factor, latencies))
    return rounds


def test_a_ratio_pairs_each_mode_with_tracing_off_of_the_same_cycle() -> None:
    rounds = _rounds({m.name: [1.2, 1.2, 1.2] for m in MODES[1:]})
    found = pipeline.ratio(rounds, SINK_MODE, THROUGHPUT)
    # Drift moves both rounds of a cycle alike: the ratio is exact and its interval empty.
    assert found.value == pytest.approx(1 / 1.2)
    assert found.bounds == pytest.approx((1 / 1.2, 1 / 1.2))
    assert pipeline.ratio(rounds, SINK_MODE, CPU).value == pytest.approx(1.2)
    assert pipeline.ratio(rounds, SINK_MODE, P99).value == pytest.approx(1.2)
    assert found.pairs == 3


def test_a_cycle_without_its_off_round_is_left_out() -> None:
    rounds = _rounds({m.name: [1.2, 2.0, 1.2] for m in MODES[1:]})
    rounds = [r for r in rounds if not (r.mode == OFF.name and r.cycle == 1)]
    found = pipeline.ratio(rounds, JAEGER_MODE, CPU)
    assert found.pairs == 2 and found.value == pytest.approx(1.2)


UNDECIDED = "undecided (the interval straddles the aim)"


@pytest.mark.parametrize(
    ("figure", "low", "high", "verdict"),
    [
        (CPU, 1.02, 1.08, "aim ≤ 1.10: met"),
        (CPU, 1.12, 1.30, "aim ≤ 1.10: **not met**"),
        (CPU, 1.05, 1.15, f"aim ≤ 1.10: {UNDECIDED}"),
        # Throughput's aim is a floor.
        (THROUGHPUT, 0.96, 0.99, "aim ≥ 0.95: met"),
        (THROUGHPUT, 0.70, 0.90, "aim ≥ 0.95: **not met**"),
        (THROUGHPUT, 0.90, 0.99, f"aim ≥ 0.95: {UNDECIDED}"),
    ],
)
def test_an_aim_is_met_only_by_the_whole_interval(
    figure: pipeline.Figure, low: float, high: float, verdict: str
) -> None:
    assert figure.verdict(Ratio(math.sqrt(low * high), low, high, 5)) == verdict


def test_without_an_interval_the_value_decides() -> None:
    assert CPU.verdict(Ratio(1.05, math.nan, math.nan, 1)) == "aim ≤ 1.10: met"
    assert pipeline.P50.verdict(Ratio(3.0, 2.0, 4.0, 5)) == ""


def test_the_pipeline_section_keeps_its_shape() -> None:
    slowdown = {
        JAEGER_MODE.name: [1.30, 1.40, 1.35],
        SINK_MODE.name: [1.20, 1.25, 1.22],
        MODES[3].name: [1.02, 0.97, 1.01],
    }
    text = pipeline.report(_rounds(slowdown), 10, 4)
    assert text.startswith("## What tracing costs the order pipeline")
    assert "| " + " | ".join(pipeline.HEADERS) + " |" in text
    assert "3 cycles of one round per mode, 10 orders a round, 4 in flight" in text
    cpu_row = next(line for line in text.splitlines() if line.startswith("| services' CPU"))
    # The pooled figures: off used 1.0, 1.5 and 0.8 s for 10 orders each.
    assert cpu_row.startswith(f"| services' CPU per order (ms) | {3.3 / 30 * 1000:.1f} |")
    sink_cpu = pipeline.ratio_text(pipeline.ratio(_rounds(slowdown), SINK_MODE, CPU))
    assert f"- **{SINK_MODE.name}**: " in text
    assert f"CPU per order {sink_cpu} of off's, aim ≤ 1.10: **not met**" in text
    # Sampling 10% is not judged against the aims, and its CPU ratio holds 1.
    assert f"- **{MODES[3].name}**" not in text
    assert "| step a | " in text
    assert "PostgreSQL, answering the driver's status queries" in text
    assert "4.0 queries and 1.00 ms of PostgreSQL's CPU per order" in text


def test_every_other_cycle_runs_the_modes_in_reverse_so_drift_weighs_on_all_alike() -> None:
    planned = pipeline.schedule(3)
    assert [cycle for cycle, _ in planned] == [0] * 4 + [1] * 4 + [2] * 4
    names = [mode.name for _, mode in planned]
    forward = [mode.name for mode in pipeline.MODES]
    assert names == forward + forward[::-1] + forward
    # Over two cycles every mode's mean position is the same: a linear drift cancels.
    positions = {name: [i for i, n in enumerate(names[:8]) if n == name] for name in forward}
    assert {sum(p) for p in positions.values()} == {7}
