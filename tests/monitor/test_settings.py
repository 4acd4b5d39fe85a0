"""The monitor's settings (loupe.monitor.settings): documented defaults, each variable's blank
value meaning its default, overrides and refused values. The URL, tick, webhook and shared
settings' parsing is in tests/test_config.py and tests/test_environment.py."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from loupe.monitor.settings import (
    DEFAULT_MONITOR_URL,
    DEMO_SLO_FILE,
    MONITOR_OTLP_ENDPOINT,
    PROBE_SECONDS,
    RETENTION_HOURS,
    STUCK_HORIZON_HOURS,
    MonitorSettings,
)


def test_defaults_run_the_demo_on_this_machine() -> None:
    settings = MonitorSettings.from_env({})
    assert settings == MonitorSettings()
    assert (settings.url, settings.host, settings.port) == (DEFAULT_MONITOR_URL, "127.0.0.1", 8091)
    assert settings.slo_file == DEMO_SLO_FILE and DEMO_SLO_FILE.is_file()
    assert (settings.tick_seconds, settings.probe_seconds) == (0.5, 5.0)
    assert settings.retention_hours == 24 * 7
    assert settings.stuck_horizon == timedelta(hours=24)
    assert settings.webhook_urls == ()
    assert settings.database == "loupe_monitor"
    # Jaeger's monitor pipeline sends to where the monitor listens unless told otherwise.
    assert MONITOR_OTLP_ENDPOINT.read({}) == settings.url


@pytest.mark.parametrize("name", [v.name for v in MonitorSettings.variables()])
def test_a_blank_variable_means_its_default(name: str) -> None:
    assert MonitorSettings.from_env({name: " \t"}) == MonitorSettings()


def test_overrides(tmp_path: Path) -> None:
    slo_file = tmp_path / "slo.toml"
    settings = MonitorSettings.from_env(
        {
            "LOUPE_MONITOR_URL": "http://0.0.0.0",
            "LOUPE_MONITOR_SLO_FILE": f" {slo_file} ",
            "LOUPE_MONITOR_RETENTION_HOURS": "1.5",
            "LOUPE_MONITOR_STUCK_HORIZON_HOURS": "72",
            "LOUPE_DATABASE_PREFIX": "staging",
        }
    )
    # A URL without a port listens on the monitor's own port, not HTTP's 80.
    assert (settings.host, settings.port) == ("0.0.0.0", 8091)
    assert settings.slo_file == slo_file
    assert settings.retention_hours == 1.5
    assert settings.stuck_horizon == timedelta(days=3)
    assert settings.database == "staging_monitor"


@pytest.mark.parametrize(
    "name", [PROBE_SECONDS.name, RETENTION_HOURS.name, STUCK_HORIZON_HOURS.name]
)
@pytest.mark.parametrize(("value", "wanted"), [("a week", "a number"), ("0", "above 0")])
def test_a_bad_interval_names_the_variable_and_quotes_the_value(
    name: str, value: str, wanted: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{name} must be {wanted}, got {value!r}")):
        MonitorSettings.from_env({name: value})
