"""The profile's grouping (loupe.bench.profiling): py-spy's collapsed stacks read, each sample
given to the component of its innermost frame that has one, and turned into ms per order."""

from __future__ import annotations

from pathlib import Path

import pytest

import loupe
from loupe.bench import profiling
from loupe.bench.profiling import Component, Profile, Sampled, component_of, parse_collapsed
from loupe.config import SERVICES

SITE = "/w/.venv/lib/python3.11/site-packages"
STDLIB = profiling._STDLIB.rstrip("/")
LOUPE = str(Path(loupe.__file__).resolve().parent)


def frame(function: str, path: str, line: int = 1) -> str:
    return f"{function} ({path}:{line})"


# The bottom of every stack on a service's main thread: the CLI starting uvicorn's loop.
MAIN = ";".join(
    [
        frame("<module>", f"{LOUPE}/__main__.py"),
        frame("run_service", f"{LOUPE}/service/http.py", 203),
        frame("serve", f"{LOUPE}/service/http.py", 180),
        frame("run", f"{STDLIB}/asyncio/runners.py", 190),
        frame("BaseEventLoop.run_forever", f"{STDLIB}/asyncio/base_events.py", 607),
        frame("BaseEventLoop._run_once", f"{STDLIB}/asyncio/base_events.py", 1922),
    ]
)
HANDLE = frame("Handle._run", f"{STDLIB}/asyncio/events.py", 80)
ASGI = frame(
    "OpenTelemetryMiddleware.__call__", f"{SITE}/opentelemetry/instrumentation/asgi/__init__.py"
)
ROUTE = frame("approve", f"{LOUPE}/crm/routes.py", 50)
WRAPT = frame("FunctionWrapper.__call__", f"{SITE}/wrapt/wrappers.py")
ASYNCPG_WRAPPER = frame(
    "AsyncPGInstrumentor._do_execute", f"{SITE}/opentelemetry/instrumentation/asyncpg/__init__.py"
)
WORKER = ";".join(
    [
        frame("Thread._bootstrap", f"{STDLIB}/threading.py", 995),
        frame("Thread.run", f"{STDLIB}/threading.py", 975),
        frame("BatchProcessor.worker", f"{SITE}/opentelemetry/sdk/_shared_internal/__init__.py"),
        frame("RedactingSpanExporter.export", f"{LOUPE}/telemetry/redaction.py"),
        frame("RetryingSpanExporter.export", f"{LOUPE}/telemetry/delivery.py"),
        frame(
            "OTLPSpanExporter.export",
            f"{SITE}/opentelemetry/exporter/otlp/proto/http/trace_exporter/__init__.py",
        ),
    ]
)

START_SPAN = frame("Tracer.start_span", f"{SITE}/opentelemetry/sdk/trace/__init__.py")
READ_READY = frame("_SelectorSocketTransport._read_ready", f"{STDLIB}/asyncio/selector_events.py")
ENCODE = frame(
    "encode_spans",
    f"{SITE}/opentelemetry/exporter/otlp/proto/common/_internal/trace_encoder/__init__.py",
)
SERIALIZE = frame("Message.SerializeToString", f"{SITE}/google/protobuf/message.py")
H11 = frame("H11Protocol.data_received", f"{SITE}/uvicorn/protocols/http/h11_impl.py")

CASES = [
    # re, json: the standard library works for its caller.
    (
        f"{WORKER.rsplit(';', 2)[0]};{frame('redact_span', f'{LOUPE}/telemetry/redaction.py')};"
        f"{frame('Pattern.sub', f'{STDLIB}/re/__init__.py')}",
        Component.REDACTION,
    ),
    (
        f"{MAIN};{HANDLE};{ASGI};{START_SPAN}",
        Component.SDK,
    ),
    (f"{MAIN};{HANDLE};{ASGI}", Component.INSTRUMENTATION),
    (
        f"{MAIN};{HANDLE};{ASGI};{frame('Router.__call__', f'{SITE}/starlette/routing.py')};"
        f"{ROUTE};{WRAPT};{ASYNCPG_WRAPPER};{WRAPT};"
        f"{frame('Connection.fetch', f'{SITE}/asyncpg/connection.py')}",
        Component.DATABASE,
    ),
    (
        f"{MAIN};{HANDLE};{ASGI};{ROUTE};{WRAPT};{ASYNCPG_WRAPPER};"
        f"{frame('dumps', f'{STDLIB}/json/__init__.py')}",
        Component.INSTRUMENTATION,
    ),
    (
        f"{MAIN};{HANDLE};{ROUTE};{frame('dumps', f'{STDLIB}/json/__init__.py')}",
        Component.LOUPE,
    ),
    # The loop's own work is not the CLI's that started it.
    (MAIN, Component.RUNTIME),
    (
        f"{MAIN};{HANDLE};{READ_READY}",
        Component.RUNTIME,
    ),
    (
        f"{WORKER};{ENCODE};{SERIALIZE}",
        Component.ENCODING,
    ),
    (
        f"{WORKER};{frame('Session.post', f'{SITE}/requests/sessions.py')};"
        f"{frame('HTTPConnectionPool.urlopen', f'{SITE}/urllib3/connectionpool.py')};"
        f"{frame('socket.sendall', f'{STDLIB}/socket.py')}",
        Component.EXPORT,
    ),
    (f"{WORKER}", Component.EXPORT),
    (
        f"{MAIN};{HANDLE};{frame('span_context_to_text', f'{LOUPE}/messaging/propagation.py')};"
        f"{frame('inject', f'{SITE}/opentelemetry/propagate/__init__.py')}",
        Component.SDK,
    ),
    (
        f"{MAIN};{HANDLE};{frame('publish', f'{LOUPE}/messaging/publisher.py')};"
        f"{frame('Exchange.publish', f'{SITE}/aio_pika/exchange.py')};"
        f"{frame('Channel.basic_publish', f'{SITE}/aiormq/channel.py')}",
        Component.MESSAGING,
    ),
    (
        f"{MAIN};{HANDLE};{H11};{frame('<module>', '<frozen importlib._bootstrap>')}",
        Component.WEB,
    ),
    (f"{MAIN};{HANDLE};{frame('Faker.name', f'{SITE}/faker/proxy.py')}", Component.LIBRARIES),
]


