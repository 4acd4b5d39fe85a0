"""End to end: the order-flow monitor behind Jaeger's second pipeline, against the real
services, RabbitMQ and PostgreSQL, with the simulated workshop running.

The tests share one stack and build on each other in file order: a healthy run first, then
MES is frozen (SIGSTOP), the monitor restarted while it is, MES resumed, and a poison message.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from loupe.messaging.management import Management
from tests.support.integration import admin_amqp_url

from .gateway_support import API, sign_in
from .pipeline_support import wait_for
from .stack_support import FROZEN_DETECTION, SUBMITTED_SLO, Monitored, monitored_stack

pytestmark = pytest.mark.e2e

# "A healthy run of several minutes" (4 by default): many orders go all the way through.
HEALTHY_SECONDS = float(os.environ.get("LOUPE_E2E_HEALTHY_SECONDS", "240"))


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    with monitored_stack(tmp_path_factory.mktemp("monitor")) as running:
        yield running


def test_a_healthy_run_reports_nothing(monitored: Monitored) -> None:
    deadline = time.monotonic() + HEALTHY_SECONDS
    checks = 0
    while time.monotonic() < deadline:
        time.sleep(10)
        assert monitored.findings() == [], "a healthy pipeline must have no findings"
        checks += 1
    assert checks >= 3
    report = monitored.cli("incidents")
    assert report["incidents"] == [] and report["open"] == 0

    closed = monitored.query("SELECT order_id FROM orders WHERE status = 'CLOSED'")
    assert len(closed) >= 10, f"only {len(closed)} orders closed in {HEALTHY_SECONDS:.0f} s"
    journey = monitored.cli("journey", closed[0]["order_id"])
    statuses = [move["status"] for move in journey["transitions"]]
    assert statuses == [
        "SUBMITTED",
        "PRICE_CALCULATED",
        "MANUFACTURING_APPROVED",
        "MANUFACTURING_STARTED",
        "MANUFACTURING_COMPLETED",
        "SHIPPED",
        "CLOSED",
    ]
    for move in journey["transitions"]:
        assert move["at"] and move["service"] in ("shop-api", "mes-api", "crm-api")
        assert len(move["trace_id"]) == 32
    # Only what touches an order or failed crossed the filter: no database spans.
    sent = httpx.get(f"{monitored.env['LOUPE_MONITOR_URL']}/metrics", timeout=10).text
    assert "loupe_order_transition_duration_seconds_bucket" in sent
    assert monitored.uptime() == {"shop-api": True, "crm-api": True, "mes-api": True}


def _finding(monitored: Monitored, order_id: str) -> dict[str, Any] | None:
    rows = monitored.query(
        "SELECT * FROM findings WHERE order_id = $1 AND cleared_at IS NULL", order_id
    )
    return rows[0] if rows else None


def test_frozen_mes_leaves_orders_stuck_in_its_queue(monitored: Monitored) -> None:
    monitored.stack.signal_process("mes", signal.SIGSTOP)
    order_id = monitored.place_order()
    placed = time.monotonic()
    finding = wait_for(
        lambda: _finding(monitored, order_id),
        SUBMITTED_SLO + FROZEN_DETECTION,
        f"order {order_id} stuck",
    )
    took = time.monotonic() - placed
    assert took <= SUBMITTED_SLO + FROZEN_DETECTION
    assert finding["state"] == "stuck" and finding["status"] == "SUBMITTED"
    assert finding["service"] == "mes-api"
    assert finding["place"] == "queue mes.order-submitted"
    # RabbitMQ's figures: MES is connected (1 consumer) but holds its messages unacknowledged.
    assert "queue mes.order-submitted:" in finding["evidence"]
    assert "1 consumer(s)" in finding["evidence"]
    assert finding["trace_id"]
    monitored.frozen_order = order_id

    found = {f["order_id"]: f for f in monitored.findings()}
    assert set(found[order_id]) >= {
        "order_id",
        "state",
        "status",
        "since",
        "service",
        "where",
        "trace_id",
        "evidence",
        "last_step",
    }
    assert found[order_id]["last_step"]["service"] == "shop-api"
    for other in found.values():
        assert other["service"] == "mes-api", other
    incidents = monitored.cli("incidents", "--status", "open")["incidents"]
    assert [(i["state"], i["service"], i["where"]) for i in incidents].count(
        ("stuck", "mes-api", "queue mes.order-submitted")
    ) == 1


def test_restarting_the_monitor_keeps_journeys_and_open_incidents(monitored: Monitored) -> None:
    order_id = monitored.frozen_order
    assert order_id, "needs the frozen-MES test before it"
    before_incidents = monitored.cli("incidents", "--status", "open")["incidents"]
    before_journey = monitored.cli("journey", order_id)
    monitored.stack.stop_process("monitor")
    monitored.stack.start_process("monitor")
    time.sleep(2)  # a few detection ticks
    after_incidents = monitored.cli("incidents", "--status", "open")["incidents"]
    assert {i["id"] for i in before_incidents} <= {i["id"] for i in after_incidents}
    assert monitored.cli("journey", order_id)["transitions"] == before_journey["transitions"]
    assert _finding(monitored, order_id) is not None


def test_resumed_mes_moves_orders_on_and_the_incident_resolves(monitored: Monitored) -> None:
    order_id = monitored.frozen_order
    assert order_id, "needs the frozen-MES test before it"
    monitored.stack.signal_process("mes", signal.SIGCONT)

    def resolved() -> dict[str, Any] | None:
        for incident in monitored.cli("incidents", "--status", "resolved")["incidents"]:
            if (incident["state"], incident["where"]) == ("stuck", "queue mes.order-submitted"):
                return dict(incident)
        return None

    incident = wait_for(resolved, 90, "the stuck incident to resolve", every=2)
    assert incident["service"] == "mes-api"
    assert incident["time_to_resolve_seconds"] > SUBMITTED_SLO
    assert incident["orders"] >= 1
    report = monitored.cli("incidents")
    assert report["mttr_seconds"] is not None and report["mttr_seconds"] > 0
    assert _finding(monitored, order_id) is None
    journey = monitored.cli("journey", order_id)
    assert "PRICE_CALCULATED" in [m["status"] for m in journey["transitions"]]
    # The freeze shows in MES's availability, and only there.
    assert monitored.uptime() == {"shop-api": True, "crm-api": True, "mes-api": False}


def test_a_poison_message_is_broken_with_its_reason(monitored: Monitored) -> None:
    order_id = str(uuid.uuid4())

    # MES may still be working off what piled up while it was frozen; the poison message
    # would wait behind that backlog.
    management = Management("http://127.0.0.1:15672", admin_amqp_url(monitored.settings))

    async def backlog() -> int:
        stats = await management.queue_stats("mes.order-submitted")
        return stats.ready + stats.unacknowledged if stats else 0

    wait_for(lambda: asyncio.run(backlog()) == 0, 120, "MES to work off its backlog", every=1)
    monitored.publish_poison(order_id)
    # The views' copies may be found first (their dead letters, no status yet); MES fails the
    # order, and the finding follows it.
    finding = wait_for(
        lambda: (f := _finding(monitored, order_id)) and f["status"] == "FAILED" and f,
        30,
        "the poison message found",
    )
    assert finding["state"] == "broken"
    # MES dead-letters it and fails the order it names; the views dead-letter their copies.
    assert "poison message: field occurred_at is missing" in finding["evidence"]
    assert (finding["status"], finding["service"]) == ("FAILED", "mes-api")
    assert finding["place"] == "queue mes.order-submitted"
    assert finding["trace_id"]
    listed = {f["order_id"]: f for f in monitored.cli("stuck", "--state", "broken")["findings"]}
    assert listed[order_id]["state"] == "broken"


def test_the_api_behind_the_gateway_checks_the_role(monitored: Monitored) -> None:
    gateway = monitored.gateway
    base = f"{gateway.url}/monitor/api"
    with httpx.Client(trust_env=False, timeout=10) as client:
        assert client.get(f"{base}/findings", headers=API).status_code == 401
    # Straight to the monitor, forged identity headers are not an identity.
    forged = {"X-Forwarded-User": "devops", "X-Forwarded-Groups": "devops", **API}
    direct = httpx.get(
        f"{monitored.env['LOUPE_MONITOR_URL']}/monitor/api/findings", headers=forged, timeout=10
    )
    assert direct.status_code == 401

    with gateway.client() as client:
        assert sign_in(gateway, client, "developer@example.com", "/").status_code == 200
        found = client.get(f"{base}/findings", headers=API)
        assert found.status_code == 200, found.text
        broken = [f for f in found.json()["findings"] if f["status"] == "FAILED"]
        assert broken, found.json()
        order_id = broken[0]["order_id"]
        journey = client.get(f"{base}/orders/{order_id}/journey", headers=API)
        assert journey.status_code == 200 and journey.json()["order_id"] == order_id
        incidents = client.get(f"{base}/incidents", headers=API).json()
        assert incidents["mttr_seconds"] is not None
        uptime = client.get(f"{base}/uptime", headers=API).json()["services"]
        assert set(uptime) == {"shop-api", "crm-api", "mes-api"}
        incident_id = broken[0]["incident_id"]
        refused = client.post(f"{base}/incidents/{incident_id}/acknowledge", headers=API)
        assert refused.status_code == 403 and refused.json()["needs_group"] == ["devops"]

    with gateway.client() as client:
        assert sign_in(gateway, client, "devops@example.com", "/").status_code == 200
        # Another site's page cannot make a devops engineer's browser act.
        for elsewhere in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            forged = client.post(
                f"{base}/incidents/{incident_id}/acknowledge", headers={**API, **elsewhere}
            )
            assert forged.status_code == 403, forged.text
            assert forged.json()["detail"].startswith("refused: ")
        done = client.post(f"{base}/incidents/{incident_id}/acknowledge", headers=API)
        assert done.status_code == 200, done.text
        assert done.json()["acknowledged_by"] == "devops@example.com"
        # Its final orders are taken on: no longer listed.
        left = client.get(f"{base}/findings", headers=API).json()["findings"]
        assert order_id not in [f["order_id"] for f in left]

    with gateway.client() as client:
        response = sign_in(gateway, client, "guest@example.com", "/")
        assert response.status_code == 403
    lines = [e for e in gateway.audit() if e["kind"] == "request" and "/monitor/api/" in e["uri"]]
    assert {(e["user"], e["status"]) for e in lines} >= {
        ("developer@example.com", 200),
        ("developer@example.com", 403),
        ("devops@example.com", 200),
    }


def test_prometheus_metrics_tell_the_same_story(monitored: Monitored) -> None:
    text = httpx.get(f"{monitored.env['LOUPE_MONITOR_URL']}/metrics", timeout=10).text
    assert 'loupe_service_up{service="mes-api"} 1.0' in text
    assert "loupe_incidents_open" in text
    assert "loupe_mttr_seconds" in text
    assert 'loupe_orders_stuck{step="SUBMITTED"}' in text
