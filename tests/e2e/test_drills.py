"""The fault drills of `make drills`, run by `make test` too: one `loupe up` with its actors,
each fault in turn (RabbitMQ stopped and blocked, PostgreSQL restarted, each process killed,
Jaeger and the monitor frozen, the whole stack restarted), each audited against the services'
databases. They stop the shared RabbitMQ and PostgreSQL for a while, as the drills do.

`-m "not drills"` leaves them out (e.g. while `make run` uses the same broker)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rich.console import Console

from loupe.drills.faults import Fault, all_faults
from loupe.drills.run import drill, running_loupe
from loupe.drills.stack import LoupeUp
from loupe.monitor.models import FindingKind

pytestmark = [pytest.mark.e2e, pytest.mark.drills]


@pytest.fixture(scope="module")
def loupe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoupeUp]:
    with running_loupe(tmp_path_factory.mktemp("drills")) as running:
        yield running


@pytest.mark.parametrize("fault", all_faults(), ids=lambda fault: fault.name)
def test_no_order_is_lost_or_ghosted_and_no_finding_is_wrong(loupe: LoupeUp, fault: Fault) -> None:
    result = drill(loupe, fault, Console(quiet=True))
    assert result.lost == 0, result.row()
    assert result.ghosts == 0, result.row()
    assert result.contradicted == [], result.row()
    if fault.blinds_monitor:
        # The monitor heard nothing: it says so, and reports no order stuck for it.
        assert result.incident_kinds == {FindingKind.TELEMETRY_GAP}, result.row()
    # Every span the services' exporters sent reached the monitor (a kill -9 loses only what
    # the killed process had not sent yet, which no counter can see).
    assert (result.spans.lost, result.spans.unreceived) == (0, []), result.row()
    assert result.answered_500 == 0, "only a refusal by design (503) may answer an order"
    # Settled: the outboxes drained after the fault (while the actors run, an event may sit
    # there for milliseconds at any later moment, so the count at the audit proves nothing).
    assert result.settled is not None, result.row()
    # (While the shop itself is down, nothing can be submitted; the customer keeps trying.)
    assert result.requests > 0, "the drill's customer kept ordering"
    if fault.broker_only:
        assert (result.answered_5xx, result.unanswered) == (0, 0), result.row()
        assert result.submitted > 0