@pytest.mark.parametrize(("stack", "expected"), CASES)
def test_a_sample_goes_to_its_innermost_frame_that_has_a_component(
    stack: str, expected: Component
) -> None:
    ((frames, count),) = parse_collapsed(f"{stack} 7\n")
    assert count == 7
    assert component_of(frames)[0] is expected


def test_frames_are_read_into_dotted_modules() -> None:
    ((frames, _),) = parse_collapsed(f"{WORKER} 3\n")
    assert [f.module for f in frames] == [
        "stdlib:threading",
        "stdlib:threading",
        "opentelemetry.sdk._shared_internal",
        "loupe.telemetry.redaction",
        "loupe.telemetry.delivery",
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    ]
    assert frames[3].function == "RedactingSpanExporter.export"
    assert parse_collapsed("garbage\n\n") == []


def test_the_longest_rule_wins() -> None:
    assert profiling.rule_of("loupe.telemetry.redaction") is Component.REDACTION
    assert profiling.rule_of("loupe.telemetry.attributes") is Component.INSTRUMENTATION
    assert profiling.rule_of("loupe.telemetryx") is Component.LOUPE  # a prefix is a whole name
    assert profiling.rule_of("opentelemetry.exporter.otlp.proto.common._internal") is (
        Component.ENCODING
    )
    assert profiling.rule_of("opentelemetry.exporter.otlp.proto.http") is Component.EXPORT
    assert profiling.rule_of("wrapt.wrappers") is None
    assert profiling.rule_of("stdlib:re") is None


def test_a_profile_counts_samples_and_deciding_functions() -> None:
    text = "\n".join(f"{stack} {n + 1}" for n, (stack, _) in enumerate(CASES))
    profile = Profile()
    profile.add(parse_collapsed(text))
    assert profile.total == sum(range(1, len(CASES) + 1))
    for component in Component:
        expected = sum(n + 1 for n, (_, c) in enumerate(CASES) if c is component)
        assert profile.samples[component] == expected
    assert profile.functions[Component.REDACTION, "loupe.telemetry.redaction.redact_span"] == 1


def _sampled(counts: dict[Component, int], cpu_seconds: float, orders: int) -> Sampled:
    profile = Profile()
    profile.samples.update(counts)
    return Sampled(profile, cpu_seconds, 10.0, orders, 0.1)


def test_ms_per_order_is_the_share_of_samples_times_the_measured_cpu() -> None:
    sampled = _sampled({Component.SDK: 1, Component.LOUPE: 3}, cpu_seconds=2.0, orders=100)
    assert sampled.ms_per_order(Component.SDK) == pytest.approx(5.0)
    assert sampled.ms_per_order(Component.LOUPE) == pytest.approx(15.0)
    assert sampled.ms_per_order(Component.REDACTION) == 0.0


def test_the_table_adds_components_and_services_and_ends_at_the_measured_cpu() -> None:
    off = {s: _sampled({Component.LOUPE: 1}, 1.0, 100) for s in SERVICES}
    on = {s: _sampled({Component.LOUPE: 1, Component.SDK: 1}, 3.0, 100) for s in SERVICES}
    rows = {row[0]: row for row in profiling.table_rows({"off": off, profiling.TRACED.name: on})}
    assert rows[Component.SDK.value][1:] == ("0.0 / 15.0",) * 3 + ("0.0", "45.0", "+45.0")
    assert rows["**tracing, all**"][-1] == "+45.0"
    assert rows[Component.LOUPE.value][-3:] == ("30.0", "45.0", "+15.0")
    total = rows["**the services' CPU per order** (/proc)"]
    assert total[-3:] == ("30.0", "90.0", "+60.0")


def test_the_section_is_named_after_the_label() -> None:
    assert profiling.section("before") == "profile-before"
    assert profiling.section("After issue 12!") == "profile-after-issue-12"
