"""The public edge: whose trace context an HTTP server continues.

A request's `traceparent`, `tracestate` and `baggage` are chosen by whoever sends it. Taken
as they come, a caller could switch tracing off for an order (sampled flag 00: the server span
and everything the order sets off would go unrecorded under the parent-based sampler) or
graft its spans onto another trace. W3C Trace Context advises public endpoints to restart the
trace instead, so every app loupe serves does: unless the caller's address is one of
`LOUPE_TRACE_TRUSTED_CLIENTS`, the trace headers are taken off the request before the
OpenTelemetry middleware reads them, the server span is the root of a new trace (sampled by
the configured sampler, so always under the default), and it carries a span link to the
caller's span context, so whoever follows the caller's trace still finds it.

The address is the TCP peer's, never a header's: `serve` runs uvicorn without proxy headers,
so X-Forwarded-For cannot make a caller look trusted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Receive, Scope, Send

from loupe.environment import Network, Variable, networks
from loupe.telemetry.attributes import LINK_REASON, TRACE_CONTEXT_NOTE, UNTRUSTED_CALLER

# The W3C headers a caller sets; all three are dropped together (baggage from a stranger is
# no more trustworthy than its trace id).
_TRACE_HEADERS = (b"traceparent", b"tracestate", b"baggage")
# Where the caller's context waits in the ASGI scope for the server span to link to it.
_CALLER = "loupe.untrusted_caller"
UNTRUSTED_NOTE = "the caller is not a trusted client; started a new trace linked to its context"
MALFORMED_NOTE = "the caller sent a malformed traceparent; started a new trace"


TRUSTED_CLIENTS = Variable[tuple[Network, ...]](
    "LOUPE_TRACE_TRUSTED_CLIENTS",
    (),
    "comma-separated client addresses or networks (`10.1.0.0/16`) whose `traceparent`,"
    " `tracestate` and `baggage` the services, the portal and the monitor continue; any other"
    " caller's request starts a new trace, linked to the caller's context (docs/security.md)."
    " Nobody by default: on one host a customer and a service share 127.0.0.1",
    networks,
)


def _trusted(client: Any, trusted: Iterable[Network]) -> bool:
    if not client:
        return False
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return False
    return any(address in network for network in trusted)


def _caller_context(headers: Iterable[tuple[bytes, bytes]]) -> SpanContext | None:
    carrier = {
        key.decode("latin-1"): value.decode("latin-1")
        for key, value in headers
        if key in _TRACE_HEADERS[:2]
    }
    context = TraceContextTextMapPropagator().extract(carrier)
    span_context = trace.get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None


class UntrustedTraceContext:
    """ASGI middleware, outside the OpenTelemetry one: takes the trace headers off a request
    from an untrusted client and keeps what they named for `link_untrusted_caller`."""

    def __init__(self, app: ASGIApp, trusted: tuple[Network, ...] = ()) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not _trusted(
            scope.get("client"), self.trusted
        ):
            headers = scope.get("headers") or []
            kept = [(key, value) for key, value in headers if key.lower() not in _TRACE_HEADERS]
            if len(kept) != len(headers):
                sent_traceparent = any(key.lower() == b"traceparent" for key, _ in headers)
                scope = {
                    **scope,
                    "headers": kept,
                    _CALLER: (_caller_context(headers), sent_traceparent),
                }
        await self.app(scope, receive, send)


def link_untrusted_caller(span: trace.Span, scope: dict[str, Any]) -> None:
    """The server request hook: links the new trace's server span to the context an untrusted
    caller sent, and says why the trace starts here."""
    caller, sent_traceparent = scope.get(_CALLER, (None, False))
    if not span.is_recording():
        return
    if caller is not None:
        span.add_link(caller, {LINK_REASON: UNTRUSTED_CALLER})
        span.set_attribute(TRACE_CONTEXT_NOTE, UNTRUSTED_NOTE)
    elif sent_traceparent:
        span.set_attribute(TRACE_CONTEXT_NOTE, MALFORMED_NOTE)
