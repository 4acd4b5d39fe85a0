"""The monitor's settings, read from the environment; each has a documented default."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from loupe.access import AccessSettings
from loupe.config import REPO_ROOT, Settings, env, env_float
from loupe.messaging.management import DEFAULT_MANAGEMENT_URL, Management

DEFAULT_MONITOR_URL = "http://127.0.0.1:8091"
DEMO_SLO_FILE = REPO_ROOT / "deploy" / "monitor" / "slo-demo.toml"
PRODUCTION_SLO_FILE = REPO_ROOT / "deploy" / "monitor" / "slo-production.toml"
# Where the gateway sends /monitor/...: the API lives under it, OTLP intake does not.
API_PREFIX = "/monitor"


@dataclass(frozen=True)
class MonitorSettings:
    """LOUPE_MONITOR_URL (where it listens: OTLP at /v1/traces, the API under /monitor/api),
    LOUPE_MONITOR_SLO_FILE, LOUPE_MONITOR_TICK_SECONDS (how often detection runs),
    LOUPE_MONITOR_PROBE_SECONDS (how often the services' /healthz is probed),
    LOUPE_MONITOR_RETENTION_HOURS (how long settled orders and samples are kept),
    LOUPE_MONITOR_WEBHOOK_URLS (comma-separated; incident alerts are POSTed there),
    LOUPE_RABBITMQ_MANAGEMENT_URL; plus the shared LOUPE_* settings (database, broker,
    service URLs) and the access settings (who may read and act)."""

    url: str = DEFAULT_MONITOR_URL
    slo_file: Path = DEMO_SLO_FILE
    tick_seconds: float = 0.5
    probe_seconds: float = 5.0
    retention_hours: float = 24.0 * 7
    webhook_urls: tuple[str, ...] = ()
    management_url: str = DEFAULT_MANAGEMENT_URL
    base: Settings = field(default_factory=Settings)
    access: AccessSettings = field(default_factory=AccessSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> MonitorSettings:
        def positive(name: str, default: float) -> float:
            return env_float(name, default, environ, above_zero=True)

        management_url = env("LOUPE_RABBITMQ_MANAGEMENT_URL", cls.management_url, environ)
        webhooks = tuple(
            u.strip() for u in environ.get("LOUPE_MONITOR_WEBHOOK_URLS", "").split(",") if u.strip()
        )
        return cls(
            url=env("LOUPE_MONITOR_URL", cls.url, environ).rstrip("/"),
            slo_file=Path(env("LOUPE_MONITOR_SLO_FILE", str(DEMO_SLO_FILE), environ)),
            tick_seconds=positive("LOUPE_MONITOR_TICK_SECONDS", cls.tick_seconds),
            probe_seconds=positive("LOUPE_MONITOR_PROBE_SECONDS", cls.probe_seconds),
            retention_hours=positive("LOUPE_MONITOR_RETENTION_HOURS", cls.retention_hours),
            webhook_urls=webhooks,
            management_url=management_url.rstrip("/"),
            base=Settings.from_env(environ),
            access=AccessSettings.from_env(environ),
        )

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 8091

    @property
    def database(self) -> str:
        return self.base.database_name("monitor")

    @property
    def management(self) -> Management:
        return Management(self.management_url, self.base.amqp_url)
