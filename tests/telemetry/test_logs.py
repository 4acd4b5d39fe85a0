"""JSON log lines that carry the trace and span they were written in."""

from __future__ import annotations

import json
import logging
import sys

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider

from loupe.telemetry.logs import JsonFormatter, shown_url


def _record(message: str = "order %s moved", *args: object, **extra: object) -> logging.LogRecord:
    record = logging.getLogger("loupe.test").makeRecord(
        "loupe.test", logging.WARNING, __file__, 1, message, args or ("o-1",), None
    )
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_line_inside_a_span_carries_its_trace_and_span_ids() -> None:
    tracer = trace.get_tracer(__name__, tracer_provider=TracerProvider())
    with tracer.start_as_current_span("work", context=Context()) as span:
        line = JsonFormatter("mes-api").format(_record())
    entry = json.loads(line)
    context = span.get_span_context()
    assert entry["trace_id"] == f"{context.trace_id:032x}"
    assert entry["span_id"] == f"{context.span_id:016x}"
    assert len(entry["trace_id"]) == 32
    assert len(entry["span_id"]) == 16
    assert entry["service"] == "mes-api"
    assert entry["level"] == "warning"
    assert entry["logger"] == "loupe.test"
    assert entry["message"] == "order o-1 moved"
    assert "\n" not in line


def test_nested_span_is_the_one_named() -> None:
    tracer = trace.get_tracer(__name__, tracer_provider=TracerProvider())
    with tracer.start_as_current_span("outer", context=Context()) as outer:
        with tracer.start_as_current_span("inner") as inner:
            entry = json.loads(JsonFormatter("shop-api").format(_record()))
        after = json.loads(JsonFormatter("shop-api").format(_record()))
    assert entry["span_id"] == f"{inner.get_span_context().span_id:016x}"
    assert after["span_id"] == f"{outer.get_span_context().span_id:016x}"
    assert entry["trace_id"] == after["trace_id"]


def test_line_outside_any_span_has_no_trace_ids() -> None:
    assert not trace.get_current_span().get_span_context().is_valid
    entry = json.loads(JsonFormatter("crm-api").format(_record()))
    assert "trace_id" not in entry
    assert "span_id" not in entry
    assert entry["message"] == "order o-1 moved"
    assert entry["service"] == "crm-api"


def test_extra_fields_and_exceptions_are_kept() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = _record(order_id="o-42", attempt=3)
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter("mes-api").format(record))
    assert entry["order_id"] == "o-42"
    assert entry["attempt"] == 3
    assert "RuntimeError: boom" in entry["exception"]
    # The LogRecord's own bookkeeping is not repeated in the line.
    assert "args" not in entry
    assert "msg" not in entry
    assert "levelno" not in entry


def test_values_json_cannot_hold_are_written_as_text() -> None:
    entry = json.loads(JsonFormatter("mes-api").format(_record(path=object(), raw=b"\x00")))
    assert isinstance(entry["path"], str)
    assert entry["raw"] == "b'\\x00'"


def test_no_urls_password_reaches_a_line_whoever_wrote_it() -> None:
    url = "amqp://loupe_shop:Zq9%2Fs3cret@127.0.0.1:5672/loupe"
    try:
        raise ConnectionError(f"cannot connect to {url}")
    except ConnectionError:
        record = _record("connecting to %s", url, dsn="postgresql://mes:pw0rd@db/loupe_mes")
        record.exc_info = sys.exc_info()
    line = JsonFormatter("shop-api").format(record)
    assert "Zq9" not in line and "pw0rd" not in line
    entry = json.loads(line)
    assert entry["message"] == "connecting to amqp://loupe_shop:***@127.0.0.1:5672/loupe"
    assert entry["dsn"] == "postgresql://mes:***@db/loupe_mes"
    assert "amqp://loupe_shop:***@127.0.0.1" in entry["exception"]


def test_a_url_is_shown_by_its_host_only() -> None:
    assert shown_url("https://hooks.slack.com/services/T0/B0/XXXX?x=1") == (
        "https://hooks.slack.com/***"
    )
    assert shown_url("http://user:pw@127.0.0.1:8080/hook") == "http://127.0.0.1:8080/***"
    # A port that is not one makes no error of its own.
    assert shown_url("http://h:99999/t") == "http://h/***"
