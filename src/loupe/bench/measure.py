"""What the benchmarks measure with: percentiles and spread, ratios of settings measured side
by side with their uncertainty, the machine they ran on, CPU time from /proc, and samples from
Prometheus text."""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank `q`th percentile (0 to 100) of `values`, which must not be empty."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def spread(values: Iterable[float]) -> float:
    """Half the range of `values`, relative to their mean: ±this around the mean holds all."""
    values = list(values)
    mean = statistics.fmean(values)
    return (max(values) - min(values)) / 2 / mean if mean else 0.0


def t_quantile(p: float, df: int) -> float:
    """The `p` quantile (0.5 < p < 1) of Student's t distribution with `df` degrees of freedom.

    The standard library has no t distribution: its density is integrated with Simpson's rule
    and the quantile found by bisection, to about 1e-6, which is far below what a benchmark's
    interval needs."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t quantile needs 0.5 < p < 1 and df >= 1, not p={p}, df={df}")
    scale = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def density(x: float) -> float:
        return scale * (1 + x * x / df) ** (-(df + 1) / 2)

    def above_median(t: float, steps: int = 2000) -> float:
        h = t / steps
        odd = sum(density((2 * k - 1) * h) for k in range(1, steps // 2 + 1))
        even = sum(density(2 * k * h) for k in range(1, steps // 2))
        return h / 3 * (density(0) + 4 * odd + 2 * even + density(t))

    target = p - 0.5
    low, high = 0.0, 1.0
    while above_median(high) < target:
        low, high = high, high * 2
    while high - low > 1e-7 * high:
        middle = (low + high) / 2
        low, high = (middle, high) if above_median(middle) < target else (low, middle)
    return (low + high) / 2


@dataclass(frozen=True)
class Ratio:
    """How many times one setting's figure is another's, with a confidence interval."""

    value: float
    low: float
    high: float
    pairs: int

    @property
    def bounds(self) -> tuple[float, float]:
        """The interval, or the value twice when there is none (one pair)."""
        return (self.value, self.value) if math.isnan(self.low) else (self.low, self.high)

    @property
    def resolved(self) -> bool:
        """True when the interval excludes 1: the settings differ by more than the noise."""
        return self.low > 1 or self.high < 1


def paired_ratio(pairs: Sequence[tuple[float, float]], confidence: float = 0.95) -> Ratio:
    """The ratio `b / a` from pairs `(a, b)` each measured side by side (one pair per cycle of
    alternating rounds): the geometric mean of the pairs' ratios, with a t-based interval on
    their logarithms. Pairing cancels the machine's slow drift, which moves both members of a
    pair alike; logarithms put 0.8 and 1.25 times equally far from 1. One pair has no interval
    (NaN bounds)."""
    if not pairs or any(a <= 0 or b <= 0 for a, b in pairs):
        raise ValueError("a paired ratio needs at least one pair of positive values")
    logs = [math.log(b / a) for a, b in pairs]
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return Ratio(math.exp(mean), math.nan, math.nan, 1)
    half = (
        t_quantile((1 + confidence) / 2, len(logs) - 1)
        * statistics.stdev(logs)
        / math.sqrt(len(logs))
    )
    return Ratio(math.exp(mean), math.exp(mean - half), math.exp(mean + half), len(logs))


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration, ValueError):
        memory_kb = 0
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory_kb / 1024 / 1024:.0f} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def cpu_seconds(pids: Iterable[int]) -> float:
    """User plus system CPU time the processes have used so far (gone ones count 0)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def machine_cpu_seconds() -> float:
    """CPU time the whole machine has been busy so far, all cores together (/proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0.0
    ticks = [int(x) for x in fields[:8]]
    # user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


# The groups cpu_by_group always adds to the caller's.
CLIENT_CPU = "client"
MACHINE_CPU = "machine"


def cpu_by_group(groups: Mapping[str, Iterable[int]]) -> dict[str, float]:
    """CPU seconds used so far by each named group of processes, by this process (CLIENT_CPU)
    and by the whole machine (MACHINE_CPU); subtract two of these to get what a span used."""
    own = os.times()
    return {
        **{name: cpu_seconds(pids) for name, pids in groups.items()},
        CLIENT_CPU: own.user + own.system,
        MACHINE_CPU: machine_cpu_seconds(),
    }


def cpu_used(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}


def pids_named(name: str) -> list[int]:
    """Processes whose command name is `name` (e.g. every PostgreSQL backend)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_sum(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The sum of the samples of `name` in Prometheus text whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match[1] != name:
            continue
        found = dict(_LABEL.findall(match[2] or ""))
        if all(found.get(k) == v for k, v in (labels or {}).items()):
            total += float(match[3])
    return total
