"""The public edge: a caller's trace context is continued only from a trusted client; anyone
else's request starts a new, sampled trace whose server span links to what the caller sent."""

from __future__ import annotations

import ipaddress

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import baggage
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, TraceFlags

from loupe.environment import networks
from loupe.service.http import instrumented
from loupe.telemetry.attributes import LINK_REASON, TRACE_CONTEXT_NOTE, UNTRUSTED_CALLER
from loupe.telemetry.edge import (
    MALFORMED_NOTE,
    PROOF_HEADER,
    TRUSTED_CLIENTS,
    UNTRUSTED_NOTE,
    TraceKey,
)

CALLER_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLER_SPAN = 0x00F067AA0BA902B7
UNSAMPLED = f"00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-00"
SAMPLED = f"00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-01"
STRANGER = ("203.0.113.7", 40000)
SERVICE = ("10.1.2.3", 40000)
TRUSTED = (ipaddress.ip_network("10.1.0.0/16"),)


KEY = TraceKey(b"k" * 32)


async def served(
    client: tuple[str, int], headers: dict[str, str]
) -> tuple[list[ReadableSpan], dict[str, object]]:
    """One POST from `client` to an instrumented app; its spans and what the route saw."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = FastAPI()
    seen: dict[str, object] = {}

    @app.post("/orders")
    async def place() -> dict[str, str]:
        seen["baggage"] = dict(baggage.get_all())
        return {}

    asgi = instrumented(app, trusted=TRUSTED, key=KEY, tracer_provider=provider)
    transport = httpx.ASGITransport(app=asgi, client=client)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        response = await http.post("/orders", headers=headers)
    assert response.status_code == 200
    server = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    return server, seen


async def test_an_untrusted_caller_with_sampling_off_is_traced_in_a_new_trace_linked_to_it() -> (
    None
):
    spans, seen = await served(STRANGER, {"traceparent": UNSAMPLED, "baggage": "tenant=evil"})
    [span] = spans  # recorded, although the caller said "not sampled"
    assert span.context.trace_flags & TraceFlags.SAMPLED
    assert span.context.trace_id != CALLER_TRACE
    assert span.parent is None
    [link] = span.links
    assert (link.context.trace_id, link.context.span_id) == (CALLER_TRACE, CALLER_SPAN)
    assert link.attributes == {LINK_REASON: UNTRUSTED_CALLER}
    assert span.attributes is not None
    assert span.attributes[TRACE_CONTEXT_NOTE] == UNTRUSTED_NOTE
    assert seen["baggage"] == {}, "a stranger's baggage must not reach the route"


async def test_an_untrusted_caller_cannot_graft_its_span_onto_another_trace() -> None:
    spans, _ = await served(STRANGER, {"traceparent": SAMPLED})
    [span] = spans
    assert span.context.trace_id != CALLER_TRACE
    assert span.parent is None


async def test_a_trusted_client_continues_its_trace() -> None:
    spans, seen = await served(SERVICE, {"traceparent": SAMPLED, "baggage": "step=pricing"})
    [span] = spans
    assert span.context.trace_id == CALLER_TRACE
    assert span.parent is not None and span.parent.span_id == CALLER_SPAN
    assert not span.links
    assert span.attributes is not None and TRACE_CONTEXT_NOTE not in span.attributes
    assert seen["baggage"] == {"step": "pricing"}


async def test_a_trusted_client_may_switch_sampling_off() -> None:
    spans, _ = await served(SERVICE, {"traceparent": UNSAMPLED})
    assert spans == []


async def test_a_request_loupes_own_service_vouches_for_continues_its_trace() -> None:
    # From 127.0.0.1 like any customer, but with the proof only a service can make.
    proof = KEY.proof(CALLER_TRACE)
    [span] = (await served(STRANGER, {"traceparent": SAMPLED, PROOF_HEADER: proof}))[0]
    assert span.context.trace_id == CALLER_TRACE
    assert span.parent is not None and span.parent.span_id == CALLER_SPAN


@pytest.mark.parametrize(
    "proof",
    [
        KEY.proof(CALLER_TRACE + 1),  # a real proof, of another trace
        TraceKey(b"x" * 32).proof(CALLER_TRACE),  # another installation's key
        "0" * 64,
        "",
    ],
)
async def test_a_proof_for_another_trace_or_under_another_key_vouches_for_nothing(
    proof: str,
) -> None:
    [span] = (await served(STRANGER, {"traceparent": SAMPLED, PROOF_HEADER: proof}))[0]
    assert span.context.trace_id != CALLER_TRACE and span.parent is None
    assert [link.context.trace_id for link in span.links] == [CALLER_TRACE]


async def test_a_services_client_vouches_for_the_trace_it_is_in() -> None:
    tracer = TracerProvider().get_tracer(__name__)
    request = httpx.Request("GET", "http://127.0.0.1:8081/models/x")
    await KEY.sign(request)
    assert PROOF_HEADER not in request.headers, "outside a span there is nothing to vouch for"
    with tracer.start_as_current_span("price order") as span:
        await KEY.sign(request)
    assert request.headers[PROOF_HEADER] == KEY.proof(span.get_span_context().trace_id)


@pytest.mark.parametrize("value", ["garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"])
async def test_a_malformed_traceparent_from_a_stranger_starts_a_new_trace_with_a_note(
    value: str,
) -> None:
    [span] = (await served(STRANGER, {"traceparent": value}))[0]
    assert span.parent is None and not span.links
    assert span.attributes is not None
    assert span.attributes[TRACE_CONTEXT_NOTE] == MALFORMED_NOTE


async def test_a_request_without_trace_context_gets_no_note() -> None:
    [span] = (await served(STRANGER, {}))[0]
    assert span.parent is None and not span.links
    assert span.attributes is not None and TRACE_CONTEXT_NOTE not in span.attributes


def test_nobody_is_trusted_by_default_and_the_setting_takes_addresses_and_networks() -> None:
    assert TRUSTED_CLIENTS.read({}) == ()
    read = TRUSTED_CLIENTS.read({TRUSTED_CLIENTS.name: "10.1.0.0/16, 192.0.2.5,::1"})
    assert read == networks("10.1.0.0/16,192.0.2.5/32,::1/128", TRUSTED_CLIENTS.name)
    with pytest.raises(ValueError, match=r"LOUPE_TRACE_TRUSTED_CLIENTS.*'shop\.example'"):
        TRUSTED_CLIENTS.read({TRUSTED_CLIENTS.name: "10.0.0.1,shop.example"})
