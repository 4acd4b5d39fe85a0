"""The profile: where each service's CPU per order goes, with tracing off and on, by component.

The pipeline benchmark's workload (`loupe.bench.pipeline`) runs once with tracing off and once
at 100% sampling exported to the discarding sink, each service sampled meanwhile by py-spy
(`py-spy record --format raw --gil`: one line per distinct stack, its frames from the
thread's root to the innermost, and how many samples had it; only the thread holding the GIL
is sampled, the one running Python). Each sample goes
to one component, decided by its innermost frame that belongs to one (`component_of`): the
standard library, wrapt and the like pass it on to their caller, so `re` called from the
redaction counts as redaction and `json` called by FastAPI as the web framework. A frame of
the event loop itself (asyncio's `_run_once`, `Handle._run`) ends the search: what runs below
it is the loop, whoever started it. The components' shares of a service's samples, times its
CPU per order read from /proc over the same time, give milliseconds per order.

Results go to the console and to the `profile-<label>` section of docs/benchmarks.md (the
label says which state of the code it is, e.g. `before` and `after` a change).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from rich.console import Console
from rich.table import Table

import loupe
from loupe.bench.measure import cpu_seconds, machine
from loupe.bench.pipeline import (
    MODES,
    OFF,
    Mode,
    Receiver,
    Receivers,
    drive,
    receivers,
    services,
)
from loupe.bench.report import markdown_table, write_section
from loupe.config import REPO_ROOT, SERVICE_NAMES, SERVICES
from loupe.stack.process import StackError
from loupe.stack.sandbox import Sandbox

PY_SPY = Path(sys.executable).parent / "py-spy"
TRACED = next(m for m in MODES if m.receiver is Receiver.SINK and m.name.startswith("100%"))
PROFILED = (OFF, TRACED)
# Untimed orders before sampling starts: the first orders of a fresh process fill caches
# (regular expressions, prepared statements, the redaction's) that a long-running service has
# full.
WARM_UP_ORDERS = 5
ATTACH_SECONDS = 1.0
# py-spy's own test of whether a thread is idle does not work here (in a container its
# blocking mode cannot match OS threads to Python's, and without it the heuristic counts
# threads waiting in select() as busy): a sample is taken only from the thread holding the
# GIL, which is the one running Python. --nonblocking reads the process without stopping it,
# so sampling does not slow the services down.
SAMPLER_FLAGS: tuple[str, ...] = ("--gil", "--nonblocking")


class Component(StrEnum):
    SDK = "OpenTelemetry API and SDK: spans, context, sampler, batch processor"
    INSTRUMENTATION = (
        "instrumentations: FastAPI/ASGI, httpx; loupe's statement spans, message propagation and "
        "span attributes"
    )
    REDACTION = "redaction (loupe.telemetry.redaction)"
    ENCODING = "OTLP encoding: protobuf"
    EXPORT = "export: OTLP/HTTP (requests, urllib3), loupe's retrying exporter"
    WEB = "web: uvicorn, h11, FastAPI, Starlette, pydantic"
    DATABASE = "database driver: asyncpg"
    MESSAGING = "messaging: aio-pika, aiormq, pamqp"
    HTTP_CLIENT = "HTTP client: httpx, httpcore"
    LOUPE = "loupe's own code"
    LIBRARIES = "other libraries"
    RUNTIME = "event loop, socket I/O and C extensions it calls"


TRACING = (
    Component.SDK,
    Component.INSTRUMENTATION,
    Component.REDACTION,
    Component.ENCODING,
    Component.EXPORT,
)
APP = tuple(c for c in Component if c not in TRACING)

# Module prefixes and their component; the longest matching prefix decides.
RULES: dict[str, Component] = {
    "loupe.telemetry.redaction": Component.REDACTION,
    "loupe.telemetry.encoding": Component.ENCODING,
    "loupe.telemetry.delivery": Component.EXPORT,
    "loupe.telemetry.sampling": Component.SDK,
    "loupe.telemetry": Component.INSTRUMENTATION,
    "loupe.messaging.propagation": Component.INSTRUMENTATION,
    "loupe": Component.LOUPE,
    "opentelemetry.instrumentation": Component.INSTRUMENTATION,
    "opentelemetry.util.http": Component.INSTRUMENTATION,
    "opentelemetry.exporter.otlp.proto.common": Component.ENCODING,
    "opentelemetry.proto": Component.ENCODING,
    "google.protobuf": Component.ENCODING,
    "opentelemetry.exporter": Component.EXPORT,
    "requests": Component.EXPORT,
    "urllib3": Component.EXPORT,
    "charset_normalizer": Component.EXPORT,
    "idna": Component.EXPORT,
    "opentelemetry": Component.SDK,
    "uvicorn": Component.WEB,
    "h11": Component.WEB,
    "fastapi": Component.WEB,
    "starlette": Component.WEB,
    "pydantic": Component.WEB,
    "pydantic_core": Component.WEB,
    "anyio": Component.WEB,
    "multipart": Component.WEB,
    "python_multipart": Component.WEB,
    "asyncpg": Component.DATABASE,
    "aio_pika": Component.MESSAGING,
    "aiormq": Component.MESSAGING,
    "pamqp": Component.MESSAGING,
    "httpx": Component.HTTP_CLIENT,
    "httpcore": Component.HTTP_CLIENT,
}
# Passed on to their caller: they work for whoever called them.
NEUTRAL = ("wrapt", "typing_extensions")
# The event loop's own frames: below them is whoever started the loop, not who asked for work.
LOOP = ("asyncio.base_events", "asyncio.events", "asyncio.runners")

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::\d+)?\)$")
_STDLIB = sysconfig.get_paths()["stdlib"].rstrip("/") + "/"
_LOUPE_ROOT = str(Path(loupe.__file__).resolve().parent.parent).rstrip("/") + "/"


@dataclass(frozen=True)
class Frame:
    function: str
    module: str
    """Dotted module name; `stdlib:` in front for the standard library's."""


