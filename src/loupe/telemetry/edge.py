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

loupe's own services call each other too (MES downloads a model from the shop), from the same
127.0.0.1 as any customer. They vouch for their trace context instead: each request carries
`x-loupe-trace-proof`, an HMAC of its trace id under a key only the account running loupe can
read (`.secrets/trace-context-key`, see `loupe.stack.gateway.trace_context_key`), and the
server continues a trace whose proof verifies. A proof vouches for one trace only, so even
a copied one grafts onto nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from typing import Any

import httpx
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
PROOF_HEADER = "x-loupe-trace-proof"
_PROOF = PROOF_HEADER.encode()
UNTRUSTED_NOTE = "the caller is not a trusted client; started a new trace linked to its context"
MALFORMED_NOTE = "the caller sent a malformed traceparent; started a new trace"


TRUSTED_CLIENTS = Variable[tuple[Network, ...]](
    "LOUPE_TRACE_TRUSTED_CLIENTS",
    (),
    "comma-separated client addresses or networks (`10.1.0.0/16`) whose `traceparent`,"
    " `tracestate` and `baggage` the services, the portal and the monitor continue; any other"
    " caller's request starts a new trace, linked to the caller's context (docs/security.md)."
    " Nobody by default: on one host a customer and a service share 127.0.0.1 (loupe's own"
    " services vouch for their calls to each other with `.secrets/trace-context-key`)",
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


class TraceKey:
    """The key loupe's services vouch for the trace context of their calls to each other
    with; one per installation, shared by its services."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def proof(self, trace_id: int) -> str:
        return hmac.new(self._key, f"{trace_id:032x}".encode(), hashlib.sha256).hexdigest()

    def vouches(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        """Whether the request's proof is this key's for the trace its traceparent names."""
        found = {key.lower(): value for key, value in headers if key.lower() in _VOUCHED}
        caller = _caller_context(found.items())
        sent = found.get(_PROOF, b"").decode("latin-1")
        return caller is not None and hmac.compare_digest(sent, self.proof(caller.trace_id))

    async def sign(self, request: httpx.Request) -> None:
        """An httpx request hook: the proof for the current trace, which is the trace the
        HTTP client span (made after this hook, in the same trace) sends on."""
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            request.headers[PROOF_HEADER] = self.proof(context.trace_id)


_VOUCHED = (b"traceparent", _PROOF)
_process_key: TraceKey | None = None


def use_process_key(key: TraceKey | None) -> None:
    """The key this process's HTTP server trusts and its clients vouch with (a service's, set
    once at start; the portal and the monitor have none)."""
    global _process_key
    _process_key = key


def process_key() -> TraceKey | None:
    return _process_key


async def vouch(request: httpx.Request) -> None:
    """An httpx request hook for calls to loupe's own services: the process's proof for the
    current trace, when it has a key."""
    if _process_key is not None:
        await _process_key.sign(request)


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

    def __init__(
        self, app: ASGIApp, trusted: tuple[Network, ...] = (), key: TraceKey | None = None
    ) -> None:
        self.app = app
        self.trusted = trusted
        self.key = key

    def _trusts(self, scope: Scope) -> bool:
        if _trusted(scope.get("client"), self.trusted):
            return True
        return self.key is not None and self.key.vouches(scope.get("headers") or [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self._trusts(scope):
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
