"""The portal's settings (loupe.portal.settings): documented defaults that find the rest of a
local stack, each variable's blank value meaning its default, and what it shares with the
monitor. Overrides are in tests/portal/test_console.py and tests/test_access.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loupe.monitor.settings import MonitorSettings
from loupe.portal.settings import PortalSettings


def test_defaults_find_a_local_stack() -> None:
    settings = PortalSettings.from_env({})
    assert (settings.url, settings.host, settings.port) == (
        "http://127.0.0.1:8090",
        "127.0.0.1",
        8090,
    )
    # Without configuration the console reads the monitor where the monitor listens.
    assert settings.monitor_url == MonitorSettings().url
    assert settings.jaeger_query_url == "http://127.0.0.1:16686/jaeger"
    assert settings.antiforgery_key == "", "empty: the console makes a key at each start"
    assert settings.actions_log == Path(".data/logs/actions.jsonl")


@pytest.mark.parametrize("name", [v.name for v in PortalSettings.variables()])
def test_a_blank_variable_means_its_default(name: str) -> None:
    assert PortalSettings.from_env({name: "  "}) == PortalSettings()


def test_one_monitor_url_is_where_the_monitor_listens_and_the_portal_reads() -> None:
    environ = {"LOUPE_MONITOR_URL": "http://127.0.0.1:9191/"}
    assert PortalSettings.from_env(environ).monitor_url == MonitorSettings.from_env(environ).url


def test_the_management_api_is_asked_with_the_callers_timeout() -> None:
    settings = PortalSettings.from_env({"LOUPE_PORTAL_URL": "http://0.0.0.0"})
    assert settings.port == 8090, "a URL without a port keeps the portal's own"
    management = settings.management(timeout=2.5)
    assert (management.url, management.timeout) == (settings.management_url, 2.5)
    assert management.amqp_url == settings.amqp_url


def test_a_bad_shared_value_is_refused_naming_the_variable() -> None:
    with pytest.raises(
        ValueError, match=re.escape("LOUPE_PREFETCH must be a whole number, got 'many'")
    ):
        PortalSettings.from_env({"LOUPE_PREFETCH": "many"})
