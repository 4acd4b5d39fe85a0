"""loupe's console in a real browser, through the real gateway and a real Dex sign-in, on the
whole stack with the simulated workshop running.

The tests share one stack and build on each other in file order: a closed order's page, then
MES frozen (the Now page finds it without a reload) and resumed, a poison message on the
dead-letters page, then the roles and their actions. Screenshots land in docs/images/, so the
README and docs/console.md show what the console really looks like.
"""

from __future__ import annotations

import json
import re
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from loupe.config import REPO_ROOT
from loupe.orders.lifecycle import HAPPY_PATH

from .browser_support import needs_chromium, sign_in_with_browser
from .pipeline_support import wait_for
from .stack_support import FROZEN_DETECTION, SUBMITTED_SLO, Monitored, monitored_stack

pytestmark = [pytest.mark.e2e, needs_chromium]

SCREENSHOTS = REPO_ROOT / "docs" / "images"
STATUSES = [status.value for status in HAPPY_PATH]
STUCK_AT_MES = "stuck|mes-api|queue mes.order-submitted"


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    with monitored_stack(tmp_path_factory.mktemp("console")) as running:
        yield running


# Every page a test looked at, for the personal-data check at the end.
SEEN: list[tuple[str, str]] = []


class Person:
    """One signed-in browser: a developer or devops."""

    def __init__(self, browser: Browser, console: Monitored, email: str) -> None:
        self.console = console
        self.context: BrowserContext = browser.new_context(viewport={"width": 1280, "height": 800})
        self.page: Page = self.context.new_page()
        sign_in_with_browser(self.page, console.gateway, email, "/")

    @property
    def url(self) -> str:
        return self.console.gateway.url

    def open(self, path: str) -> Page:
        self.page.goto(f"{self.url}{path}")
        self.keep()
        return self.page

    def keep(self) -> None:
        SEEN.append((self.page.url, self.page.content()))

    def csrf(self) -> str:
        token = self.page.get_attribute('meta[name="loupe-csrf"]', "content")
        assert token and re.fullmatch(r"[0-9a-f]{64}", token)
        return token

    def post(self, path: str, body: dict[str, Any] | None = None, **headers: str) -> Any:
        """An action as the browser would send it, with this person's session cookie."""
        return self.context.request.post(
            f"{self.url}{path}",
            data=json.dumps(body or {}),
            headers={"Content-Type": "application/json", **headers},
        )

    def shot(self, name: str, *, full_page: bool = False) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / name), full_page=full_page)

    def close(self) -> None:
        self.context.close()


@pytest.fixture(scope="module")
def developer(browser: Browser, console: Monitored) -> Iterator[Person]:
    person = Person(browser, console, "developer@example.com")
    yield person
    person.close()


@pytest.fixture(scope="module")
def devops(browser: Browser, console: Monitored) -> Iterator[Person]:
    person = Person(browser, console, "devops@example.com")
    yield person
    person.close()


def _jaeger_traces_of(console: Monitored, order_id: str) -> set[str]:
    found: set[str] = set()
    tags = json.dumps({"order.id": order_id})
    for service in ("shop-api", "mes-api", "crm-api"):
        answer = httpx.get(
            f"{console.jaeger.query_url}/api/traces",
            params={"service": service, "tags": tags, "limit": "100"},
            timeout=10,
        ).json()
        found |= {t["traceID"] for t in answer["data"] or []}
    return found


def test_a_closed_order_shows_its_seven_statuses_and_all_its_traces(
    console: Monitored, developer: Person
) -> None:
    def closed() -> str | None:
        rows = console.query(
            "SELECT order_id FROM orders WHERE status = 'CLOSED' ORDER BY status_at LIMIT 1"
        )
        return rows[0]["order_id"] if rows else None

    order_id = wait_for(closed, 120, "an order to be closed", every=2)
    journey = console.cli("journey", order_id)
    moved_in = {m["trace_id"] for m in journey["transitions"]} | {
        s["trace_id"] for m in journey["transitions"] for s in m["seen_by"]
    }
    # Jaeger has the spans a moment after the monitor; the page is asked once they are in.
    wait_for(lambda: moved_in <= _jaeger_traces_of(console, order_id), 30, "its traces in Jaeger")
    traces = _jaeger_traces_of(console, order_id)
    assert len(traces) >= 5, "a shop order takes several people's steps, each its own trace"

    page = developer.open("/")
    page.fill("input[name=q]", order_id)
    with page.expect_navigation(url=re.compile(rf".*/orders/{order_id}$")):
        page.press("input[name=q]", "Enter")
    developer.keep()
    moves = page.locator("tr[data-move]")
    assert [moves.nth(i).get_attribute("data-move") for i in range(moves.count())] == STATUSES
    bands = page.locator(".band-head")
    shown = {bands.nth(i).get_attribute("id").removeprefix("trace-") for i in range(bands.count())}
    assert shown == traces
    # People's steps are traces of their own, linked to the step before: arcs join them.
    assert page.locator("svg.arcs path[marker-end]").count() >= 4
    assert page.locator("span.badge.met").count() >= 1
    developer.shot("console-order.png", full_page=True)

    # One click from a band to the trace in Jaeger UI.
    with page.expect_navigation(url=re.compile(r".*/jaeger/trace/[0-9a-f]{32}")):
        page.locator(".band-head a").first.click()
    # Jaeger UI's own trace page, with the trace's spans (not Jaeger's placeholder page).
    page.wait_for_selector("text=shop-api", timeout=15_000)
    assert page.locator("script[src*='static/']").count() >= 1
    developer.shot("jaeger-ui-order-trace.png")


