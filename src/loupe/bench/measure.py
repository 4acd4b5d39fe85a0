"""What the benchmarks measure with: percentiles and spread, the machine they ran on, CPU time
from /proc, and samples from Prometheus text."""

from __future__ import annotations

import os
import platform
import re
import statistics
from collections.abc import Iterable, Mapping
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


def cpu_by_group(groups: Mapping[str, Iterable[int]]) -> dict[str, float]:
    """CPU seconds used so far by each named group of processes, by this process (`client`)
    and by the whole machine (`machine`); subtract two of these to get what a span used."""
    own = os.times()
    return {
        **{name: cpu_seconds(pids) for name, pids in groups.items()},
        "client": own.user + own.system,
        "machine": machine_cpu_seconds(),
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
