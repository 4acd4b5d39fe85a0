"""Database statements become spans when they fail or are slow, on a real PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator

import asyncpg
import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from loupe.database import dsn_for
from loupe.telemetry.statements import (
    STATEMENTS_MIN_MS,
    statement_name,
    trace_statements,
    untrace_statements,
)
from tests.support.integration import POSTGRES_DSN

pytestmark = pytest.mark.integration

Trace = Callable[[float], tuple[TracerProvider, InMemorySpanExporter]]


@pytest.fixture
def traced() -> Iterator[Trace]:
    """asyncpg's statements traced into an exporter of the test's own, at a given minimum."""

    def trace(min_ms: float) -> tuple[TracerProvider, InMemorySpanExporter]:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace_statements(provider, min_ms)
        return provider, exporter

    try:
        yield trace
    finally:
        untrace_statements()


@pytest.fixture
async def connection() -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn_for(POSTGRES_DSN, "postgres"))
    try:
        yield connection
    finally:
        await connection.close()


def _names(exporter: InMemorySpanExporter) -> list[str]:
    return [span.name for span in exporter.get_finished_spans()]


def _only(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    return span


async def test_a_statement_that_succeeds_faster_than_the_minimum_is_no_span(
    traced: Trace, connection: asyncpg.Connection
) -> None:
    _, exporter = traced(1000)
    assert await connection.fetchval("SELECT 1") == 1
    async with connection.transaction():
        await connection.execute("SELECT 2")
    assert _names(exporter) == []


async def test_a_slow_statement_is_a_client_span_of_the_step_with_the_database_conventions(
    traced: Trace,
) -> None:
    provider, exporter = traced(5)
    pool = await asyncpg.create_pool(dsn_for(POSTGRES_DSN, "postgres"), min_size=1, max_size=1)
    try:
        with provider.get_tracer("test").start_as_current_span("step") as step:
            sent = time.time_ns()
            async with pool.acquire() as pooled:
                await pooled.execute("SELECT pg_sleep(0.03)")
            answered = time.time_ns()
    finally:
        await pool.close()
    statement, parent = exporter.get_finished_spans()
    assert parent.name == "step"
    assert statement.name == "SELECT"
    assert statement.kind is SpanKind.CLIENT
    assert statement.parent is not None
    assert statement.parent.span_id == step.get_span_context().span_id
    assert statement.start_time is not None and statement.end_time is not None
    # Started when the statement was sent, ended when it was answered.
    assert sent <= statement.start_time
    assert statement.end_time <= answered
    assert statement.end_time - statement.start_time >= 30_000_000
    attributes = dict(statement.attributes or {})
    assert attributes.pop("server.address")
    assert attributes.pop("network.transport") in ("pipe", "tcp")
    attributes.pop("server.port", None)
    assert attributes == {
        "db.system.name": "postgresql",
        "db.namespace": "postgres",
        "db.query.text": "SELECT pg_sleep(0.03)",
    }
    assert statement.status.status_code is StatusCode.UNSET


async def test_a_failing_statement_is_an_error_span_with_its_sqlstate_however_fast(
    traced: Trace, connection: asyncpg.Connection
) -> None:
    _, exporter = traced(1000)
    with pytest.raises(asyncpg.UndefinedTableError):
        await connection.fetch("SELECT * FROM no_such_table WHERE id = $1", 1)
    span = _only(exporter)
    assert span.name == "SELECT"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description is not None
    assert span.status.description.startswith("UndefinedTableError: ")
    assert span.attributes is not None
    assert span.attributes["error.type"] == "UndefinedTableError"
    assert span.attributes["db.response.status_code"] == "42P01"
    assert span.attributes["db.query.text"] == "SELECT * FROM no_such_table WHERE id = $1"
    assert [event.name for event in span.events] == ["exception"]


async def test_at_zero_every_statement_is_a_span_begin_and_commit_included(
    traced: Trace, connection: asyncpg.Connection
) -> None:
    _, exporter = traced(0)
    async with connection.transaction():
        await connection.execute("UPDATE pg_settings SET setting = setting WHERE false")
    await connection.fetchrow("/* a note */ SELECT 1")
    assert _names(exporter) == ["BEGIN;", "UPDATE", "COMMIT;", "SELECT"]


async def test_statements_under_suppressed_instrumentation_are_never_spans(
    traced: Trace, connection: asyncpg.Connection
) -> None:
    _, exporter = traced(0)
    with suppress_instrumentation():
        await connection.execute("SELECT pg_sleep(0.01)")
        with pytest.raises(asyncpg.UndefinedTableError):
            await connection.execute("SELECT * FROM no_such_table")
    assert _names(exporter) == []


async def test_untraced_again_the_methods_are_asyncpgs_own(
    traced: Trace, connection: asyncpg.Connection
) -> None:
    original = asyncpg.Connection.fetchval
    _, exporter = traced(0)
    trace_statements(min_ms=0)  # a second call wraps the originals, not the wrappers
    untrace_statements()
    assert asyncpg.Connection.fetchval is original
    await connection.fetchval("SELECT 1")
    assert _names(exporter) == []


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("SELECT 1", "SELECT"),
        ("  \n update orders set x = 1", "update"),
        ("/* from the relay */ DELETE FROM outbox", "DELETE"),
        ("-- migration 001\nCREATE TABLE t ()", "--"),
        ("BEGIN;", "BEGIN;"),
        ("", ""),
    ],
)
def test_a_statement_is_named_by_its_first_word(query: str, name: str) -> None:
    assert statement_name(query) == name


@pytest.mark.parametrize("raw", ["-1", "nan", "inf", "soon"])
def test_a_minimum_below_zero_or_not_a_number_is_refused_by_name(raw: str) -> None:
    with pytest.raises(ValueError, match="LOUPE_TRACE_STATEMENTS_MIN_MS"):
        STATEMENTS_MIN_MS.read({"LOUPE_TRACE_STATEMENTS_MIN_MS": raw})


def test_the_minimum_defaults_to_ten_milliseconds_and_reads_zero() -> None:
    assert STATEMENTS_MIN_MS.read({}) == 10.0
    assert STATEMENTS_MIN_MS.read({"LOUPE_TRACE_STATEMENTS_MIN_MS": "0"}) == 0.0
