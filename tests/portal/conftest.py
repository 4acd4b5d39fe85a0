"""The console's browser checks over fakes (test_browser.py) use the e2e tests' headless
Chromium."""

from tests.e2e.browser_support import browser  # noqa: F401
