"""The console's incidents and order pages in a real browser (Debian's headless Chromium,
tests/e2e/browser_support.py), served by uvicorn over the monitor and Jaeger fakes of
tests/support/console_fakes.py: what a person sees of the figures and of the statuses an order
passed unseen. The same pages on the whole stack are in tests/e2e/test_console.py.

Screenshots land in the test's temporary folder (`pytest --basetemp=DIR` keeps them)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, Page

from loupe.access import AccessSettings
from loupe.config import Settings
from loupe.portal.app import create_app
from loupe.portal.settings import PortalSettings
from loupe.stack.process import free_port
from tests.e2e.browser_support import needs_chromium
from tests.support.console_fakes import (
    JAEGER,
    MONITOR,
    FakeBackends,
    incident,
    order_with_lost_moves,
)
from tests.support.oidc import CLIENT, ISSUER, FakeProvider, token

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def backends() -> FakeBackends:
    now = datetime.now(UTC)
    fake = FakeBackends()
    # Three incidents detected in 12 s and resolved in a minute or so, and a forged test order
    # found after 10 min and resolved after 50.
    fake.incidents = [
        incident(1, now - timedelta(hours=2), resolved_after=60.0),
        incident(2, now - timedelta(hours=3), resolved_after=75.0),
        incident(3, now - timedelta(hours=5), resolved_after=90.0),
        incident(4, now - timedelta(hours=4), resolved_after=3000.0, time_to_detect_seconds=600.0),
    ]
    journey, traces = order_with_lost_moves("order-gap", now - timedelta(minutes=9))
    fake.journeys["order-gap"], fake.traces["order-gap"] = journey, traces
    return fake


@pytest.fixture(scope="module")
def portal(backends: FakeBackends, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The portal on a loopback port, in a thread of this process."""
    settings = PortalSettings(
        monitor_url=MONITOR,
        jaeger_query_url=JAEGER,
        access=AccessSettings(issuer=ISSUER, client_id=CLIENT),
        base=Settings(
            data_dir=tmp_path_factory.mktemp("portal"), management_url="http://127.0.0.1:9"
        ),
    )
    app = create_app(
        settings, FakeProvider().verifier(), transport=httpx.MockTransport(backends.handler)
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the portal did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A developer's page: the ID token the gateway would pass on, on every request."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 800},
        extra_http_headers={"Authorization": f"Bearer {token(groups=['developers'])}"},
    )
    try:
        yield context.new_page()
    finally:
        context.close()


def test_the_incidents_page_shows_each_median_over_its_mean_and_count(
    portal: str, page: Page, tmp_path: Path
) -> None:
    response = page.goto(f"{portal}/incidents?window=24h")
    assert response is not None and response.status == 200
    detect = page.locator('[data-figures="detect"]')
    resolve = page.locator('[data-figures="resolve"]')
    assert detect.locator(".n").inner_text() == "12 s"
    assert detect.locator(".small").inner_text() == "mean 3 min · over 4 incidents"
    # The median, (75 + 90) / 2 s; the mean, 806 s, is pulled up by the forged order.
    assert resolve.locator(".n").inner_text() == "82 s"
    assert resolve.locator(".small").inner_text() == "mean 13 min · over 4 incidents"
    # The resolutions fall in different hours: a bar each, with its mean's mark.
    assert page.locator("svg rect.bar").count() == 4
    assert page.locator("svg line.mean").count() == 4
    assert detect.is_visible() and resolve.is_visible()
    page.screenshot(path=str(tmp_path / "incidents.png"), full_page=True)


def test_the_order_page_shows_the_statuses_passed_unseen(
    portal: str, page: Page, tmp_path: Path
) -> None:
    response = page.goto(f"{portal}/orders/order-gap")
    assert response is not None and response.status == 200
    shown = page.locator("tr[data-move], tr[data-not-seen]")
    assert [
        (shown.nth(i).get_attribute("data-move"), shown.nth(i).get_attribute("data-not-seen"))
        for i in range(shown.count())
    ] == [
        ("SUBMITTED", None),
        (None, "PRICE_CALCULATED"),
        (None, "MANUFACTURING_APPROVED"),
        ("MANUFACTURING_STARTED", None),
        ("MANUFACTURING_COMPLETED", None),
        ("SHIPPED", None),
        ("CLOSED", None),
    ]
    unseen = page.locator("tr[data-not-seen]")
    assert all(unseen.nth(i).is_visible() for i in range(2))
    assert unseen.first.inner_text().startswith("? → PRICE_CALCULATED\tnot seen the order passed")
    page.screenshot(path=str(tmp_path / "order.png"), full_page=True)


def test_on_a_phone_each_move_of_the_journey_fits_the_screen(
    portal: str, page: Page, tmp_path: Path
) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    response = page.goto(f"{portal}/orders/order-gap")
    assert response is not None and response.status == 200
    moves = page.locator("tr[data-move]")
    assert moves.count() == 5
    for i in range(moves.count()):
        # Every cell of a move, its Jaeger link last, inside the screen: nothing to scroll to.
        for cell in moves.nth(i).locator("td").all():
            if cell.is_visible():
                box = cell.bounding_box()
                assert box is not None and box["x"] + box["width"] <= 390, cell.inner_text()
    # Labelled where the hidden header no longer says what the figure is.
    after = moves.nth(1).locator("td[data-label]")
    assert after.evaluate("cell => getComputedStyle(cell, '::before').content") == '"after "'

    page.screenshot(path=str(tmp_path / "order-phone.png"), full_page=True)
