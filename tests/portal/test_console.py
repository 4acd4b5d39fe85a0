"""loupe's console, page by page, against a monitor and a Jaeger answering from memory in
their APIs' shapes (tests/support/console_fakes.py). The real ones are in
tests/e2e/test_console.py."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from loupe.access import AccessSettings
from loupe.config import Settings
from loupe.orders.lifecycle import HAPPY_PATH
from loupe.portal.app import create_app
from loupe.portal.settings import PortalSettings
from loupe.stack.gateway import GatewaySettings
from loupe.stack.up import access_environment
from tests.support.console_fakes import (
    JAEGER,
    MONITOR,
    FakeBackends,
    closed_order,
    finding,
    incident,
    iso,
    order_with_lost_moves,
)
from tests.support.oidc import CLIENT, ISSUER, FakeProvider, token

CONSOLE = "http://console.test"
DEVOPS = {"Authorization": f"Bearer {token()}"}
DEVELOPER = {"Authorization": f"Bearer {token(groups=['developers'])}"}


@pytest.fixture
def backends() -> FakeBackends:
    now = datetime.now(UTC)
    fake = FakeBackends()
    fake.findings = [
        finding(f"order-{i}", now - timedelta(seconds=40 + i), incident_id=1) for i in range(3)
    ] + [
        finding(
            "order-poison",
            now - timedelta(minutes=5),
            state="broken",
            service="crm-api",
            where="process loupe.orders",
            incident_id=2,
            evidence="dead-lettered: poison message",
        )
    ]
    journey, traces = closed_order("order-closed", now - timedelta(minutes=10))
    fake.journeys["order-closed"] = journey
    fake.traces["order-closed"] = traces
    fake.incidents = [
        incident(1, now - timedelta(seconds=60)),
        incident(3, now - timedelta(hours=2), resolved_after=90.0),
        incident(4, now - timedelta(hours=3), resolved_after=30.0),
    ]
    return fake


def _figures(html: str) -> dict[str, str]:
    """The incidents page's tiles of figures: median, then mean and count, by what they time."""
    tiles = re.findall(
        r'data-figures="(\w+)"><div class="n">([^<]*)</div>'
        r'.*?<div class="muted small">([^<]*)</div>',
        html,
        re.S,
    )
    return {name: f"{median} | {rest}" for name, median, rest in tiles}


