"""Database statements as spans: the ones that fail and the slow ones.

A step's statements (the inbox's insert, `SELECT … FOR UPDATE`, the `UPDATE`, the outbox's
insert, `BEGIN`/`COMMIT`) are fast and nearly always succeed. A span for each was two thirds of
an order's spans and most of what tracing cost the services (docs/benchmarks.md), while what
an operator reads in them, a statement that failed or waited, is rare. So a statement becomes a
span only when it fails (status ERROR, `error.type`, `db.response.status_code` = the SQLSTATE,
an `exception` event) or takes at least LOUPE_TRACE_STATEMENTS_MIN_MS; it starts when the
statement was sent and is a child of the span that was current then. With the minimum at 0
every statement is a span, as with opentelemetry-instrumentation-asyncpg, whose names and
attributes these spans keep: the statement's first word, and the stable database conventions.

Statements run under `suppress_instrumentation()` (the outbox's relay) are never spans.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.semconv.attributes.db_attributes import (
    DB_NAMESPACE,
    DB_QUERY_TEXT,
    DB_RESPONSE_STATUS_CODE,
    DB_SYSTEM_NAME,
    DbSystemNameValues,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.network_attributes import (
    NETWORK_TRANSPORT,
    NetworkTransportValues,
)
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.trace import SpanKind, Status, StatusCode

from loupe.environment import Variable, not_negative

STATEMENTS_MIN_MS = Variable(
    "LOUPE_TRACE_STATEMENTS_MIN_MS",
    10.0,
    "a database statement becomes a span when it fails or takes at least this long; `0`"
    " records every statement, `BEGIN`/`COMMIT` included (see [OpenTelemetry](#opentelemetry))",
    not_negative,
)

# The asyncpg methods every query goes through, pooled connections' included (the pool's
# proxy calls them) and a transaction's BEGIN and COMMIT (asyncpg sends them with `execute`).
METHODS = ("execute", "executemany", "fetch", "fetchval", "fetchrow")

_LEADING_COMMENT = re.compile(r"^/\*.*?\*/")

R = TypeVar("R")


def statement_name(query: str) -> str:
    """The span's name: the statement's first word (`SELECT`, `BEGIN;`), a leading /* */
    comment skipped, as opentelemetry-instrumentation-asyncpg names it."""
    words = _LEADING_COMMENT.sub("", query).split(maxsplit=1)
    return words[0] if words else ""


def connection_attributes(connection: asyncpg.Connection) -> dict[str, Any]:
    """The attributes all of a connection's statements share."""
    attributes: dict[str, Any] = {DB_SYSTEM_NAME: DbSystemNameValues.POSTGRESQL.value}
    database = getattr(getattr(connection, "_params", None), "database", None)
    if database:
        attributes[DB_NAMESPACE] = database
    address = getattr(connection, "_addr", None)
    if isinstance(address, tuple):
        attributes[SERVER_ADDRESS] = address[0]
        attributes[SERVER_PORT] = address[1]
        attributes[NETWORK_TRANSPORT] = NetworkTransportValues.TCP.value
    elif isinstance(address, str):
        attributes[SERVER_ADDRESS] = address
        attributes[NETWORK_TRANSPORT] = NetworkTransportValues.PIPE.value
    return attributes


class StatementSpans:
    """Records a statement that failed or was slow as a span, after the fact."""

    def __init__(self, tracer: trace.Tracer, min_ms: float) -> None:
        self.tracer = tracer
        self.min_ns = int(min_ms * 1_000_000)

    def record(
        self,
        connection: asyncpg.Connection,
        query: str,
        started_ns: int,
        ended_ns: int,
        error: BaseException | None,
    ) -> None:
        span = self.tracer.start_span(
            statement_name(query),
            kind=SpanKind.CLIENT,
            attributes={**connection_attributes(connection), DB_QUERY_TEXT: query},
            start_time=started_ns,
        )
        if error is not None and span.is_recording():
            span.record_exception(error, timestamp=ended_ns)
            span.set_attribute(ERROR_TYPE, type(error).__qualname__)
            sqlstate = getattr(error, "sqlstate", None)
            if sqlstate:
                span.set_attribute(DB_RESPONSE_STATUS_CODE, sqlstate)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end(end_time=ended_ns)

    def wrap(self, method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        @functools.wraps(method)
        async def traced(
            connection: asyncpg.Connection, query: str, *args: Any, **kwargs: Any
        ) -> R:
            if not is_instrumentation_enabled():
                return await method(connection, query, *args, **kwargs)
            # The span's times are wall-clock; its duration is the monotonic clock's, which
            # a clock step during the statement cannot make negative.
            started = time.time_ns()
            clock = time.monotonic_ns()
            try:
                result = await method(connection, query, *args, **kwargs)
            except Exception as error:
                took = time.monotonic_ns() - clock
                self.record(connection, query, started, started + took, error)
                raise
            took = time.monotonic_ns() - clock
            if took >= self.min_ns:
                self.record(connection, query, started, started + took, None)
            return result

        traced.__loupe_statements__ = method  # type: ignore[attr-defined]
        return traced


def trace_statements(
    tracer_provider: trace.TracerProvider | None = None, min_ms: float | None = None
) -> StatementSpans:
    """Wrap asyncpg's query methods, once per process; `min_ms` defaults to
    LOUPE_TRACE_STATEMENTS_MIN_MS."""
    spans = StatementSpans(
        trace.get_tracer(__name__, tracer_provider=tracer_provider),
        STATEMENTS_MIN_MS.read() if min_ms is None else min_ms,
    )
    for name in METHODS:
        method = getattr(asyncpg.Connection, name)
        original = getattr(method, "__loupe_statements__", method)
        setattr(asyncpg.Connection, name, spans.wrap(original))
    return spans


def untrace_statements() -> None:
    """Undo trace_statements (tests)."""
    for name in METHODS:
        method = getattr(asyncpg.Connection, name)
        original = getattr(method, "__loupe_statements__", None)
        if original is not None:
            setattr(asyncpg.Connection, name, original)
