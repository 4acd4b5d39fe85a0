"""Which spans are recorded: the sampler from OTEL_TRACES_SAMPLER, minus transaction control.

The asyncpg instrumentation records `BEGIN;` and `COMMIT;` as spans of their own. Every
message a service consumes runs in a transaction, so they are about a fifth of all spans while
saying little the statements between them do not; they are left out unless
LOUPE_TRACE_TRANSACTION_CONTROL=true.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from loupe.environment import Variable, flag

TRACE_TRANSACTION_CONTROL = Variable(
    "LOUPE_TRACE_TRANSACTION_CONTROL",
    False,
    "`true` also records `BEGIN;`/`COMMIT;`/`ROLLBACK;` spans"
    " (see [OpenTelemetry](#opentelemetry))",
    flag,
    shown="`false`",
)

TRANSACTION_CONTROL = frozenset({"BEGIN;", "COMMIT;", "ROLLBACK;", "BEGIN", "COMMIT", "ROLLBACK"})


class SkipTransactionControl(Sampler):
    def __init__(self, inner: Sampler) -> None:
        self._inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if name in TRANSACTION_CONTROL:
            return SamplingResult(Decision.DROP)
        return self._inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"SkipTransactionControl{{{self._inner.get_description()}}}"


def configured_sampler() -> Sampler:
    from opentelemetry.sdk.trace.sampling import _get_from_env_or_default

    inner = _get_from_env_or_default()
    if TRACE_TRANSACTION_CONTROL.read():
        return inner
    return SkipTransactionControl(inner)