def test_frozen_mes_shows_on_the_now_page_without_a_reload(
    console: Monitored, developer: Person
) -> None:
    page = developer.open("/")
    page.evaluate("window.__loupe_same_page = true")
    console.stack.signal_process("mes", signal.SIGSTOP)
    try:
        order_id = console.place_order()
        placed = time.monotonic()
        place = page.locator(f'[data-place="{STUCK_AT_MES}"]')
        place.wait_for(timeout=(SUBMITTED_SLO + FROZEN_DETECTION) * 1000)
        took = time.monotonic() - placed
        assert took <= SUBMITTED_SLO + FROZEN_DETECTION
        assert page.evaluate("window.__loupe_same_page") is True, "found without a reload"
        assert "mes.order-submitted" in place.inner_text()
        assert "consumer(s)" in place.inner_text()
        developer.keep()
        developer.shot("console-now.png")
        console.frozen_order = order_id

        # One click to an order stuck there, one more to its trace in Jaeger UI.
        with page.expect_navigation(url=re.compile(r".*/orders/[^/]+$")):
            place.locator("a[href^='/orders/']").first.click()
        developer.keep()
        assert page.locator(".banner.problem .badge.stuck").count() == 1
        with page.expect_navigation(url=re.compile(r".*/jaeger/trace/[0-9a-f]{32}\?uiFind=")):
            page.locator("tr[data-move='SUBMITTED'] a[href^='/jaeger/trace/']").click()
        page.wait_for_selector("text=shop-api", timeout=15_000)
    finally:
        console.stack.signal_process("mes", signal.SIGCONT)

    # Resumed: the place empties by itself.
    page = developer.open("/")
    page.locator(f'[data-place="{STUCK_AT_MES}"]').wait_for(state="detached", timeout=90_000)


def test_now_says_when_the_monitor_cannot_be_reached(console: Monitored, developer: Person) -> None:
    page = developer.open("/")
    page.evaluate("window.__loupe_same_page = true")
    console.stack.stop_process("monitor")
    try:
        banner = page.locator("#now-status .banner.problem")
        banner.wait_for(timeout=5_000)
        assert "monitor" in banner.inner_text()
        assert "out of date" in page.locator("#now-status").inner_text().lower()
        assert "stale" in (page.get_attribute("#now-panel", "class") or "")
        developer.keep()
    finally:
        console.stack.start_process("monitor")
    # Back: the page says nothing more and shows current data, still without a reload.
    page.locator("#now-status .banner").first.wait_for(state="detached", timeout=30_000)
    assert "stale" not in (page.get_attribute("#now-panel", "class") or "")
    assert page.evaluate("window.__loupe_same_page") is True


def test_pages_fit_a_phone(console: Monitored, developer: Person) -> None:
    order_id = console.query("SELECT order_id FROM orders WHERE status = 'CLOSED' LIMIT 1")[0][
        "order_id"
    ]
    developer.page.set_viewport_size({"width": 390, "height": 844})
    try:
        for path in ("/", f"/orders/{order_id}", "/incidents", "/dead-letters"):
            page = developer.open(path)
            # Wide parts (the waterfall, tables) scroll inside their own box; the page itself
            # never needs sideways scrolling.
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{path} is {width} px wide on a 390 px screen"
            if path.startswith("/orders/"):
                developer.shot("console-order-phone.png")
    finally:
        developer.page.set_viewport_size({"width": 1280, "height": 800})


def test_the_incidents_page_shows_the_resolved_incident(
    console: Monitored, developer: Person
) -> None:
    def resolved() -> bool:
        report = console.cli("incidents", "--status", "resolved")
        return any(i["where"] == "queue mes.order-submitted" for i in report["incidents"])

    wait_for(resolved, 90, "the stuck incident to resolve", every=2)
    page = developer.open("/incidents?window=1h")
    row = page.locator("tr[data-incident]", has_text="queue mes.order-submitted").first
    assert "resolved" in row.inner_text()
    assert page.locator("svg rect.bar").count() >= 1, "the MTTR chart has the resolution"
    # Each time is its median, with its mean and how many incidents it is over.
    for timed in ("detect", "resolve"):
        figures = page.locator(f'[data-figures="{timed}"]').inner_text()
        assert f"median time to {timed}" in figures.lower() and " incident" in figures, figures
    assert page.locator(".uptime .row").count() == 3
    developer.shot("console-incidents.png", full_page=True)


