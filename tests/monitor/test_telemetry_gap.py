"""The monitor knows when it is blind: a service that sends heartbeats and goes silent while
its health probe passes is a telemetry gap (a finding and incident of its own, cleared when its
spans arrive again), and an order waiting on a service not heard from since the order's
deadline is not reported stuck until it is."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from loupe.monitor import detection
from loupe.monitor.models import FindingKind
from loupe.telemetry.attributes import HEARTBEAT
from tests.support.monitor import SLO, send
from tests.support.otlp_spans import Spans, ago

pytestmark = pytest.mark.integration

GAP = timedelta(seconds=30)


async def probed(pool: asyncpg.Pool, service: str, ok: bool) -> None:
    await pool.execute(
        "INSERT INTO health_samples (service, at, ok, detail)"
        " VALUES ($1, clock_timestamp(), $2, 'test')",
        service,
        ok,
    )


async def tick(pool: asyncpg.Pool) -> detection.TickResult:
    return await detection.tick(pool, SLO, None, telemetry_gap=GAP)


async def test_a_silent_service_whose_probe_passes_is_a_gap_until_it_is_heard_again(
    monitor_pool: asyncpg.Pool,
) -> None:
    made = Spans()
    await send(monitor_pool, [made.make("mes-api", HEARTBEAT, ago(40))])
    await probed(monitor_pool, "mes-api", True)

    result = await tick(monitor_pool)
    (finding,) = result.opened
    assert (finding.state, finding.service, finding.order_id) == (
        FindingKind.TELEMETRY_GAP,
        "mes-api",
        None,
    )
    assert finding.evidence.startswith("telemetry gap at mes-api since ")
    (incident,) = result.incidents_opened
    assert (await tick(monitor_pool)).opened == [], "reported once"

    await send(monitor_pool, [made.make("mes-api", HEARTBEAT, ago(1))])
    result = await tick(monitor_pool)
    assert result.cleared == 1
    (resolved,) = result.incidents_resolved
    assert resolved.id == incident.id


async def test_silence_counts_only_from_when_the_monitor_listens(
    monitor_pool: asyncpg.Pool,
) -> None:
    # Started (or continued after being frozen) 5 s ago: 40 s of silence before that are its
    # own deafness, not the service's.
    await send(monitor_pool, [Spans().make("mes-api", HEARTBEAT, ago(40))])
    await probed(monitor_pool, "mes-api", True)
    listening = await detection.tick(
        monitor_pool, SLO, None, telemetry_gap=GAP, listening_since=ago(5)
    )
    assert listening.opened == []


async def test_no_gap_for_a_service_that_is_down_or_never_sent_a_heartbeat(
    monitor_pool: asyncpg.Pool,
) -> None:
    made = Spans()
    # crm-api: spans, long ago, but never a heartbeat: it is never judged silent.
    await send(monitor_pool, [made.make("crm-api", "GET /orders", ago(90))])
    # mes-api beats, but its probe fails: it is down, which uptime reports, not blindness.
    await send(monitor_pool, [made.make("mes-api", HEARTBEAT, ago(90))])
    await probed(monitor_pool, "mes-api", False)
    assert (await tick(monitor_pool)).opened == []


async def test_an_order_waiting_on_a_service_not_heard_since_its_deadline_is_not_stuck_yet(
    monitor_pool: asyncpg.Pool,
) -> None:
    made = Spans()
    # SUBMITTED 40 s ago, MES has 30 s: due 10 s ago. MES was last heard 15 s ago, and the
    # shop 8 s ago (within the margin spans of two services may arrive apart): a move MES
    # made in time may still be on its way.
    await send(
        monitor_pool,
        [
            made.happy_move(0, "o-wait", ago(40)),
            made.make("mes-api", HEARTBEAT, ago(15)),
            made.make("shop-api", HEARTBEAT, ago(8)),
        ],
    )
    assert (await tick(monitor_pool)).opened == []

    # MES's heartbeat from after the deadline arrives, and no move came before it: stuck.
    await send(monitor_pool, [made.make("mes-api", HEARTBEAT, ago(2))])
    result = await tick(monitor_pool)
    assert [(f.order_id, f.state) for f in result.opened] == [("o-wait", FindingKind.STUCK)]


async def test_an_order_waiting_on_a_service_up_but_unheard_waits_while_others_are_heard(
    monitor_pool: asyncpg.Pool,
) -> None:
    made = Spans()
    # After an outage each service's backlog arrives in its own time: the shop's is in, MES's
    # not yet, and MES answers its probe. An order due 10 s ago waits; one due longer ago
    # than SILENCE_HELD_MAX (MES's exporter has given up what it held that long) is judged.
    held = detection.SILENCE_HELD_MAX.total_seconds()
    await send(
        monitor_pool,
        [
            made.happy_move(0, "o-behind", ago(40)),
            made.happy_move(0, "o-long-ago", ago(held + 40)),
            made.make("mes-api", HEARTBEAT, ago(held + 20)),
            made.make("shop-api", HEARTBEAT, ago(2)),
        ],
    )
    await probed(monitor_pool, "mes-api", True)
    result = await tick(monitor_pool)
    assert [(f.order_id, f.state) for f in result.opened if f.order_id] == [
        ("o-long-ago", FindingKind.STUCK)
    ]
    # And MES's silence is reported for what it is.
    assert [(f.service, f.state) for f in result.opened if not f.order_id] == [
        ("mes-api", FindingKind.TELEMETRY_GAP)
    ]


async def test_a_service_down_by_its_probes_does_not_hold_back_its_stuck_orders(
    monitor_pool: asyncpg.Pool,
) -> None:
    made = Spans()
    await send(
        monitor_pool,
        [made.happy_move(0, "o-down", ago(40)), made.make("mes-api", HEARTBEAT, ago(15))],
    )
    await probed(monitor_pool, "mes-api", True)
    # One probe that failed (timed out on a loaded machine) is not enough to call it down.
    await probed(monitor_pool, "mes-api", False)
    assert (await tick(monitor_pool)).opened == []

    await probed(monitor_pool, "mes-api", False)
    result = await tick(monitor_pool)
    assert [(f.order_id, f.state) for f in result.opened] == [("o-down", FindingKind.STUCK)]
