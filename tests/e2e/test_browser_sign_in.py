"""A real browser through the sign-in gateway: Debian's Chromium, headless, driven by Playwright.

Playwright never downloads a browser here; `scripts/setup-infra.sh` installs the `chromium`
package, and the test is skipped when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, sync_playwright

from .conftest import GATEWAY_SERVICES, Gateway

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not Path("/usr/bin/chromium").exists(),
        reason="needs Debian's chromium (scripts/setup-infra.sh installs it)",
    ),
]

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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


def test_developer_signs_in_with_a_browser(
    gateway: Gateway, browser: Browser, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 900, "height": 600})
    try:
        page = context.new_page()
        page.goto(f"{gateway.url}/jaeger/")

        # Not signed in: sent on to Dex's password form.
        dex = urlsplit(gateway.settings.dex_issuer)
        at = urlsplit(page.url)
        assert (at.hostname, at.port) == (dex.hostname, dex.port), page.url
        assert at.path.startswith("/dex/auth/local/login"), page.url
        page.fill("input[name=login]", "developer@example.com")
        page.fill("input[name=password]", gateway.password)
        page.screenshot(path=str(tmp_path / "sign-in-form.png"))
        with page.expect_navigation(url=f"{gateway.url}/jaeger/"):
            page.click("button[type=submit]")

        # Back on the gateway, at the page first asked for; now Jaeger's API answers too.
        assert page.url == f"{gateway.url}/jaeger/"
        page.goto(f"{gateway.url}/jaeger/api/services")
        # Chromium shows JSON in a <pre> (under its own "Pretty-print" bar).
        listed = json.loads(page.inner_text("pre"))
        assert set(GATEWAY_SERVICES) <= set(listed["data"])
        page.screenshot(path=str(tmp_path / "signed-in.png"))
        assert (tmp_path / "signed-in.png").stat().st_size > 0

        cookies = {c["name"]: c for c in context.cookies(gateway.url)}
        session = cookies["_loupe_session"]
        assert session["httpOnly"] is True
        assert session["sameSite"] == "Lax"
    finally:
        context.close()

    entries = gateway.audit()
    assert any(
        e["kind"] == "auth" and e["user"] == "developer@example.com" and e["allowed"] is True
        for e in entries
    )
    # A browser's user agent has nothing the audit format must escape: it reads back as sent.
    agents = {
        e["user_agent"]
        for e in entries
        if e["kind"] == "request"
        and e["user"] == "developer@example.com"
        and e["uri"] == "/jaeger/api/services"
    }
    assert any("Chrome/" in a and "\\" not in a for a in agents), agents
