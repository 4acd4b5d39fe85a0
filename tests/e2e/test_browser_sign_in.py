"""A real browser signs in through the gateway: Debian's Chromium, headless, driven by
Playwright (tests/e2e/browser_support.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from .browser_support import needs_chromium, sign_in_with_browser
from .gateway_support import GATEWAY_SERVICES, Gateway

pytestmark = [pytest.mark.e2e, needs_chromium]


def test_developer_signs_in_with_a_browser(
    gateway: Gateway, browser: Browser, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 900, "height": 600})
    try:
        page = context.new_page()
        # Not signed in: sent on to Dex's password form, filled in and sent.
        landed = sign_in_with_browser(
            page,
            gateway,
            "developer@example.com",
            "/jaeger/",
            form_screenshot=tmp_path / "sign-in-form.png",
        )
        assert (tmp_path / "sign-in-form.png").stat().st_size > 0

        # Back on the gateway, at the page first asked for (Jaeger UI's script may move the
        # address on to /jaeger/search at once, so the gateway's answer is what is checked);
        # now Jaeger's API answers too.
        assert landed.url == f"{gateway.url}/jaeger/"
        assert landed.status == 200
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