def module_of(filename: str) -> str:
    """The dotted module a py-spy frame's file holds (`--full-filenames`)."""
    stdlib = False
    if "/site-packages/" in filename:
        relative = filename.rsplit("/site-packages/", 1)[1]
    elif filename.startswith(_LOUPE_ROOT):
        relative = filename[len(_LOUPE_ROOT) :]
    elif filename.startswith(_STDLIB):
        relative, stdlib = filename[len(_STDLIB) :], True
    elif filename.startswith("<"):
        # <frozen importlib._bootstrap>, <string>: the interpreter's own.
        return "stdlib:" + filename.strip("<>").removeprefix("frozen ")
    else:
        relative = filename.lstrip("/")
    dotted = relative.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    return f"stdlib:{dotted}" if stdlib else dotted


def parse_frame(text: str) -> Frame:
    match = _FRAME.match(text)
    if not match:
        return Frame(text, "")
    return Frame(match["function"], module_of(match["file"]))


def parse_collapsed(text: str) -> list[tuple[list[Frame], int]]:
    """py-spy's raw output: each line a stack, root first, frames split by `;`, then a count."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append(([parse_frame(f) for f in stack.split(";")], int(count)))
    return stacks


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def rule_of(module: str) -> Component | None:
    """The component of a module, None for those passed on to their caller."""
    if module.startswith("stdlib:") or not module:
        return None
    if any(_matches(module, prefix) for prefix in NEUTRAL):
        return None
    best = max((p for p in RULES if _matches(module, p)), key=len, default=None)
    return RULES[best] if best is not None else Component.LIBRARIES


def component_of(stack: Sequence[Frame]) -> tuple[Component, Frame | None]:
    """The component a sample goes to, and the frame that decided it (None: the loop's)."""
    for frame in reversed(stack):
        if any(frame.module == f"stdlib:{loop}" for loop in LOOP):
            break
        component = rule_of(frame.module)
        if component is not None:
            return component, frame
    return Component.RUNTIME, None


@dataclass
class Profile:
    """One service's samples in one mode, grouped."""

    samples: Counter[Component] = field(default_factory=Counter)
    functions: Counter[tuple[Component, str]] = field(default_factory=Counter)

    def add(self, stacks: Iterable[tuple[list[Frame], int]]) -> None:
        for stack, count in stacks:
            component, frame = component_of(stack)
            self.samples[component] += count
            if frame is not None:
                self.functions[component, f"{frame.module}.{frame.function}"] += count

    @property
    def total(self) -> int:
        return sum(self.samples.values())

    def share(self, component: Component) -> float:
        return self.samples[component] / self.total if self.total else 0.0


@dataclass
class Sampled:
    """A service's profile in one mode with what /proc said it used meanwhile."""

    profile: Profile
    cpu_seconds: float
    seconds: float
    orders: int
    sampler_cpu_seconds: float

    def ms_per_order(self, component: Component) -> float:
        return self.profile.share(component) * self.cpu_seconds / self.orders * 1000

    def widest_interval_ms(self) -> float:
        """Half the 95% interval of the largest cell (binomial on the component's share)."""
        n = self.profile.total
        if not n:
            return 0.0
        scale = self.cpu_seconds / self.orders * 1000
        return max(
            1.96 * math.sqrt(self.profile.share(c) * (1 - self.profile.share(c)) / n) * scale
            for c in Component
        )

    def function_ms_per_order(self, key: tuple[Component, str]) -> float:
        if not self.profile.total:
            return 0.0
        return (
            self.profile.functions[key] / self.profile.total * self.cpu_seconds / self.orders * 1000
        )


def _record(pid: int, output: Path, rate: int) -> subprocess.Popen[bytes]:
    if not PY_SPY.exists():
        raise StackError(f"py-spy is not installed at {PY_SPY}; `uv sync` installs it (dev)")
    argv = [str(PY_SPY), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
    argv += ["--full-filenames", *SAMPLER_FLAGS, "--output", str(output)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def profile_round(
    sandbox: Sandbox, sending: Receivers, mode: Mode, orders: int, concurrency: int, rate: int
) -> dict[str, Sampled]:
    """Drive `orders` orders with every service sampled by py-spy until their spans have been
    exported; per service, its profile."""
    with (
        services(sandbox, mode, sending, warm_up=WARM_UP_ORDERS) as (pids, settle),
        tempfile.TemporaryDirectory() as tmp,
    ):
        by_service = dict(zip(SERVICES, pids, strict=True))
        outputs = {s: Path(tmp) / f"{s}.txt" for s in SERVICES}
        samplers = {s: _record(pid, outputs[s], rate) for s, pid in by_service.items()}
        # py-spy needs a moment to attach.
        time.sleep(ATTACH_SECONDS)
        groups = {s: [pid] for s, pid in by_service.items()}
        driven = asyncio.run(drive(sandbox.settings, orders, concurrency, groups, tail=settle))
        results = {}
        for service, sampler in samplers.items():
            sampler_cpu = cpu_seconds([sampler.pid])
            sampler.send_signal(signal.SIGINT)
            _, errors = sampler.communicate(timeout=30)
            if sampler.returncode != 0 or not outputs[service].exists():
                raise StackError(f"py-spy failed on {service}: {errors.decode()[-500:]}")
            profile = Profile()
            profile.add(parse_collapsed(outputs[service].read_text()))
            results[service] = Sampled(
                profile, driven.cpu[service], driven.seconds, orders, sampler_cpu
            )
    return results


# ------------------------------------------------------------------------------- report


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{' with uncommitted changes' if dirty else ''}" if head else "unknown"


def _cell(profiles: dict[str, dict[str, Sampled]], mode: str, service: str, c: Component) -> float:
    return profiles[mode][service].ms_per_order(c)


def _total(
    profiles: dict[str, dict[str, Sampled]], mode: str, components: Iterable[Component]
) -> float:
    return sum(_cell(profiles, mode, s, c) for s in SERVICES for c in components)


def table_rows(profiles: dict[str, dict[str, Sampled]]) -> list[tuple[str, ...]]:
    """Per component: each service's ms per order off / on, all three's off, on and the
    difference; subtotals for tracing's components and the app's."""
    off, on = OFF.name, TRACED.name

    def row(label: str, components: Sequence[Component]) -> tuple[str, ...]:
        cells = [
            f"{sum(_cell(profiles, off, s, c) for c in components):.1f} / "
            f"{sum(_cell(profiles, on, s, c) for c in components):.1f}"
            for s in SERVICES
        ]
        both = _total(profiles, off, components), _total(profiles, on, components)
        return (label, *cells, f"{both[0]:.1f}", f"{both[1]:.1f}", f"{both[1] - both[0]:+.1f}")

    rows = [row(c.value, [c]) for c in TRACING]
    rows.append(row("**tracing, all**", TRACING))
    rows += [row(c.value, [c]) for c in APP]
    rows.append(row("**the app, all**", APP))
    rows.append(row("**the services' CPU per order** (/proc)", list(Component)))
    return rows


HEADERS = (
    "component (ms per order)",
    *(f"{SERVICE_NAMES[s]} off / on" for s in SERVICES),
    "all off",
    "all on",
    "on - off",
)


def top_functions(
    profiles: dict[str, dict[str, Sampled]], count: int = 15
) -> list[tuple[str, str, float]]:
    """The functions in tracing's components that took most CPU per order with tracing on
    (the innermost frame that decided each sample), over the three services."""
    totals: dict[tuple[Component, str], float] = defaultdict(float)
    for sampled in profiles[TRACED.name].values():
        for key in sampled.profile.functions:
            if key[0] in TRACING:
                totals[key] += sampled.function_ms_per_order(key)
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:count]
    return [(name, component.name, ms) for (component, name), ms in ranked]


def report(profiles: dict[str, dict[str, Sampled]], label: str, orders: int, rate: int) -> str:
    off, on = OFF.name, TRACED.name
    lines = [
        f"## Where the services' CPU per order goes ({label})",
        "",
        f"- Run: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, code at {_commit()}",
        f"- Machine: {machine()}",
        f"- Workload: the pipeline benchmark's, {orders} orders per mode after "
        f"{WARM_UP_ORDERS} untimed ones, tracing off and {on}; each service sampled by py-spy "
        f"at {rate} Hz (`--gil --nonblocking`: the thread holding the GIL). Produced by "
        f"`python -m loupe.bench --only profile --profile-label {label}`.",
        "",
        *markdown_table(HEADERS, table_rows(profiles)),
        "",
        "Each sample goes to the innermost frame on its stack that belongs to a component "
        "(the standard library and wrapt work for their caller; below the event loop's own "
        "frames nothing counts), and a component's share of a service's samples times the "
        "service's CPU per order (/proc, the same time) is its figure. Instrumentations count "
        "their own code; the spans they start and end count as the SDK's. With tracing off the "
        "instrumentations still run and call the no-op API.",
        "",
        f"The functions of tracing's components that took most with tracing on ({on}), over "
        "the three services:",
        "",
        "| function | component | ms per order |",
        "|---|---|---:|",
    ]
    lines += [f"| `{name}` | {c} | {ms:.2f} |" for name, c, ms in top_functions(profiles)]
    coverage = []
    widest = 0.0
    for mode in (off, on):
        for service in SERVICES:
            sampled = profiles[mode][service]
            expected = sampled.cpu_seconds * rate
            coverage.append(sampled.profile.total / expected if expected else 0.0)
            widest = max(widest, sampled.widest_interval_ms())
    sampler = sum(p.sampler_cpu_seconds for m in (off, on) for p in profiles[m].values())
    used = sum(p.cpu_seconds for m in (off, on) for p in profiles[m].values())
    samples = [p.profile.total for m in (off, on) for p in profiles[m].values()]
    lines += [
        "",
        f"{min(samples):,} to {max(samples):,} samples per service and mode: a single cell is "
        f"uncertain by up to ±{widest:.1f} ms per order (95%, binomial on its share of the "
        f"samples). There were {min(coverage) * rate:.0f} to {max(coverage) * rate:.0f} samples "
        f"per CPU second measured, against the {rate} expected: a thread holding the GIL while "
        "the OS has it wait for one of the two busy cores is sampled too, and the shares "
        "assume such waits fall on every component alike. py-spy itself used "
        f"{sampler / used * 100:.0f}% as much CPU as the services it sampled, on the same "
        "cores; the services' CPU per order here is therefore not the pipeline benchmark's, "
        "whose ratios are the ones to quote.",
        "",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("profile")
    group.add_argument(
        "--profile-orders", type=int, default=240, help="orders per mode while sampled (240)"
    )
    group.add_argument("--profile-rate", type=int, default=100, help="samples per second (100)")
    group.add_argument(
        "--profile-label",
        default="now",
        help="which state of the code this is, e.g. before or after a change; the section is "
        "profile-<label> (default now)",
    )


def section(label: str) -> str:
    return "profile-" + re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def run(args: argparse.Namespace, console: Console, output: Path) -> None:
    """Profile, print the table and write the `profile-<label>` section of `output`."""
    profiles: dict[str, dict[str, Sampled]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="loupe-bench-") as root,
        Sandbox(Path(root)) as sandbox,
        receivers(sandbox.logs) as sending,
    ):
        for mode in PROFILED:
            with console.status(f"profiling: tracing {mode.name}"):
                profiles[mode.name] = profile_round(
                    sandbox,
                    sending,
                    mode,
                    args.profile_orders,
                    args.concurrency,
                    args.profile_rate,
                )
            console.print(f"profiled tracing {mode.name}")
    table = Table(*HEADERS)
    for row in table_rows(profiles):
        table.add_row(*row)
    console.print(table)
    write_section(
        output,
        section(args.profile_label),
        report(profiles, args.profile_label, args.profile_orders, args.profile_rate),
    )
    console.print(f"{section(args.profile_label)} section written to {output}")