def test_a_poison_message_is_on_the_dead_letters_page(
    console: Monitored, developer: Person
) -> None:
    order_id = str(uuid.uuid4())

    console.publish_poison(order_id)

    def listed() -> bool:
        page = developer.open("/dead-letters")
        return page.locator("tr", has_text=order_id).count() > 0

    wait_for(listed, 60, "the poison message on the dead-letters page", every=2)
    page = developer.page
    row = page.locator("tr", has_text=order_id).first
    assert "poison message" in row.inner_text()
    assert "mes.order-submitted" in page.content()
    developer.shot("console-dead-letters.png")


def test_developers_see_no_actions_and_are_refused(console: Monitored, developer: Person) -> None:
    page = developer.open("/dead-letters")
    assert page.locator("button[data-action]").count() == 0
    incident_id = console.cli("incidents")["incidents"][0]["id"]
    page = developer.open(f"/incidents/{incident_id}")
    assert page.locator("button[data-action]").count() == 0
    token = developer.csrf()
    refused = developer.post(f"/api/incidents/{incident_id}/acknowledge", **{"X-Loupe-Csrf": token})
    assert refused.status == 403 and refused.json()["needs_group"] == ["devops"]
    letters = developer.post(
        "/api/dead-letters/requeue", {"order_id": "x"}, **{"X-Loupe-Csrf": token}
    )
    assert letters.status == 403


def test_devops_act_from_the_console_and_forgeries_are_refused(
    console: Monitored, devops: Person
) -> None:
    # Any incident nobody has taken on yet (the poison message's resolves by itself as soon
    # as orders flow through MES's queue again; acknowledging it is still allowed).
    incident = next(i for i in console.cli("incidents")["incidents"] if not i["acknowledged_by"])
    path = f"/api/incidents/{incident['id']}/acknowledge"
    page = devops.open(f"/incidents/{incident['id']}")
    token = devops.csrf()

    no_token = devops.post(path, Origin=devops.url)
    assert no_token.status == 403 and "anti-forgery" in no_token.json()["detail"]
    elsewhere = devops.post(path, Origin="http://evil.example", **{"X-Loupe-Csrf": token})
    assert elsewhere.status == 403 and "evil.example" in elsewhere.json()["detail"]
    still = console.cli("incidents")["incidents"]
    assert not next(i for i in still if i["id"] == incident["id"])["acknowledged_by"]

    page.click("button[data-action]")
    page.wait_for_selector("text=Taken on by devops@example.com", timeout=10_000)
    devops.keep()

    page = devops.open("/dead-letters")
    buttons = page.locator("button[data-action][data-body*='message_id']")
    assert buttons.count() >= 1
    buttons.first.click()
    page.wait_for_selector(".result:has-text('requeued')", timeout=10_000)

    actions = [
        json.loads(line)
        for line in (Path(console.env["LOUPE_DATA_DIR"]) / "logs" / "actions.jsonl")
        .read_text()
        .splitlines()
    ]
    assert [(a["user"], a["action"]) for a in actions] == [
        ("devops@example.com", "acknowledge incident"),
        ("devops@example.com", "requeue dead letters"),
    ]
    assert actions[1]["outcome"].startswith("1 requeued")
    audited = {
        (e["user"], e["method"], e["uri"], e["status"])
        for e in console.gateway.audit()
        if e["kind"] == "request" and e["method"] == "POST"
    }
    assert ("devops@example.com", "POST", path, 200) in audited
    assert ("devops@example.com", "POST", path, 403) in audited
    # The developer's refused acknowledgement (the test before) is in the audit log too.
    assert any(u == "developer@example.com" and status == 403 for u, _, _, status in audited)


def test_no_page_shows_a_customers_personal_data(console: Monitored) -> None:
    rows = console.query(
        "SELECT customer_name, customer_email, customer_phone, shipping_address FROM orders"
        " WHERE customer_email IS NOT NULL",
        database=console.settings.database_name("shop"),
    )
    assert rows, "the workshop placed orders with customers"
    values = {v for row in rows for v in row.values() if v}
    kinds = {re.sub(r"^https?://[^/]+(/[a-z-]*).*$", r"\1", url) for url, _ in SEEN}
    assert kinds >= {"/", "/orders", "/incidents", "/dead-letters"}, kinds
    for url, html in SEEN:
        leaked = [v for v in values if v in html]
        assert not leaked, f"{url} shows personal data: {leaked[:3]}"
