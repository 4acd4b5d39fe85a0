"""An OTLP/HTTP receiver that accepts everything and keeps nothing, for the pipeline benchmark.

Pointed at by the services' exporter instead of Jaeger, it lets the benchmark measure what
loupe's instrumentation costs the services without Jaeger decoding, batching and storing the
spans on the same two cores. It must itself cost next to nothing: it does not parse the
protobuf, only HTTP/1.1 framing (request line, headers, `Content-Length` bytes of body, kept
connections), and answers every POST with 200 and an empty `ExportTraceServiceResponse` (zero
bytes of protobuf). Any GET answers with what it counted (requests, body bytes) as JSON, which
is also its readiness probe. Chunked bodies are refused with 411: the OTLP exporters send a
length.

Run as its own process (`python -m loupe.bench.sink --port N`), so the benchmark reads its
CPU time apart from everything else's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from loupe.stack.process import Process

# Headers longer than this are not a request of an OTLP exporter; the connection is dropped.
MAX_HEAD_BYTES = 64 * 1024
PROTOBUF = b"application/x-protobuf"


@dataclass
class Counts:
    requests: int = 0
    body_bytes: int = 0


def _response(status: bytes, content_type: bytes, body: bytes, *, close: bool) -> bytes:
    head = [
        b"HTTP/1.1 " + status,
        b"Content-Type: " + content_type,
        b"Content-Length: " + str(len(body)).encode(),
    ]
    if close:
        head.append(b"Connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class _Connection(asyncio.Protocol):
    """One client connection: HTTP/1.1 requests one after the other (pipelined ones too)."""

    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.body_left = 0
        self.method = b""
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.body_left:
                # The body is counted and dropped as it arrives, never stored.
                taken = min(self.body_left, len(view))
                self.body_left -= taken
                self.counts.body_bytes += taken
                view = view[taken:]
                if not self.body_left:
                    self._answer()
                continue
            self.head += view
            view = memoryview(b"")
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > MAX_HEAD_BYTES:
                    self._abort()
                return
            rest = bytes(self.head[end + 4 :])
            if not self._start_request(bytes(self.head[:end])):
                return
            self.head.clear()
            view = memoryview(rest)
            if not self.body_left:
                self._answer()

    def _start_request(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            self._abort()
            return False
        self.method = parts[0]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            self._send(_response(b"411 Length Required", b"text/plain", b"", close=True))
            return False
        try:
            self.body_left = int(headers.get(b"content-length", b"0"))
        except ValueError:
            self._abort()
            return False
        self.close_after = headers.get(b"connection", b"").lower() == b"close" or (
            parts[2] == b"HTTP/1.0" and headers.get(b"connection", b"").lower() != b"keep-alive"
        )
        return True

    def _answer(self) -> None:
        if self.method == b"POST":
            self.counts.requests += 1
            reply = _response(b"200 OK", PROTOBUF, b"", close=self.close_after)
        else:
            stats = json.dumps(asdict(self.counts)).encode()
            reply = _response(b"200 OK", b"application/json", stats, close=self.close_after)
        self._send(reply)

    def _send(self, reply: bytes) -> None:
        if self.transport is None:
            return
        self.transport.write(reply)
        if self.close_after or not reply.startswith(b"HTTP/1.1 200"):
            self.transport.close()
            self.transport = None

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
            self.transport = None


async def serve(host: str, port: int, counts: Counts | None = None) -> asyncio.Server:
    """Start accepting on host:port; the server runs until closed."""
    counts = counts if counts is not None else Counts()
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Connection(counts), host, port)


def sink_process(port: int, logs_dir: Path) -> Process:
    """The sink as a process of its own on 127.0.0.1:`port`."""
    return Process(
        name="otlp-sink",
        argv=[sys.executable, "-m", "loupe.bench.sink", "--port", str(port)],
        ready_urls=(f"http://127.0.0.1:{port}/",),
        listens_on=(port,),
        logs_dir=logs_dir,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loupe.bench.sink",
        description="Accept OTLP/HTTP exports and discard them (answers 200, empty response).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    args = parser.parse_args(argv)

    async def run() -> None:
        server = await serve(args.host, args.port)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