@pytest.fixture
async def console(backends: FakeBackends, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = PortalSettings(
        monitor_url=MONITOR,
        jaeger_query_url=JAEGER,
        access=AccessSettings(issuer=ISSUER, client_id=CLIENT),
        base=Settings(
            console_url=CONSOLE,
            data_dir=tmp_path,
            # Nothing listens here: the dead-letters page says so instead of failing.
            management_url="http://127.0.0.1:9",
        ),
    )
    app = create_app(
        settings, FakeProvider().verifier(), transport=httpx.MockTransport(backends.handler)
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=CONSOLE) as client:
        yield client


def _places(html: str) -> list[str]:
    return re.findall(r'data-place="([^"]+)"', html)


async def test_now_groups_findings_by_place_oldest_first(
    console: httpx.AsyncClient, backends: FakeBackends
) -> None:
    page = await console.get("/", headers=DEVELOPER)
    assert page.status_code == 200
    assert _places(page.text) == [
        "broken|crm-api|process loupe.orders",
        "stuck|mes-api|queue mes.order-submitted",
    ]
    assert 'data-count="stuck">3<' in page.text and 'data-count="broken">1<' in page.text
    # The oldest order of each place is its example, one click from its page and its trace.
    assert 'href="/orders/order-2"' in page.text
    assert 'href="/orders/order-poison"' in page.text
    trace_id = backends.findings[2]["trace_id"]
    assert f'href="/jaeger/trace/{trace_id}"' in page.text
    assert 'href="/incidents/1"' in page.text and 'href="/incidents/2"' in page.text
    assert "0 consumer(s)" in page.text
    # The monitor is asked with the person's own token: it checks the role itself.
    asked = [r for r in backends.requests if str(r.url).startswith(MONITOR)]
    assert asked and all(r.headers["authorization"] == DEVELOPER["Authorization"] for r in asked)


async def test_now_shows_unroutable_messages_as_a_place_of_their_own(
    console: httpx.AsyncClient, backends: FakeBackends
) -> None:
    assert 'data-count="unroutable"' not in (await console.get("/", headers=DEVELOPER)).text
    backends.findings.append(
        finding(
            None,
            datetime.now(UTC) - timedelta(hours=1),
            state="unroutable",
            service="partner-gateway",
            where="exchange loupe.orders, routing key ordr.shipped",
            incident_id=5,
            evidence="1 message published by partner-gateway to exchange loupe.orders with"
            " routing key ordr.shipped: no queue is bound to it; kept in loupe.unroutable",
        )
    )
    page = await console.get("/", headers=DEVELOPER)
    assert _places(page.text)[0] == (
        "unroutable|partner-gateway|exchange loupe.orders, routing key ordr.shipped"
    )
    assert 'data-count="unroutable">1<' in page.text
    assert 'class="badge unroutable"' in page.text and "routing key ordr.shipped" in page.text


@pytest.mark.parametrize(
    ("down", "path", "named", "still_shown"),
    [
        # The monitor still answers: its findings (their places) are shown.
        ("rabbitmq", "/now/panel", "RabbitMQ&#39;s management API", r'data-place="[^"]+"'),
        # The monitor still has the order's journey.
        ("jaeger", "/orders/order-closed", "Jaeger&#39;s query API", r'data-move="CLOSED"'),
    ],
    ids=["rabbitmq-down", "jaeger-down"],
)
async def test_a_page_says_which_backend_cannot_be_reached_and_shows_the_rest(
    console: httpx.AsyncClient,
    backends: FakeBackends,
    down: str,
    path: str,
    named: str,
    still_shown: str,
) -> None:
    backends.down = {down}
    page = await console.get(path, headers=DEVELOPER)
    assert page.status_code == 200
    assert named in page.text and "cannot be reached" in page.text
    assert re.search(still_shown, page.text), still_shown


async def test_now_says_when_the_monitor_cannot_be_read(
    console: httpx.AsyncClient, backends: FakeBackends
) -> None:
    backends.down = {"monitor"}
    panel = await console.get("/now/panel", headers=DEVELOPER)
    assert panel.status_code == 503, "the page keeps its last data, marked out of date"
    assert "The order-flow monitor cannot be read" in panel.text
    assert _places(panel.text) == [], "nothing is passed off as current"
    page = await console.get("/", headers=DEVELOPER)
    assert page.status_code == 200 and "cannot be read" in page.text


async def test_a_closed_order_has_its_journey_and_every_trace_stitched(
    console: httpx.AsyncClient,
) -> None:
    page = await console.get("/orders/order-closed", headers=DEVELOPER)
    assert page.status_code == 200
    html = page.text
    assert re.findall(r'data-move="([A-Z_]+)"', html) == [s.value for s in HAPPY_PATH]
    bands = re.findall(r'class="band-head" id="trace-([0-9a-f]+)"', html)
    assert len(bands) == 7 and len(set(bands)) == 7
    for trace_id in bands:
        assert f'href="/jaeger/trace/{trace_id}"' in html
    # Each person's step is linked to the step before: six arcs between seven traces.
    assert html.count('marker-end="url(#arrow)"') == 6
    assert ">dead-lettered<" in html and ">retry 2<" in html
    assert "1 error" in html
    assert "29 spans" in html


async def test_an_unknown_order_is_404_with_words(console: httpx.AsyncClient) -> None:
    page = await console.get("/orders/no-such-order", headers=DEVELOPER)
    assert page.status_code == 404
    assert "No span of order" in page.text and "no-such-order" in page.text


async def test_search_takes_an_order_id_or_a_trace_id(
    console: httpx.AsyncClient, backends: FakeBackends
) -> None:
    by_order = await console.get("/search", params={"q": " order-closed "}, headers=DEVELOPER)
    assert (by_order.status_code, by_order.headers["location"]) == (303, "/orders/order-closed")
    trace_id = backends.traces["order-closed"][3]["traceID"]
    by_trace = await console.get("/search", params={"q": trace_id.upper()}, headers=DEVELOPER)
    assert by_trace.status_code == 303
    assert by_trace.headers["location"] == f"/orders/order-closed#trace-{trace_id}"
    odd = await console.get("/search", params={"q": "a/b?c"}, headers=DEVELOPER)
    assert odd.headers["location"] == "/orders/a%2Fb%3Fc"


async def test_incidents_page_has_figures_charts_and_uptime(console: httpx.AsyncClient) -> None:
    page = await console.get("/incidents", params={"window": "24h"}, headers=DEVELOPER)
    assert page.status_code == 200
    assert re.findall(r'data-incident="(\d+)"', page.text) == ["1", "3", "4"]
    assert page.text.count('<rect class="bar"') == 2, "one bar per period with a resolution"
    assert re.findall(r'data-service="([a-z-]+)"', page.text) == ["crm-api", "mes-api", "shop-api"]
    assert "98.50%" in page.text
    for window in ("1h", "7d"):
        assert (await console.get(f"/incidents?window={window}", headers=DEVELOPER)).is_success
    wrong = await console.get("/incidents?window=forever", headers=DEVELOPER)
    assert wrong.status_code == 422


async def test_developers_read_and_devops_act_only_from_the_console(
    console: httpx.AsyncClient, tmp_path: Path
) -> None:
    as_developer = await console.get("/incidents/1", headers=DEVELOPER)
    assert as_developer.status_code == 200 and "data-action" not in as_developer.text
    as_devops = await console.get("/incidents/1", headers=DEVOPS)
    assert 'data-action="/api/incidents/1/acknowledge"' in as_devops.text
    csrf = re.search(r'<meta name="loupe-csrf" content="([0-9a-f]+)">', as_devops.text)
    assert csrf is not None
    good = {**DEVOPS, "X-Loupe-Csrf": csrf.group(1), "Origin": CONSOLE}

    path = "/api/incidents/1/acknowledge"
    refused = await console.post(path, headers={**DEVELOPER, "X-Loupe-Csrf": "x"})
    assert refused.status_code == 403 and refused.json()["needs_group"] == ["devops"]
    no_token = await console.post(path, headers={**DEVOPS, "Origin": CONSOLE})
    assert no_token.status_code == 403 and "anti-forgery token" in no_token.json()["detail"]
    elsewhere = await console.post(path, headers={**good, "Origin": "http://evil.example"})
    assert elsewhere.status_code == 403 and "evil.example" in elsewhere.json()["detail"]
    assert not (tmp_path / "logs" / "actions.jsonl").exists(), "refused actions changed nothing"

    done = await console.post(path, headers=good)
    assert done.status_code == 200, done.text
    assert done.json()["acknowledged_by"] == "devops@example.com"
    (line,) = (tmp_path / "logs" / "actions.jsonl").read_text().splitlines()
    audit = json.loads(line)
    assert (audit["user"], audit["action"], audit["target"], audit["outcome"]) == (
        "devops@example.com",
        "acknowledge incident",
        {"incident_id": 1},
        "acknowledged",
    )
    missing = await console.post("/api/incidents/999/acknowledge", headers=good)
    assert missing.status_code == 404


async def test_devops_may_dismiss_each_open_finding_of_an_incident(
    console: httpx.AsyncClient, backends: FakeBackends
) -> None:
    held = [f for f in backends.findings if f["incident_id"] == 1]
    held[0] |= {"cleared_at": iso(datetime.now(UTC)), "cleared_reason": "dismissed by x: test"}
    as_devops = await console.get("/incidents/1", headers=DEVOPS)
    buttons = re.findall(r'data-action="/api/findings/(\d+)/dismiss" data-prompt="', as_devops.text)
    assert buttons == [str(f["id"]) for f in held[1:]]
    assert "dismissed by x: test" in as_devops.text
    as_developer = await console.get("/incidents/1", headers=DEVELOPER)
    assert "/dismiss" not in as_developer.text
    assert "dismissed by x: test" in as_developer.text


async def test_requeue_names_what_it_acts_on(console: httpx.AsyncClient) -> None:
    page = await console.get("/dead-letters", headers=DEVOPS)
    assert page.status_code == 200 and "cannot be read" in page.text
    csrf = re.search(r'name="loupe-csrf" content="([0-9a-f]+)"', page.text)
    assert csrf is not None
    headers = {**DEVOPS, "X-Loupe-Csrf": csrf.group(1)}
    for body in ({}, {"order_id": "o", "message_id": "m"}):
        response = await console.post("/api/dead-letters/requeue", headers=headers, json=body)
        assert response.status_code == 422, body


async def test_no_page_shows_what_the_backends_do_not_send(console: httpx.AsyncClient) -> None:
    """The console shows ids, statuses, services and queues only; it has no other source."""
    for path in ("/", "/orders/order-closed", "/incidents", "/incidents/1"):
        html = (await console.get(path, headers=DEVOPS)).text
        emails = set(re.findall(r"[\w.+-]+@[\w-]+\.[\w.]+", html))
        assert emails <= {"devops@example.com"}, (path, emails)


def test_settings_from_env_with_their_documented_defaults() -> None:
    assert PortalSettings.from_env({}) == PortalSettings()
    settings = PortalSettings.from_env(
        {
            "LOUPE_CONSOLE_URL": "https://loupe.example.org/",
            "LOUPE_MONITOR_URL": "http://127.0.0.1:9191/",
            "LOUPE_JAEGER_QUERY_URL": "http://127.0.0.1:26686/jaeger/",
            "LOUPE_PORTAL_ANTIFORGERY_KEY": "k",
            "LOUPE_DATA_DIR": "/var/lib/loupe",
        }
    )
    assert settings.console_url == "https://loupe.example.org"
    assert settings.monitor_url == "http://127.0.0.1:9191"
    assert settings.jaeger_query_url == "http://127.0.0.1:26686/jaeger"
    assert settings.antiforgery_key == "k"
    assert settings.actions_log == Path("/var/lib/loupe/logs/actions.jsonl")


def test_loupe_up_points_links_at_the_gateway_unless_told_otherwise() -> None:
    gateway = GatewaySettings(address="127.0.0.1:14180")
    assert access_environment(gateway, {})["LOUPE_CONSOLE_URL"] == "http://127.0.0.1:14180"
    told = {"LOUPE_CONSOLE_URL": "https://loupe.example.org"}
    assert access_environment(gateway, told)["LOUPE_CONSOLE_URL"] == "https://loupe.example.org"


async def test_the_figures_show_the_median_and_the_count_beside_the_mean(
    console: httpx.AsyncClient, backends: FakeBackends
) -> None:
    page = await console.get("/incidents", params={"window": "24h"}, headers=DEVELOPER)
    assert _figures(page.text) == {
        "detect": "12 s | mean 12 s · over 3 incidents",
        "resolve": "60 s | mean 60 s · over 2 incidents",
    }
    # A forged test order found after 10 min and resolved after 50: the medians stay put.
    now = datetime.now(UTC)
    backends.incidents.append(
        incident(5, now - timedelta(hours=1), resolved_after=3000.0, time_to_detect_seconds=600.0)
    )
    page = await console.get("/incidents", params={"window": "24h"}, headers=DEVELOPER)
    assert _figures(page.text) == {
        "detect": "12 s | mean 3 min · over 4 incidents",
        "resolve": "90 s | mean 17 min · over 3 incidents",
    }
    # Dismissed, it leaves the figures (the monitor leaves it out; the page shows its figures).
    backends.incidents[-1]["dismissed"] = True
    page = await console.get("/incidents", params={"window": "24h"}, headers=DEVELOPER)
    assert _figures(page.text)["resolve"] == "60 s | mean 60 s · over 2 incidents"
    backends.incidents = []
    page = await console.get("/incidents", params={"window": "24h"}, headers=DEVELOPER)
    assert _figures(page.text) == {"detect": "- | no incident", "resolve": "- | no incident"}


async def test_an_order_page_shows_the_statuses_it_passed_unseen_in_their_place(
    console: httpx.AsyncClient, backends: FakeBackends
) -> None:
    journey, traces = order_with_lost_moves("order-gap", datetime.now(UTC) - timedelta(minutes=9))
    backends.journeys["order-gap"], backends.traces["order-gap"] = journey, traces
    page = await console.get("/orders/order-gap", headers=DEVELOPER)
    assert page.status_code == 200
    rows_shown = re.findall(r'data-(move|not-seen)="([A-Z_]+)"', page.text)
    assert rows_shown == [
        ("move", "SUBMITTED"),
        ("not-seen", "PRICE_CALCULATED"),
        ("not-seen", "MANUFACTURING_APPROVED"),
        ("move", "MANUFACTURING_STARTED"),
        ("move", "MANUFACTURING_COMPLETED"),
        ("move", "SHIPPED"),
        ("move", "CLOSED"),
    ]
    assert page.text.count(">not seen<") == 2
    assert "on its way to MANUFACTURING_STARTED" in page.text
    assert len(re.findall(r'class="band-head"', page.text)) == 5, "the traces that did arrive"
    # A journey with every move seen has no such row.
    whole = await console.get("/orders/order-closed", headers=DEVELOPER)
    assert "data-not-seen" not in whole.text
