"""End to end: the monitor's OTLP intake as a process, with Jaeger forwarding to it as `loupe up`
runs them (the token generated into a secrets folder, the monitor reading it from there,
Jaeger sending it from its environment). Without the token or with another: 401. Bombs:
413, while `/healthz` answers within a second throughout."""

from __future__ import annotations

import gzip
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from loupe.bench.measure import metric_sum
from loupe.stack.components import JaegerPorts, jaeger_process, monitor_process
from loupe.stack.gateway import Secrets
from loupe.stack.sandbox import Sandbox
from loupe.stack.supervisor import Stack
from loupe.telemetry.attributes import ORDER_ID
from tests.support.otlp_requests import delimited
from tests.support.otlp_spans import Spans, ago, otlp

pytestmark = pytest.mark.e2e

PROTOBUF = {"Content-Type": "application/x-protobuf"}
MIB = 1024 * 1024
CAP = 16 * MIB  # LOUPE_MONITOR_INTAKE_MAX_MIB's default


@dataclass
class Intake:
    url: str
    token: str
    jaeger: JaegerPorts

    @property
    def signed(self) -> dict[str, str]:
        return {**PROTOBUF, "Authorization": f"Bearer {self.token}"}

    def received(self, service: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10, trust_env=False).text
        return metric_sum(text, "loupe_monitor_spans_received_total", {"service": service})


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Intake]:
    root = tmp_path_factory.mktemp("intake")
    with Sandbox(root) as sandbox:
        keys = Secrets.ensure(root / "secrets", {"LOUPE_DEMO_PASSWORD": "unused"})
        jaeger = JaegerPorts.pick_free()
        stack = Stack(
            [
                monitor_process(
                    sandbox.env | keys.monitor_env(),
                    otlp_endpoint=jaeger.otlp_http_url,
                    logs_dir=sandbox.logs,
                ),
                jaeger_process(
                    "memory",
                    jaeger,
                    logs_dir=sandbox.logs,
                    monitor_endpoint=sandbox.monitor_url,
                    monitor_token=keys.monitor_intake_token,
                ),
            ]
        )
        with stack:
            yield Intake(sandbox.monitor_url, keys.monitor_intake_token, jaeger)


def test_without_the_token_or_with_another_the_intake_answers_401(intake: Intake) -> None:
    body = otlp([Spans().happy_move(0, f"o-{uuid.uuid4().hex[:8]}", ago(1))])
    for headers in (
        PROTOBUF,
        {**PROTOBUF, "Authorization": f"Bearer {secrets.token_urlsafe(32)}"},
        {**PROTOBUF, "Authorization": f"Bearer {intake.token[:-1]}"},
        {**PROTOBUF, "Authorization": f"Basic {intake.token}"},
    ):
        response = httpx.post(f"{intake.url}/v1/traces", content=body, headers=headers)
        assert response.status_code == 401, headers
    assert intake.received("shop-api") == 0
    signed = httpx.post(f"{intake.url}/v1/traces", content=body, headers=intake.signed)
    assert signed.status_code == 200, signed.text
    assert intake.received("shop-api") == 1


def test_jaeger_forwards_to_the_monitor_with_the_token(intake: Intake) -> None:
    service = f"probe-{uuid.uuid4().hex[:8]}"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=f"{intake.jaeger.otlp_http_url}/v1/traces", timeout=10)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("tests").start_as_current_span("with-order") as span:
        span.set_attribute(ORDER_ID, str(uuid.uuid4()))
    provider.shutdown()
    deadline = time.monotonic() + 30
    while intake.received(service) < 1:
        assert time.monotonic() < deadline, "Jaeger's forwarding did not reach the monitor"
        time.sleep(0.2)


# -- bombs -------------------------------------------------------------------------------------


# 4 MiB of empty spans: 2 million messages, which protobuf would parse in one call holding the
# GIL, into about 350 MB.
EMPTY_SPANS = delimited(1, delimited(2, delimited(2, b"") * (2 * MIB)))


@dataclass
class Pulse:
    """/healthz, asked every 50 ms from a thread of its own while the bombs go off."""

    url: str
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=10, trust_env=False) as client:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    status = client.get(f"{self.url}/healthz").status_code
                except httpx.HTTPError as exc:
                    status, detail = 0, repr(exc)
                else:
                    detail = f"HTTP {status}"
                self.latencies.append(time.monotonic() - began)
                if status != 200:
                    self.failures.append(detail)
                self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()


CUT_OFF = 0
"""What `_post` reports when the monitor closed the connection while the body was still being
sent: how a refusal before the body is read looks to a client that insists on sending it."""


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=60, trust_env=False)
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        return CUT_OFF
    return response.status_code


def test_bombs_get_413_while_healthz_answers_within_a_second(intake: Intake) -> None:
    bombs = {
        # 64 MiB of zeros in 64 KiB: inflated to the cap, and no further.
        "gzip": (gzip.compress(bytes(64 * MIB), 9), {**intake.signed, "Content-Encoding": "gzip"}),
        "empty spans": (EMPTY_SPANS, intake.signed),
        "gzipped empty spans": (
            gzip.compress(EMPTY_SPANS, 9),
            {**intake.signed, "Content-Encoding": "gzip"},
        ),
        "too long": (bytes(CAP + 1), intake.signed),
    }
    pulse = Pulse(intake.url)
    beat = threading.Thread(target=pulse.run, daemon=True)
    beat.start()
    try:
        time.sleep(0.5)
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = {
                (name, round_): pool.submit(_post, f"{intake.url}/v1/traces", body, headers)
                for round_ in range(3)
                for name, (body, headers) in bombs.items()
            }
            statuses = {key: future.result() for key, future in answers.items()}
        time.sleep(0.5)
    finally:
        pulse.stop()
        beat.join(timeout=15)
    for (name, _), status in statuses.items():
        assert status == 413 or (name == "too long" and status == CUT_OFF), statuses
    assert not pulse.failures, pulse.failures[:5]
    assert len(pulse.latencies) >= 10
    assert max(pulse.latencies) < 1.0, sorted(pulse.latencies)[-5:]
    # Still taking spans.
    body = otlp([Spans().happy_move(0, f"o-{uuid.uuid4().hex[:8]}", ago(1))])
    assert (
        httpx.post(f"{intake.url}/v1/traces", content=body, headers=intake.signed).status_code
        == 200
    )


def test_the_real_monitor_refuses_a_host_it_does_not_know(intake: Intake) -> None:
    # DNS rebinding reaches the intake and the incidents' actions as much as any route.
    refused = httpx.get(
        f"{intake.url}/healthz", headers={"Host": "attacker.example"}, timeout=10, trust_env=False
    )
    assert refused.status_code == 400
    assert httpx.get(f"{intake.url}/healthz", timeout=10, trust_env=False).status_code == 200
