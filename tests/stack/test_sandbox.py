"""A sandbox: its own ports, vhost and databases beside a developer's `make run`."""

from __future__ import annotations

from pathlib import Path

from loupe.monitor.settings import MonitorSettings
from loupe.stack.sandbox import Sandbox


def test_sandbox_gives_the_monitor_its_own_port(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    env = sandbox.env
    assert env["LOUPE_MONITOR_URL"] == f"http://127.0.0.1:{sandbox.monitor_port}"
    assert env["LOUPE_MONITOR_URL"] == sandbox.monitor_url
    assert "monitor" not in sandbox.settings.service_urls, "the monitor is not a service"
    assert MonitorSettings.from_env(env).database == f"loupe_sandbox_{sandbox.name}_monitor"
