"""The discarding OTLP sink (loupe.bench.sink): the SDK's exporter succeeds against it, it keeps
connections and counts what it dropped, and it runs as a process of its own."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loupe.bench.sink import Counts, serve, sink_process
from loupe.stack.process import free_port
from loupe.stack.supervisor import Stack


@pytest.fixture
def sink() -> Iterator[tuple[int, Counts]]:
    """The sink on its own event loop in a thread; its port and its counts."""
    port, counts = free_port(), Counts()
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        server = loop.run_until_complete(serve("127.0.0.1", port, counts))
        started.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(5)
    yield port, counts
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _spans(count: int) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    for n in range(count):
        with tracer.start_as_current_span(f"span {n}", attributes={"db.query.text": "x" * 200}):
            pass
    return list(memory.get_finished_spans())


def test_the_sdk_exporter_succeeds_and_the_sink_counts_what_it_dropped(
    sink: tuple[int, Counts],
) -> None:
    port, counts = sink
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")
    try:
        # 600 spans make a body of over 100 KiB, which arrives in many pieces.
        assert exporter.export(_spans(600)) is SpanExportResult.SUCCESS
        assert exporter.export(_spans(3)) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert counts.requests == 2
    assert counts.body_bytes > 100_000
    answer = httpx.get(f"http://127.0.0.1:{port}/", trust_env=False)
    assert answer.json() == {"requests": 2, "body_bytes": counts.body_bytes}


def _read_responses(sock: socket.socket, count: int) -> list[bytes]:
    data = b""
    while data.count(b"HTTP/1.1 ") < count or not data.endswith(b"\r\n\r\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return [b"HTTP/1.1 " + part for part in data.split(b"HTTP/1.1 ")[1:]]


def _post(body: bytes) -> bytes:
    return (
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def test_requests_split_anyhow_or_pipelined_on_one_connection_are_each_answered(
    sink: tuple[int, Counts],
) -> None:
    port, counts = sink
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        first = _post(b"a" * 5000)
        # Headers and body cut at odd places, as TCP may deliver them.
        for piece in (first[:10], first[10:70], first[70:3000], first[3000:]):
            sock.sendall(piece)
        (answer,) = _read_responses(sock, 1)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Content-Length: 0\r\n" in answer
        # Two more in one write, the second's empty body included.
        sock.sendall(_post(b"b" * 10) + _post(b""))
        answers = _read_responses(sock, 2)
    assert [a.split(b"\r\n")[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 2
    assert (counts.requests, counts.body_bytes) == (3, 5010)


def test_a_chunked_body_is_refused_and_the_connection_closed(sink: tuple[int, Counts]) -> None:
    port, counts = sink
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 411 ")
        assert sock.recv(4096) == b""  # closed
    assert counts.requests == 0


def test_the_sink_runs_as_a_process_ready_when_it_answers(tmp_path: Path) -> None:
    port = free_port()
    with Stack([sink_process(port, tmp_path)]):
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")
        try:
            assert exporter.export(_spans(5)) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        counts = httpx.get(f"http://127.0.0.1:{port}/", trust_env=False).json()
    assert counts["requests"] == 1 and counts["body_bytes"] > 0
