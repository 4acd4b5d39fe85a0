"""A real browser for the end-to-end tests: Debian's Chromium, headless, driven by Playwright.

Playwright never downloads a browser here; `scripts/setup-infra.sh` installs the `chromium`
package, and the browser tests are skipped (`needs_chromium`) when /usr/bin/chromium is
missing. The `browser` fixture is here, for tests/e2e/conftest.py to offer every e2e module
and for the console's browser checks over fakes (tests/portal/test_browser.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Response, sync_playwright

if TYPE_CHECKING:
    from .gateway_support import Gateway

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Loopback only: a proxy from the environment must not see the sign-in.
    "--no-proxy-server",
]

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="needs Debian's chromium (scripts/setup-infra.sh installs it)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium; a test module using it is marked `needs_chromium`."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


def sign_in_with_browser(
    page: Page, gateway: Gateway, email: str, path: str, *, form_screenshot: Path | None = None
) -> Response:
    """Opens `path` through the gateway, signs in on Dex's password form as `email` and comes
    back to `path`; `form_screenshot` keeps the filled form.

    Returns the gateway's answer at `path`: where the browser landed, whatever a page's own
    script does with the address afterwards (Jaeger UI turns /jaeger/ into /jaeger/search).
    """
    page.goto(f"{gateway.url}{path}")

    # Not signed in: sent on to Dex's password form.
    dex = urlsplit(gateway.settings.dex_issuer)
    at = urlsplit(page.url)
    assert (at.hostname, at.port) == (dex.hostname, dex.port), page.url
    assert at.path.startswith("/dex/auth/local/login"), page.url
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", gateway.password)
    if form_screenshot is not None:
        page.screenshot(path=str(form_screenshot))
    with page.expect_navigation(url=f"{gateway.url}{path}") as navigation:
        page.click("button[type=submit]")
    landed = navigation.value
    assert landed is not None, "the sign-in ended without loading a page"
    assert landed.url == f"{gateway.url}{path}", landed.url
    assert landed.status == 200, landed.status
    return landed
